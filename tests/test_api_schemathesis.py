"""Property-based API testing from the OpenAPI schema: no generated request may produce a 5xx.

The app has an admin API key (every route, quotas included) and every request carries it.

Runs the real FastAPI app in-process (ASGI) over the embedded store with tiny models and a tiny
cross-encoder, so every stage (encode, BM25, kNN, fusion, rerank, highlight) is exercised.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import schemathesis
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
                    "published_at": f"20{10 + i % 10}-01-01",
                }
            )
            for i in range(25)
        )
    )
    cfg = IndexingConfig(
        schema=IndexSchema(fields={"lang": "keyword", "year": "long"}), dead_letter_dir=tmp / "dead", progress=False
    )
    IndexingPipeline(EmbeddedStore(tmp / "data" / "indices"), tiny_embedder, cfg).build(src, "docs")
    app_cfg = AppConfig.model_validate(
        {
            "data_dir": str(tmp / "data"),
            "embedder": {"model": str(tiny_embedder_path), "device": "cpu"},
            "reranker": {"model": str(tiny_reranker_path), "device": "cpu"},
            "suggest": {"lm": {"enabled": False}, "prefetch_top": 0},
            "security": {"keys": [{"name": "admin", "sha256": hash_key(ADMIN_KEY), "scopes": ["admin"]}]},
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
