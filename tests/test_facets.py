"""Facets through retrieval: the counts ride on the BM25 call the retriever makes (one Elasticsearch `_msearch`),
follow its mode (hybrid and bm25: the BM25 match set; dense: the dense candidates), and the Python reference
counter agrees with the rules (search/facets.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from search.facets import FacetCollector, FacetParams, FacetQuery, count_values, ordered, resolve
from search.filters import TermFilter
from search.retrieval import HybridRetriever, RetrievalConfig
from search.schema import IndexSchema
from search.stores.base import IndexStore
from search.stores.facet_contract import FACET_DOCS, FACET_SCHEMA

QUERY_VEC = [1.0, 0.0, 0.0, 0.0]  # every FACET_DOCS vector: kNN returns them all


def _build(store: IndexStore, name: str) -> str:
    version = store.create_version(name, 4, FACET_SCHEMA)
    assert store.upsert(version, FACET_DOCS).failures == []
    store.refresh(version)
    store.mark_complete(version)
    store.switch_alias(name, version)
    return name


def _run(store: IndexStore, index: str, mode: str, facets: list[str], **kw: Any) -> FacetCollector:
    collector = FacetCollector(resolve(FACET_SCHEMA, FacetParams(facets=facets)))
    retriever = HybridRetriever(store, None, RetrievalConfig(mode=mode))  # type: ignore[arg-type]
    try:
        retriever.run(index, "alpha", 3, vector=QUERY_VEC if mode != "bm25" else None, facets=collector, **kw)
    finally:
        retriever.close()
    assert collector.counts is not None
    return collector


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[IndexStore]:
    from search.stores.embedded import EmbeddedStore

    s = EmbeddedStore(tmp_path / "data")
    s.warm_up()
    yield s
    s.close()


def test_hybrid_and_bm25_count_the_bm25_match_set(embedded: IndexStore, index_name: str) -> None:
    index = _build(embedded, index_name)
    for mode in ("bm25", "hybrid"):
        counts = _run(embedded, index, mode, ["lang"]).counts
        assert counts is not None and counts.total_hits == 6  # not the 3 shown, not f6 (no "alpha")
        assert counts.facets["lang"] == {"de": 2, "en": 2, "fr": 1, "it": 1}


def test_dense_mode_counts_its_candidates(embedded: IndexStore, index_name: str) -> None:
    index = _build(embedded, index_name)
    counts = _run(embedded, index, "dense", ["lang"]).counts
    assert counts is not None and counts.total_hits == 7  # f6 too: every vector is a candidate
    assert counts.facets["lang"] == {"en": 3, "de": 2, "fr": 1, "it": 1}
    counts = _run(embedded, index, "dense", ["lang"], filters=[TermFilter(field="lang", value="fr")]).counts
    assert counts is not None and counts.total_hits == 1 and counts.facets["lang"] == {"fr": 1}  # not disjunctive


def test_reference_counter_rules() -> None:
    schema = IndexSchema(fields={"tag": "keyword", "n": "long", "ok": "boolean"})
    fq = resolve(
        schema,
        FacetParams.model_validate(
            {"facets": ["tag", "n", "ok"], "facet_ranges": {"n": [{"key": "low", "lt": 5}, {"key": "hi", "gte": 5}]}}
        ),
    )
    rows: list[dict[str, Any]] = [
        {"tag": ["a", "a", "b"], "n": [1, 9], "ok": True},
        {"tag": "b", "n": 5},
        {"ok": False},
    ]
    counts = count_values(rows, [TermFilter(field="tag", value="b")], fq, schema)
    assert counts.total_hits == 2
    assert counts.facets["tag"] == {"b": 2, "a": 1}  # its own filter ignored; "a" once for the first row
    assert counts.facets["n"] == {"hi": 2, "low": 1}  # a row counts in each bucket holding one of its values
    assert counts.facets["ok"] == {"true": 1}
    assert ordered({"b": 1, "a": 1, "c": 2}, 2) == {"c": 2, "a": 1}
    assert count_values([], [], FacetQuery(), schema).total_hits == 0


@pytest.mark.es
def test_elasticsearch_counts_in_one_msearch_beside_the_bm25_search(es_url: str, index_name: str) -> None:
    """One `_msearch` per retrieval with facets: `bm25_search`'s own scored top-k request, and a `size: 0` count
    of the unfiltered match set in filter context (no scoring) with the aggregations; no other search."""
    from search.stores.base import IndexNotFound
    from search.stores.elasticsearch import ElasticsearchStore

    store = ElasticsearchStore(es_url)
    store.warm_up()
    try:
        index = _build(store, index_name)
        calls: list[tuple[str, Any]] = []
        real_search, real_msearch = store.client.search, store.client.msearch

        def search(**kw: Any) -> Any:
            calls.append(("search", kw))
            return real_search(**kw)

        def msearch(**kw: Any) -> Any:
            calls.append(("msearch", kw["searches"]))
            return real_msearch(**kw)

        store.client.search = search  # type: ignore[method-assign]
        store.client.msearch = msearch  # type: ignore[method-assign]
        en = [TermFilter(field="lang", value="en")]
        collector = _run(store, index, "bm25", ["lang", "draft"], filters=en)
        assert [c[0] for c in calls] == ["msearch"]
        head1, top, head2, count = calls[0][1]
        assert head1 == head2 == {"index": index}
        assert top["size"] > 0 and top["track_total_hits"] is False and "aggs" not in top
        assert top["query"]["bool"]["filter"] and "post_filter" not in top  # filtered and scored, as bm25_search
        assert count["size"] == 0 and set(count["query"]) == {"bool"} and set(count["query"]["bool"]) == {"filter"}
        assert "f0" in count["aggs"] and "total" in count["aggs"] and "post_filter" not in count
        counts = collector.counts
        assert counts is not None and counts.total_hits == 2
        assert counts.facets["lang"] == {"de": 2, "en": 2, "fr": 1, "it": 1}
        hits, _ = store.bm25_facet_search(index, "alpha", 3, en, collector.query)
        assert hits == store.bm25_search(index, "alpha", 3, en, with_docs=False)  # the same top k
        with pytest.raises(IndexNotFound):  # a failed part of the msearch raises as a failed search does
            store.bm25_facet_search(f"{index_name}-missing", "alpha", 3, en, collector.query)
    finally:
        store.client.indices.delete(index=f"{index_name}-v*", ignore_unavailable=True, allow_no_indices=True)
        store.close()


def test_synonyms_widen_the_counted_match_set(embedded: IndexStore, index_name: str) -> None:
    """A query that gained a synonym counts the documents matched through it, as its results include them."""
    from search.stores.synonym_stores import synonym_store
    from search.synonyms import SynonymSets

    index = _build(embedded, index_name)
    syn = synonym_store(embedded)
    assert syn is not None
    syn.put(index, SynonymSets.model_validate({"sets": [{"type": "synonym", "synonyms": ["gamma", "beta"]}]}))
    collector = FacetCollector(resolve(FACET_SCHEMA, FacetParams(facets=["lang"])))
    retriever = HybridRetriever(embedded, None, RetrievalConfig(mode="bm25"))
    try:
        hits = retriever.run(index, "gamma", 10, facets=collector, with_docs=False)
    finally:
        retriever.close()
    assert {h.id for h in hits} == {"f1", "f3", "f6"}  # f3 says gamma, f1 and f6 beta
    assert collector.counts is not None and collector.counts.total_hits == 3
    assert collector.counts.facets["lang"] == {"en": 2, "de": 1, "fr": 1}
