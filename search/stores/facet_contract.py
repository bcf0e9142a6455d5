"""The facet behaviour every store must show (mixed into `search.stores.contract.StoreContract`, so it runs for the
embedded store and a real Elasticsearch node alike): the same counts, written out by hand, for the same corpus:
disjunctive counts, range buckets (bounds inclusive below, exclusive above), dates, booleans, multi-valued
keyword fields, the max-values cut-off, filters on other fields, synonym phrases widening the match set; each
also checked against `search.facets.count_values` over the matched documents, and the hits against
`bm25_search`'s. Imports pytest: import it from tests only."""

from __future__ import annotations

from typing import Any

import pytest

from search.documents import Document, StoredRecord
from search.facets import FacetCounts, FacetParams, FacetQuery, FacetStore, count_values, resolve
from search.filters import Filter, RangeFilter, TermFilter, TermsFilter
from search.schema import IndexSchema
from search.stores.base import IndexStore
from search.stores.embedded_sql import filter_values
from search.text import bm25_terms

FACET_SCHEMA = IndexSchema(fields={"lang": "keyword", "year": "long", "score": "double", "draft": "boolean"})
RANGES: dict[str, Any] = {
    "year": [{"key": "old", "lt": 2000}, {"key": "mid", "gte": 2000, "lt": 2005}, {"key": "new", "gte": 2005}],
    "score": [{"key": "low", "lt": 1.0}, {"key": "high", "gte": 1.0}],
    "published_at": [{"key": "before-2020", "lt": "2020-01-01"}, {"key": "2020-on", "gte": "2020-01-01T00:00:00Z"}],
}
ALL = ["lang", "draft", "year", "score", "published_at"]


def _doc(doc_id: str, body: str, published: str | None = None, **fields: Any) -> StoredRecord:
    doc = Document(id=doc_id, title=doc_id, body=body, fields=fields, published_at=published)  # type: ignore[arg-type]
    return StoredRecord(doc=doc, vectors=[[1.0, 0.0, 0.0, 0.0]])


FACET_DOCS = [
    _doc("f1", "alpha beta", "2020-01-01T00:00:00Z", lang=["en", "de"], year=2001, score=1.5, draft=True),
    _doc("f2", "alpha", "2021-06-01T00:00:00Z", lang="en", year=1999, score=0.5, draft=False),
    _doc("f3", "alpha gamma", "2019-03-01T00:00:00Z", lang="fr", year=2010, draft=False),
    _doc("f4", "alpha", lang=["de"], year=2005, score=2.5),
    _doc("f5", "alpha", lang="it", year=2000),
    _doc("f6", "beta only", lang="en", year=2001),
    _doc("f7", "alpha"),
]


def _query(facets: list[str] = ALL, size: int = 10) -> FacetQuery:
    ranges = {f: RANGES[f] for f in facets if f in RANGES}
    return resolve(FACET_SCHEMA, FacetParams(facets=facets, facet_ranges=ranges, max_facet_values=size))


class FacetContract:
    """Subclasses (through `StoreContract`) provide `store` and `index_name`."""

    @pytest.fixture
    def faceted(self, store: IndexStore, index_name: str) -> str:
        version = store.create_version(index_name, 4, FACET_SCHEMA)
        assert store.upsert(version, FACET_DOCS).failures == []
        store.refresh(version)
        return version

    def _counts(
        self,
        store: IndexStore,
        target: str,
        query: str,
        filters: list[Filter],
        fq: FacetQuery,
        also: list[tuple[str, ...]] | None = None,
    ) -> FacetCounts:
        """The store's counts, checked against the reference counter and its hits against `bm25_search`'s."""
        assert isinstance(store, FacetStore)
        hits, counts = store.bm25_facet_search(target, query, 10, filters, fq, also=also or [])  # type: ignore[call-arg]
        if not also:
            plain = store.bm25_search(target, query, 10, filters, with_docs=False)
            assert [(h.id, pytest.approx(h.score)) for h in hits] == [(h.id, h.score) for h in plain]
        matched = {h.id for h in store.bm25_search(target, query, 100)}
        for stems in also or []:
            matched |= {d.doc.id for d in FACET_DOCS if " ".join(stems) in " ".join(bm25_terms(d.doc.body))}
        rows = [filter_values(d.doc, FACET_SCHEMA) for d in FACET_DOCS if d.doc.id in matched]
        assert counts == count_values(rows, filters, fq, FACET_SCHEMA)
        return counts

    def test_facet_counts_cover_the_match_set(self, store: IndexStore, faceted: str) -> None:
        counts = self._counts(store, faceted, "alpha", [], _query())
        assert counts.total_hits == 6  # f6 does not say alpha
        assert list(counts.facets["lang"].items()) == [("de", 2), ("en", 2), ("fr", 1), ("it", 1)]
        assert counts.facets["draft"] == {"false": 2, "true": 1}
        assert list(counts.facets["year"].items()) == [("mid", 2), ("new", 2), ("old", 1)]  # 2000 and 2005 inclusive
        assert counts.facets["score"] == {"high": 2, "low": 1}
        assert counts.facets["published_at"] == {"2020-on": 2, "before-2020": 1}  # f1's midnight counts as 2020

    def test_facet_counts_are_disjunctive(self, store: IndexStore, faceted: str) -> None:
        filters: list[Filter] = [TermFilter(field="lang", value="en"), RangeFilter(field="year", gte=2000)]
        counts = self._counts(store, faceted, "alpha", filters, _query())
        assert counts.total_hits == 1  # f1
        assert counts.facets["lang"] == {"de": 2, "en": 1, "fr": 1, "it": 1}  # the year filter only
        assert list(counts.facets["year"].items()) == [("mid", 1), ("old", 1), ("new", 0)]  # the lang filter only
        assert counts.facets["draft"] == {"true": 1}  # both filters
        same_field: list[Filter] = [
            TermsFilter(field="lang", values=["fr", "it"]),
            TermFilter(field="lang", value="fr"),
        ]
        counts = self._counts(store, faceted, "alpha", same_field, _query(["lang", "draft"]))
        assert counts.total_hits == 1 and counts.facets["lang"] == {"de": 2, "en": 2, "fr": 1, "it": 1}
        assert counts.facets["draft"] == {"false": 1}

    def test_facet_filters_on_booleans_and_dates(self, store: IndexStore, faceted: str) -> None:
        filters: list[Filter] = [TermFilter(field="draft", value=False)]
        counts = self._counts(store, faceted, "alpha", filters, _query(["lang", "draft", "published_at"]))
        assert counts.total_hits == 2 and counts.facets["lang"] == {"en": 1, "fr": 1}
        assert counts.facets["draft"] == {"false": 2, "true": 1}
        before: list[Filter] = [RangeFilter(field="published_at", lt="2020-06-01")]
        counts = self._counts(store, faceted, "alpha", before, _query(["lang", "published_at"]))
        assert counts.total_hits == 2 and counts.facets["lang"] == {"de": 1, "en": 1, "fr": 1}
        assert counts.facets["published_at"] == {"2020-on": 2, "before-2020": 1}

    def test_facet_values_are_cut_at_the_most_frequent(self, store: IndexStore, faceted: str) -> None:
        counts = self._counts(store, faceted, "alpha", [], _query(["lang", "year"], size=3))
        assert list(counts.facets["lang"].items()) == [("de", 2), ("en", 2), ("fr", 1)]  # ties by value
        assert len(counts.facets["year"]) == 3  # ranges are never cut
        counts = self._counts(store, faceted, "alpha", [], _query(["lang"], size=1))
        assert counts.facets["lang"] == {"de": 2}

    def test_facet_counts_of_nothing_and_count_alone(self, store: IndexStore, faceted: str) -> None:
        counts = self._counts(store, faceted, "zzzunknownword", [], _query(["lang", "year"]))
        assert counts.total_hits == 0 and counts.facets == {"lang": {}, "year": {"mid": 0, "new": 0, "old": 0}}
        counts = self._counts(store, faceted, "the of", [], _query(["lang"]))  # stop words: BM25 matches nothing
        assert counts.total_hits == 0
        counts = self._counts(store, faceted, "beta", [TermFilter(field="lang", value="en")], FacetQuery())
        assert counts.total_hits == 2 and counts.facets == {}

    def test_synonym_phrases_widen_the_match_set(self, store: IndexStore, faceted: str) -> None:
        counts = self._counts(store, faceted, "gamma", [], _query(["lang"]), also=[("beta",)])
        assert counts.total_hits == 3  # f3, and f1 and f6 through "beta"
        assert counts.facets["lang"] == {"en": 2, "de": 1, "fr": 1}
        counts = self._counts(store, faceted, "gamma", [], _query(["lang"]), also=[("beta", "alpha")])
        assert counts.total_hits == 1  # a phrase: "alpha beta" is not "beta alpha"
