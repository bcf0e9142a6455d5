"""Elasticsearch's facet counts (`search.facets`): one `_msearch` round trip of two searches ES runs in parallel.

(1) The top `k`: `bm25_search`'s request exactly (scored, filtered, `track_total_hits: false`), so faceting adds
nothing to the ranking's cost. (2) The counts: `size: 0`, BM25's match clauses (`ElasticsearchStore.bm25_clauses`)
in filter context (no scoring: aggregations over a scored query made ES score every match, +23-25% p50) and no
request filter, so the aggregations see the whole match set. Each facet is a `filter` aggregation holding every
other field's filters (disjunctive), around a `terms` (keyword, boolean), `range` (long, double) or `date_range`
(date) aggregation; `total` is a `filter` aggregation of all of them (the result set's size). An error in either
part is raised as the one ES exception a plain search would raise, through `_es_guard`.
Ranges: `from` is inclusive and `to` exclusive, as `search.facets.Bucket` means them; a multi-valued document
counts once per bucket. `terms` is exact on one shard; on several, `shard_size` (10x the size, at least 100)
bounds its error as Elasticsearch documents.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from search.documents import Hit
from search.facets import Bucket, FacetCounts, FacetQuery, FacetSpec, empty, ordered, store_path, value_key
from search.filters import Filter

if TYPE_CHECKING:
    from elasticsearch import Elasticsearch


class EsFacets:
    """Mixed into `ElasticsearchStore` (which provides the client, BM25's clauses, filters and hit parsing)."""

    _filter_clauses: Callable[[str, Sequence[Filter]], list[dict[str, Any]]]
    bm25_clauses: Callable[[str, str], dict[str, Any]]
    _hits: Callable[[Any, bool], list[Hit]]
    _source_opts: Callable[[bool], dict[str, Any]]

    @property
    def client(self) -> Elasticsearch:  # overridden by ElasticsearchStore
        raise NotImplementedError

    def bm25_facet_search(
        self,
        target: str,
        query: str,
        k: int,
        filters: Sequence[Filter],
        facets: FacetQuery,
        *,
        also: Sequence[Sequence[str]] = (),
    ) -> tuple[list[Hit], FacetCounts]:
        from search.stores.elasticsearch import _es_guard

        if not query.strip() and not also:
            return [], empty(facets)
        scoring: dict[str, Any] = {"bool": self.bm25_clauses(target, query)} if query.strip() else {}
        if also:  # synonyms: matched (adjacent stems), not scored here
            should = [{"match_phrase": {"content_stems": " ".join(stems)}} for stems in also]
            scoring = {"bool": {"should": [*should, *([scoring] if scoring else [])], "minimum_should_match": 1}}
        by_filter = [(f.field, self._filter_clauses(target, [f])) for f in filters]
        every = [c for _, cs in by_filter for c in cs]
        # Unfiltered: no `filter` wrappers (a match_all per document each) and the hit count is the total.
        aggs: dict[str, Any] = {"total": {"filter": {"bool": {"filter": every}}}} if every else {}
        for i, spec in enumerate(facets.specs):
            rest = [c for field, cs in by_filter if field != spec.field for c in cs]
            agg = _agg(spec, facets.size)
            aggs[f"f{i}"] = {"filter": {"bool": {"filter": rest}}, "aggs": {"v": agg}} if rest else agg
        matched = {"bool": {"filter": [scoring]}}
        count = {"size": 0, "track_total_hits": not every, "query": matched, "aggs": aggs}
        searches: list[dict[str, Any]] = [{"index": target}, count]
        if k > 0:  # `bm25_search`'s own request (synonyms: their clauses score too, as before)
            top = {"bool": {**scoring["bool"], "filter": self._filter_clauses(target, filters)}}
            ids_only = {"_source": False, "stored_fields": "_none_", "docvalue_fields": ["id"]}
            searches = [{"index": target}, {"query": top, "size": k, "track_total_hits": False, **ids_only}, *searches]
        parts = _es_guard(lambda: _msearch(self.client, searches))
        resp = parts[-1]
        found = resp.get("aggregations", {})
        out: dict[str, dict[str, int]] = {}
        for i, spec in enumerate(facets.specs):
            buckets = (found[f"f{i}"]["v"] if "v" in found[f"f{i}"] else found[f"f{i}"])["buckets"]
            if spec.ranges is None:
                counts = {value_key(b.get("key_as_string", b["key"]), spec.ftype): b["doc_count"] for b in buckets}
                out[spec.field] = ordered(counts, facets.size)
            else:
                out[spec.field] = ordered({b["key"]: int(b["doc_count"]) for b in buckets})
        hits = self._hits(parts[0], False) if k > 0 else []
        total = found["total"]["doc_count"] if every else resp["hits"]["total"]["value"]
        return hits, FacetCounts(facets=out, total_hits=int(total))


def _msearch(client: Elasticsearch, searches: list[dict[str, Any]]) -> list[Any]:
    """The responses in order; a failed one raises the exception its status maps to (for `_es_guard`)."""
    from elasticsearch import ApiError
    from elasticsearch.exceptions import HTTP_EXCEPTIONS

    resp = client.msearch(searches=searches)
    parts = list(resp["responses"])
    for part in parts:
        if "error" in part:
            status = int(part.get("status", 500))
            error = part["error"]
            reason = f"{error.get('type', 'error')}: {error.get('reason', error)}" if isinstance(error, dict) else error
            meta = dataclasses.replace(resp.meta, status=status)
            raise HTTP_EXCEPTIONS.get(status, ApiError)(message=str(reason), meta=meta, body=part)
    return parts


def _agg(spec: FacetSpec, size: int) -> dict[str, Any]:
    path = store_path(spec.field)
    if spec.ranges is None:
        order = [{"_count": "desc"}, {"_key": "asc"}]  # ties by value, as `search.facets.ordered`
        return {"terms": {"field": path, "size": size, "shard_size": max(10 * size, 100), "order": order}}
    if spec.ftype == "date":
        ranges = [_bounds(b, lambda x: str(int(x))) for b in spec.ranges]
        return {"date_range": {"field": path, "format": "epoch_millis", "ranges": ranges}}
    return {"range": {"field": path, "ranges": [_bounds(b, float) for b in spec.ranges]}}


def _bounds(b: Bucket, conv: Callable[[float], Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"key": b.key}
    if b.gte is not None:
        out["from"] = conv(b.gte)
    if b.lt is not None:
        out["to"] = conv(b.lt)
    return out
