"""SearchService without Ray: rerank ordering, the deadline, and what the response says."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from ranking.rerank import RerankStage
from search.documents import Document, StoredRecord
from search.schema import IndexSchema
from search.service import RequestError, SearchConfig, SearchRequest, SearchService
from search.stores.embedded import EmbeddedStore


@pytest.fixture
def store(tmp_path: Path) -> EmbeddedStore:
    s = EmbeddedStore(tmp_path)
    v = s.create_version("docs", 2, IndexSchema(fields={"lang": "keyword"}))
    recs = [
        StoredRecord(
            doc=Document(
                id=f"d{i}", title=f"Doc {i}", body=f"python tips number {i} " + "filler " * i, fields={"lang": "en"}
            ),
            vectors=[[float(np.cos(i)), float(np.sin(i))]],
        )
        for i in range(30)
    ]
    s.upsert(v, recs)
    s.mark_complete(v)
    s.switch_alias("docs", v)
    return s


async def encode(q: str) -> list[float]:
    return [1.0, 0.0]


async def by_id_desc(q: str, texts: list[str]) -> list[float]:
    # Scores the document number: "Doc 29" highest.
    return [float(t.split("\n")[0].split()[-1]) for t in texts]


def run(svc: SearchService, **kw: object) -> object:
    return asyncio.run(svc.search(SearchRequest(**kw)))  # type: ignore[arg-type]


def test_rerank_reorders_head_only(store: EmbeddedStore) -> None:
    svc = SearchService(store, encode, RerankStage(by_id_desc, top_n=5), SearchConfig())
    plain = run(svc, query="python tips", limit=10, rerank=False)
    reranked = run(svc, query="python tips", limit=10)
    head = [r.id for r in plain.results[:5]]  # type: ignore[attr-defined]
    assert [r.id for r in reranked.results[:5]] == sorted(head, key=lambda d: -int(d[1:]))  # type: ignore[attr-defined]
    assert [r.id for r in reranked.results[5:]] == [r.id for r in plain.results[5:]]  # type: ignore[attr-defined]
    assert reranked.reranked and reranked.results[5].explanation.rerank_score is None  # type: ignore[attr-defined]


def test_deadline_with_slow_reranker(store: EmbeddedStore) -> None:
    async def slow(q: str, texts: list[str]) -> list[float]:
        await asyncio.sleep(2)
        return [0.0] * len(texts)

    svc = SearchService(store, encode, RerankStage(slow, deadline_ms=50), SearchConfig())
    resp = run(svc, query="python tips", limit=5)
    plain = run(svc, query="python tips", limit=5, rerank=False)
    assert resp.reranked is False and "50 ms deadline" in resp.rerank_note  # type: ignore[attr-defined]
    assert [r.id for r in resp.results] == [r.id for r in plain.results]  # type: ignore[attr-defined]
    assert resp.took_ms < 1500  # type: ignore[attr-defined]


def test_no_reranker_and_no_encoder(store: EmbeddedStore) -> None:
    svc = SearchService(store, None, None)
    resp = run(svc, query="python tips", limit=3)
    assert resp.stages == ["bm25"] and resp.rerank_note == "no reranker configured"  # type: ignore[attr-defined]


def test_unknown_filter_is_request_error(store: EmbeddedStore) -> None:
    svc = SearchService(store, encode, None)
    with pytest.raises(RequestError, match="unknown filter field 'size'"):
        run(svc, query="x", filters=[{"type": "term", "field": "size", "value": 1}])
