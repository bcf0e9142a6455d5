"""SciFact (5,183 real documents) into Elasticsearch and the embedded store: the two agree."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from indexing.pipeline import IndexingConfig, IndexingPipeline
from models.embedder import CachedEmbedder, EmbeddingCache
from search.stores.elasticsearch import ElasticsearchStore
from search.stores.embedded import EmbeddedStore
from tests.conftest import DATASETS

SCIFACT = DATASETS / "scifact"
pytestmark = [pytest.mark.slow, pytest.mark.es]


@pytest.fixture(scope="module")
def both(tmp_path_factory: pytest.TempPathFactory, tiny_embedder, es_url: str) -> Iterator[tuple]:  # type: ignore[no-untyped-def,type-arg]
    if not SCIFACT.is_dir():
        pytest.fail(f"SciFact is missing at {SCIFACT}: the shared datasets must sit beside the checkout")
    tmp = tmp_path_factory.mktemp("scifact")
    name = "scifact-contract"
    cached = CachedEmbedder(tiny_embedder, EmbeddingCache(tmp / "emb.sqlite"))
    cfg = IndexingConfig(dead_letter_dir=tmp / "dead", progress=False, batch_size=256)
    es = ElasticsearchStore(es_url)
    emb = EmbeddedStore(tmp / "indices")
    reports = [IndexingPipeline(s, cached, cfg).build(SCIFACT, name) for s in (es, emb)]
    yield name, es, emb, reports
    es.client.indices.delete(index=f"{name}-v*", ignore_unavailable=True, allow_no_indices=True)
    es.close()
    emb.close()


def test_equal_counts(both) -> None:  # type: ignore[no-untyped-def]
    name, es, emb, reports = both
    assert [r.read for r in reports] == [5183, 5183]
    assert [r.indexed for r in reports] == [5183, 5183]
    assert es.count(name) == emb.count(name) == 5183
    # The second store reused every vector of the first through the cache.
    assert reports[1].encoded == 0


def test_bm25_top10_overlap(both) -> None:  # type: ignore[no-untyped-def]
    name, es, emb, _ = both
    queries = [json.loads(x)["text"] for x in (SCIFACT / "queries.jsonl").read_text().splitlines()[:20]]
    overlaps = []
    for q in queries:
        a = {h.id for h in es.bm25_search(name, q, 10)}
        b = {h.id for h in emb.bm25_search(name, q, 10)}
        overlaps.append(len(a & b) / 10)
    mean = sum(overlaps) / len(overlaps)
    print(f"BM25 top-10 overlap Elasticsearch vs embedded over 20 queries: {mean:.3f}")
    assert mean >= 0.70


def test_knn_own_vector_first(both, tiny_embedder) -> None:  # type: ignore[no-untyped-def]
    name, es, emb, _ = both
    from indexing.chunking import chunk_document

    for doc_id in ["4983", "5836", "7912"]:
        doc = emb.get(name, doc_id)
        assert doc is not None
        chunk = chunk_document(doc, tiny_embedder.tokenizer, tiny_embedder.max_tokens - 2, 32)[0]
        vec = tiny_embedder.embed([chunk.text])[0].tolist()
        assert es.knn_search(name, vec, 5)[0].id == doc_id
        assert emb.knn_search(name, vec, 5)[0].id == doc_id
