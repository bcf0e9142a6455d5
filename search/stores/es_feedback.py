"""Elasticsearch's side of RM3 (`search.feedback`): term statistics of documents and BM25 with a boost per term.

`content_stems` is neither kept in `_source` nor stored with term vectors, so the feedback documents are read
(`mget`, their title and body) and analysed here by `search.text.bm25_terms`, exactly as they were indexed; one
`mtermvectors` call over those texts as artificial documents then gives each term's document frequency in the
version. The expanded query is one `bool` of boosted `term` clauses on `content_stems` (Lucene sums the clauses'
BM25, each times its boost: Anserini's RM3 query). Versions whose BM25 field is analysed by Elasticsearch
(`content`) give no statistics, so RM3 is skipped there. Dense feedback is not offered: the chunk vectors are
not kept in `_source`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from search.documents import Document, Hit, bm25_text
from search.feedback import TermStats
from search.filters import Filter
from search.text import bm25_terms

if TYPE_CHECKING:
    from elasticsearch import Elasticsearch


class EsFeedback:
    """Mixed into `ElasticsearchStore` (which provides the client, filters, the stems check and reads)."""

    get_many: Callable[[str, Sequence[str]], dict[str, Document]]
    _has_stems: Callable[[str], bool]
    _filter_clauses: Callable[[str, Sequence[Filter]], list[dict[str, Any]]]
    _resolve: Callable[[str], str]

    @property
    def client(self) -> Elasticsearch:  # overridden by ElasticsearchStore
        raise NotImplementedError

    def term_stats(self, target: str, ids: Sequence[str]) -> TermStats:
        from search.stores.elasticsearch import _es_guard

        ids = list(dict.fromkeys(ids))
        if not ids or not self._has_stems(target):
            return TermStats(docs={}, df={}, n_docs=0)
        docs = self.get_many(target, ids)
        counts = {i: dict(Counter(bm25_terms(bm25_text(d)))) for i, d in docs.items()}
        terms = sorted({t for c in counts.values() for t in c})
        if not terms:
            return TermStats(docs=counts, df={}, n_docs=0)
        version = self._resolve(target)
        resp = _es_guard(
            lambda: self.client.termvectors(
                index=version,
                doc={"content_stems": " ".join(terms)},
                fields=["content_stems"],
                term_statistics=True,
                field_statistics=True,
                positions=False,
                offsets=False,
                payloads=False,
            )
        )
        tv = resp.get("term_vectors", {}).get("content_stems", {})
        df = {t: int(v.get("doc_freq", 0)) for t, v in tv.get("terms", {}).items()}
        n_docs = int(tv.get("field_statistics", {}).get("doc_count", 0))
        return TermStats(docs=counts, df=df, n_docs=n_docs)

    def bm25_weighted_search(
        self, target: str, weights: Mapping[str, float], k: int, filters: Sequence[Filter] = ()
    ) -> list[Hit]:
        """Top `k` by the sum over terms of boost × the term's BM25 on `content_stems` (ids and scores only)."""
        from search.stores.elasticsearch import _es_guard

        should = [
            {"term": {"content_stems": {"value": t, "boost": float(w)}}} for t, w in weights.items() if w > 0 and t
        ]
        if not should or k <= 0:
            return []
        query = {"bool": {"should": should, "minimum_should_match": 1, "filter": self._filter_clauses(target, filters)}}
        ids_only: dict[str, Any] = {"source": False, "stored_fields": "_none_", "docvalue_fields": ["id"]}
        resp = _es_guard(
            lambda: self.client.search(index=target, query=query, size=k, track_total_hits=False, **ids_only)
        )
        return [Hit(id=h["fields"]["id"][0], score=float(h["_score"])) for h in resp["hits"]["hits"]]
