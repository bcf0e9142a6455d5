"""Property-based API testing from the OpenAPI schema: no generated request may produce a 5xx; then the probe
inputs that once did (deep JSON, lone surrogates, huge numbers, 1,100 term filters, "NaN" strings) as explicit
regression cases: a 4xx whose body is bounded and echoes nothing, and no user text in the server's log.

The app has an admin API key (every route, quotas included) and every request carries it.

Runs the real FastAPI app in-process (ASGI) over the embedded store with tiny models and a tiny
cross-encoder, so every stage (encode, BM25, kNN, fusion, rerank, highlight) is exercised.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings

from indexing.pipeline import IndexingConfig, IndexingPipeline
from search.schema import IndexSchema
from search.stores.embedded import EmbeddedStore
from serving.security import hash_key

ADMIN_KEY = "sk_schemathesis_admin"


@pytest.fixture(scope="module")
def api_schema(
    tmp_path_factory: pytest.TempPathFactory,
    tiny_embedder: Any,
    tiny_embedder_path: Path,
    tiny_chat_lm_path: Path,
    tiny_reranker_path: Path,
) -> Any:
    """The whole API, /v1/summarize included (a tiny LM, a few tokens: the streams' framing and errors are
    under test, not the text)."""
    from search.settings import Settings
    from serving.api import create_api
    from serving.config import AppConfig
    from serving.local import local_backend

    tmp = tmp_path_factory.mktemp("schemathesis")
    src = tmp / "docs.jsonl"
    src.write_text(
        "\n".join(
            json.dumps(
                {
                    "id": f"d{i}",
                    "title": f"Title {i}",
                    "text": f"body text number {i} öäü <b>x</b>",
                    "lang": ["en", "de"][i % 2],
                    "year": 1990 + i,
                    "rating": i / 10,
                    "published_at": f"20{10 + i % 10}-01-01",
                }
            )
            for i in range(25)
        )
    )
    cfg = IndexingConfig(
        schema=IndexSchema(fields={"lang": "keyword", "year": "long", "rating": "double"}),
        dead_letter_dir=tmp / "dead",
        progress=False,
    )
    IndexingPipeline(EmbeddedStore(tmp / "data" / "indices"), tiny_embedder, cfg).build(src, "docs")
    app_cfg = AppConfig.model_validate(
        {
            "data_dir": str(tmp / "data"),
            "embedder": {"model": str(tiny_embedder_path), "device": "cpu"},
            "reranker": {"model": str(tiny_reranker_path), "device": "cpu"},
            "suggest": {"lm": {"enabled": False}, "prefetch_top": 0},
            "security": {
                "keys": [{"name": "admin", "sha256": hash_key(ADMIN_KEY), "scopes": ["admin"]}],
                # every request from one address and key: summary budgets (a few a minute) would answer 429, and
                # 60 examples of every route are more than the default 600 a minute of one address
                "rate_limits": {
                    "summarize": "1000/minute",
                    "per_client_summarize": "1000/minute",
                    "per_client": "100000/minute",
                    "per_key": "100000/minute",
                },
            },
            "summarizer": {
                "lm": {"model": str(tiny_chat_lm_path), "device": "cpu"},
                "max_new_tokens": 4,
                "cache_sentence_vectors": False,
            },
        }
    )
    backend = local_backend(app_cfg, Settings())
    api = create_api(backend, backend.metrics)
    schema = schemathesis.openapi.from_asgi("/openapi.json", api)
    schema.sift_api = api  # the app itself: its routes are what coverage is checked against
    return schema


OPEN = {"GET /healthz", "GET /readyz"}  # answer without a key (load balancers' probes)


def api_routes(routes: list[Any], prefix: str = "") -> set[tuple[str, str]]:
    """(method, path) of every route in the schema, through included routers (FastAPI wraps them)."""
    from fastapi.routing import APIRoute

    out = set()
    for r in routes:
        if isinstance(r, APIRoute):
            if r.include_in_schema:
                out |= {(m, prefix + r.path) for m in r.methods}
        elif (inner := getattr(r, "original_router", None) or getattr(r, "router", None)) is not None:
            out |= api_routes(inner.routes, prefix + getattr(inner, "prefix", ""))
    return out


def test_no_server_errors(api_schema: Any) -> None:
    """Every operation in the schema, with generated (valid and edge-case) inputs."""
    checked = []
    for result in api_schema.get_all_operations():
        op = result.ok()

        @given(case=op.as_strategy())
        @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def check(case: Any) -> None:
            response = case.call(headers={"X-API-Key": ADMIN_KEY})
            assert response.status_code < 500, (
                f"{case.method} {case.path} {case.body!r} -> {response.status_code} {response.text}"
            )

        check()
        checked.append(f"{op.method.upper()} {op.path}")
        keyless = op.as_strategy().example().call()  # the same operation without the key
        expected = {200, 503} if checked[-1] in OPEN else {401}
        assert keyless.status_code in expected, (checked[-1], keyless.status_code, keyless.text)
    routes = {f"{m} {path}" for m, path in api_routes(api_schema.sift_api.routes)}
    assert len(routes) >= 9 and routes == set(checked), routes ^ set(checked)  # every route, none left out


MARK = "zqxprobe"  # user text: in no response body, no server log line


def _nest(depth: int, leaf: str) -> str:
    return "[" * depth + leaf + "]" * depth


def _search(*filters: str, query: str = "body") -> bytes:
    return ('{"query":"' + query + '","filters":[' + ",".join(filters) + "]}").encode()


def _flt(kind: str, field: str, key: str, value: str) -> str:
    return f'{{"type":"{kind}","field":"{field}","{key}":{value}}}'


PROBES: dict[str, tuple[str, bytes, str]] = {
    "200k-deep JSON on /v1/events": ("/v1/events", ('{"events":' + _nest(200_000, f'"{MARK}"') + "}").encode(), MARK),
    "200k-deep JSON on /v1/search": ("/v1/search", ('{"query":' + _nest(200_000, f'"{MARK}"') + "}").encode(), MARK),
    "200k-deep JSON on /v1/summarize": (
        "/v1/summarize",
        ('{"search":' + _nest(200_000, f'"{MARK}"') + "}").encode(),
        MARK,
    ),
    "500-deep nested filter": ("/v1/search", _search(_flt("term", "year", "value", _nest(500, f'"{MARK}"'))), MARK),
    "lone surrogate in the query": ("/v1/search", f'{{"query":"{MARK} \\ud800"}}'.encode(), MARK),
    "lone surrogate in a summary's query": (
        "/v1/summarize",
        f'{{"search":{{"query":"{MARK} \\udc00 body"}}}}'.encode(),
        MARK,
    ),
    "1e300 on a long": ("/v1/search", _search(_flt("term", "year", "value", "1e300")), "1e300"),
    "30 digits on a long": ("/v1/search", _search(_flt("range", "year", "gte", f'"{"9" * 30}"')), "9" * 30),
    "1e300 on a date": ("/v1/search", _search(_flt("range", "published_at", "lt", "1e300")), "1e300"),
    "30 digits on a date": ("/v1/search", _search(_flt("term", "published_at", "value", f'"{"9" * 30}"')), "9" * 30),
    "1,100 term filters": (
        "/v1/search",
        _search(*[_flt("term", "year", "value", str(1990 + i % 25)) for i in range(1100)]),
        "1990",
    ),
    '"NaN" on a double': ("/v1/search", _search(_flt("term", "rating", "value", '"NaN"')), "NaN"),
    '"inf" on a double': ("/v1/search", _search(_flt("range", "rating", "gte", '"inf"')), "inf"),
    '"-Infinity" on a double': ("/v1/search", _search(_flt("range", "rating", "lt", '"-Infinity"')), "Infinity"),
}


@pytest.mark.parametrize("name", list(PROBES))
def test_probe_inputs_are_bounded_4xx_and_stay_out_of_the_log(
    api_schema: Any, caplog: pytest.LogCaptureFixture, name: str
) -> None:
    path, body, echo = PROBES[name]
    client = TestClient(api_schema.sift_api, raise_server_exceptions=False)
    headers = {"X-API-Key": ADMIN_KEY, "content-type": "application/json"}
    with caplog.at_level(logging.DEBUG):
        r = client.post(path, content=body, headers=headers)
    assert 400 <= r.status_code < 500, (name, r.status_code, r.text[:300])
    if "deep" in name:  # bad input, however deep (FastAPI's own answer to a body it cannot parse is a 400)
        assert r.status_code == 422, (name, r.status_code, r.text[:300])
    assert len(r.content) <= 4096 and echo not in r.text and MARK not in r.text, (name, r.text[:300])
    server = [rec for rec in caplog.records if not rec.name.startswith(("httpx", "httpcore"))]
    assert not [rec for rec in server if MARK in rec.getMessage() or echo in rec.getMessage()], (name, server)
    assert not [rec for rec in server if rec.levelno >= logging.ERROR], (name, server)


def test_the_same_filters_in_bounds_are_served(api_schema: Any) -> None:
    client = TestClient(api_schema.sift_api, raise_server_exceptions=False)
    headers = {"X-API-Key": ADMIN_KEY, "content-type": "application/json"}
    for body in [
        _search(_flt("range", "rating", "gte", "1.5")),
        _search(_flt("range", "rating", "lt", '"0.25"')),
        _search(*[_flt("term", "lang", "value", '"en"')] * 64),
        _search(_flt("range", "published_at", "gte", '"2012-06-01"'), _flt("range", "year", "lt", str(2**63 - 1))),
    ]:
        r = client.post("/v1/search", content=body, headers=headers)
        assert r.status_code == 200 and r.json()["results"], (body[:200], r.status_code, r.text[:300])
