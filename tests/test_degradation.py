"""Graceful degradation over HTTP (the in-process app, tiny encoder and cross-encoder, embedded store): a
reranker that raises keeps the fused order (200, `reranked: false`, a note); an encoder that raises gives BM25
only (200, `retrieval_note`); exception text stays in the server log."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from indexing.pipeline import IndexingConfig, IndexingPipeline
from search.stores.embedded import EmbeddedStore

SECRET = "CUDA error: device-side assert at /srv/replica-7"


@pytest.fixture(scope="module")
def app(
    tmp_path_factory: pytest.TempPathFactory, tiny_embedder: Any, tiny_embedder_path: Any, tiny_reranker_path: Any
) -> Iterator[tuple[Any, TestClient]]:
    from search.settings import Settings
    from serving.api import create_api
    from serving.config import AppConfig
    from serving.local import local_backend

    tmp = tmp_path_factory.mktemp("degradation")
    src = tmp / "docs.jsonl"
    topics = ["sleep and memory", "insulin resistance", "vitamin d and bones", "zebrafish hearts"]
    src.write_text("".join(json.dumps({"id": f"d{i}", "title": t, "text": t * 3}) + "\n" for i, t in enumerate(topics)))
    cfg = IndexingConfig(dead_letter_dir=tmp / "dead", progress=False)
    IndexingPipeline(EmbeddedStore(tmp / "data" / "indices"), tiny_embedder, cfg).build(src, "docs")
    config = AppConfig.model_validate(
        {
            "data_dir": str(tmp / "data"),
            "embedder": {"model": str(tiny_embedder_path), "device": "cpu"},
            "reranker": {"model": str(tiny_reranker_path), "device": "cpu"},
            "suggest": {"enabled": False},
            "summarizer": None,
        }
    )
    backend = local_backend(config, Settings())
    with TestClient(create_api(backend, backend.metrics)) as client:
        yield backend, client
    backend.store.close()


def _search(client: TestClient) -> dict[str, Any]:
    r = client.post("/v1/search", json={"query": "sleep memory", "limit": 4})
    assert r.status_code == 200, r.text
    assert SECRET not in r.text
    return r.json()  # type: ignore[no-any-return]


def test_a_raising_reranker_keeps_the_fused_order(app: tuple[Any, TestClient], monkeypatch: pytest.MonkeyPatch) -> None:
    backend, client = app
    healthy = _search(client)
    assert healthy["reranked"] is True and "rerank" in healthy["stages"]

    async def broken(query: str, texts: list[str]) -> list[float]:
        raise RuntimeError(SECRET)

    monkeypatch.setattr(backend.service.rerank, "score", broken)
    body = _search(client)
    assert body["reranked"] is False and "rerank" not in body["stages"]
    assert body["rerank_note"] == "reranker failed (RuntimeError); fused order kept"
    fused = [r["explanation"]["fused_score"] for r in body["results"]]
    assert len(fused) == len(healthy["results"]) and fused == sorted(fused, reverse=True)  # the fused order
    assert all(r["explanation"]["rerank_score"] is None for r in body["results"])

    async def short(query: str, texts: list[str]) -> list[float]:
        return [1.0]  # one score for many results: a broken replica, not a ranking

    monkeypatch.setattr(backend.service.rerank, "score", short)
    body = _search(client)
    assert body["reranked"] is False and "wrong number" in body["rerank_note"]


def test_a_raising_encoder_gives_bm25_only(app: tuple[Any, TestClient], monkeypatch: pytest.MonkeyPatch) -> None:
    backend, client = app

    async def broken(query: str) -> list[float]:
        raise ConnectionError(SECRET)

    monkeypatch.setattr(backend.service, "encode", broken)
    body = _search(client)
    assert body["results"] and body["results"][0]["id"] == "d0"
    assert "dense" not in body["stages"] and "encode" not in body["stages"] and "bm25" in body["stages"]
    assert body["retrieval_note"] == "query encoder failed (ConnectionError)"
    assert "embedder" not in body["model_versions"]
