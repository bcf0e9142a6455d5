"""Input bounds and error mapping over HTTP (the in-process app on an embedded-store index): index names, filter
values that overflow, huge terms lists, the index allow-list; server faults are 5xx with a request id and no
exception text; Elasticsearch's 429 / 5xx answers (the client's real exception types) become 503 + Retry-After."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from elastic_transport import ApiResponseMeta, HttpHeaders, NodeConfig
from elasticsearch import ApiError, ConflictError
from fastapi.testclient import TestClient

from indexing.pipeline import IndexingConfig, IndexingPipeline
from search.schema import IndexSchema
from search.stores.base import StoreUnavailable
from search.stores.elasticsearch import _es_guard
from search.stores.embedded import EmbeddedStore

INDEX = "err-docs"
SECRET = "vector dimension 384 != 768 at /srv/models/secret"


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, TestClient]]:
    from search.settings import Settings
    from serving.api import create_api
    from serving.config import AppConfig
    from serving.local import local_backend

    tmp = tmp_path_factory.mktemp("input-errors")
    docs = tmp / "docs.jsonl"
    docs.write_text(
        "".join(json.dumps({"id": f"d{i}", "title": "Sleep", "text": "x", "year": 1990 + i}) + "\n" for i in range(5))
    )
    cfg = IndexingConfig(
        embed=False, schema=IndexSchema(fields={"year": "long"}), dead_letter_dir=tmp / "dead", progress=False
    )
    for name in (INDEX, "hidden"):
        IndexingPipeline(EmbeddedStore(tmp / "data" / "indices"), None, cfg).build(docs, name)
    config = AppConfig.model_validate(
        {
            "data_dir": str(tmp / "data"),
            "search": {"default_index": INDEX, "retrieval": {"mode": "bm25"}},
            "reranker": {"model": None},
            "suggest": {"lm": {"enabled": False}, "prefetch_top": 0},
            "summarizer": None,
            "security": {"indices": [INDEX]},
        }
    )
    backend = local_backend(config, Settings())
    with TestClient(create_api(backend, backend.metrics), raise_server_exceptions=False) as client:
        yield backend, client
    backend.suggest.close()
    backend.store.close()


def _search(client: TestClient, **body: Any) -> Any:
    return client.post("/v1/search", json={"query": "sleep", **body})


def test_index_names_that_are_no_single_index_get_422(app: tuple[Any, TestClient]) -> None:
    _, client = app
    for bad in [".", "..", "../err-docs", "a/b", "*", "err-*", "a,b", "_all", "-x", "Docs", "x" * 200]:
        r = _search(client, index=bad)
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "index"], (bad, r.text)
        r = client.post("/v1/summarize", json={"search": {"query": "q", "index": bad}})
        assert r.status_code == 422, (bad, r.text)
    assert _search(client, index=INDEX).status_code == 200
    r = _search(client, index="hidden")  # exists, but not in security.indices
    assert r.status_code == 404 and "hidden" in r.json()["detail"]


def test_overflowing_filter_values_and_huge_terms_lists_get_422(app: tuple[Any, TestClient]) -> None:
    _, client = app
    for raw in [
        b'{"query":"sleep","filters":[{"type":"range","field":"year","gte":1e999}]}',
        b'{"query":"sleep","filters":[{"type":"range","field":"year","lt":-1e999}]}',
        b'{"query":"sleep","filters":[{"type":"term","field":"year","value":%d}]}' % 2**70,
        b'{"query":"sleep","filters":[{"type":"terms","field":"year","values":[1,%d]}]}' % -(2**64),
    ]:
        r = client.post("/v1/search", content=raw, headers={"content-type": "application/json"})
        assert r.status_code == 422, (raw, r.text)
    r = _search(client, filters=[{"type": "terms", "field": "year", "values": list(range(5000))}])
    assert r.status_code == 422
    for f, key in [
        ({"type": "term", "field": "year", "value": "abc"}, "value"),
        ({"type": "term", "field": "year", "value": True}, "value"),
        ({"type": "range", "field": "year", "gte": 1990, "lt": "soon"}, "lt"),
        ({"type": "terms", "field": "year", "values": [1990, "x"]}, "values"),
        ({"type": "range", "field": "published_at", "gte": "not a date"}, "gte"),
    ]:  # values their fields cannot hold: the client's error, named
        r = _search(client, filters=[f])
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "filters", 0, key], (f, r.text)
    r = client.post(
        "/v1/summarize", json={"search": {"query": "q", "filters": [{"type": "term", "field": "year", "value": "x"}]}}
    )
    assert r.status_code == 422 and r.json()["detail"][0]["loc"][:3] == ["body", "search", "filters"]
    r = _search(client, filters=[{"type": "range", "field": "year", "gte": 1992, "lt": 2**62}])
    assert r.status_code == 200 and {h["id"] for h in r.json()["results"]} == {"d2", "d3", "d4"}


def test_server_faults_are_5xx_with_a_request_id_and_no_internals(
    app: tuple[Any, TestClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    backend, client = app

    async def broken(*_: Any, **__: Any) -> Any:
        raise ValueError(SECRET)

    monkeypatch.setattr(backend.service, "search", broken)
    r = _search(client)
    assert r.status_code == 500 and SECRET not in r.text and "384" not in r.text
    assert r.json()["request_id"] == r.headers["x-request-id"]
    r = client.post("/v1/search", json={"query": "s"}, headers={"X-Request-ID": "abc-1"})
    assert r.headers["x-request-id"] == "abc-1" and r.json()["request_id"] == "abc-1"

    async def overloaded(*_: Any, **__: Any) -> Any:
        return _es_guard(lambda: _raise(_api_error(429)))

    monkeypatch.setattr(backend.service, "search", overloaded)
    r = _search(client)
    assert r.status_code == 503 and r.headers["retry-after"] == "5"
    assert "circuit" not in r.text and "request_id" in r.json()


def _api_error(status: int) -> ApiError:
    meta = ApiResponseMeta(
        status=status, http_version="1.1", headers=HttpHeaders(), duration=0.01, node=NodeConfig("http", "es", 9200)
    )
    body = {"error": {"type": "circuit_breaking_exception", "reason": "[parent] Data too large"}, "status": status}
    cls = ConflictError if status == 409 else ApiError
    return cls("circuit_breaking_exception", meta, body)


def _raise(exc: Exception) -> Any:
    raise exc


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
def test_es_overload_and_server_errors_map_to_store_unavailable(status: int) -> None:
    with pytest.raises(StoreUnavailable, match=str(status)):
        _es_guard(lambda: _raise(_api_error(status)))


def test_other_es_client_errors_are_not_retryable() -> None:
    with pytest.raises(ConflictError):
        _es_guard(lambda: _raise(_api_error(409)))


def test_a_search_past_its_deadline_is_503(app: tuple[Any, TestClient], monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    backend, client = app
    assert client.app.state.search_deadline_s == backend.config.search_deadline_s == 10.0  # type: ignore[attr-defined]

    async def stuck(*_: Any, **__: Any) -> Any:
        await asyncio.sleep(30)

    monkeypatch.setattr(backend.service, "search", stuck)
    monkeypatch.setattr(client.app.state, "search_deadline_s", 0.2)  # type: ignore[attr-defined]
    r = _search(client)
    assert r.status_code == 503 and r.headers["retry-after"] == "5" and "deadline" in r.json()["detail"]
