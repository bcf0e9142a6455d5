"""The embedded store's facet counts (`search.facets`): the BM25 match set's row ids from FTS5, counted in numpy.

The match set is every row FTS5 matches for the expression `EmbeddedStore.fts_query` gives `bm25_search` (the
same words, so typo corrections count), plus synonym phrases when the query gained some: one `SELECT rowid`
(no ranking: a third of what BM25's ranked top k costs on SciFact). The filterable values of a version's
documents are read once per version and generation (as the vector matrix is) into parallel numpy arrays per
field, one entry per document and distinct value; a filter is a mask over its field's array, a facet a
`bincount` (values) or one mask per bucket (ranges) over the rows of its allowed documents. That keeps a
search's facets to a few milliseconds where one SQL `GROUP BY` over `json_each` of every matched row cost
three times BM25 itself (SciFact's long queries match a third of the corpus). The semantics are
Elasticsearch's: a multi-valued document counts once per distinct value and once per bucket holding any of its
values; bounds are inclusive below and exclusive above; a facet applies every filter but its own field's.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from search.documents import Hit
from search.facets import FacetCounts, FacetQuery, empty, ordered, others, value_key
from search.filters import Filter, RangeFilter, TermFilter, TermsFilter
from search.schema import BUILTIN_FIELDS, FieldType, IndexSchema, coerce

if TYPE_CHECKING:
    from search.stores.embedded_versions import VersionFile

NUMERIC = ("long", "double", "date")


@dataclass
class _Field:
    """One field over a version: `rids[i]` holds `vals[i]` (a value code, or the number itself)."""

    ftype: FieldType
    rids: np.ndarray
    vals: np.ndarray
    single: bool = True  # at most one value per document: a bucket's count is its entries'
    keys: list[str] = field(default_factory=list)  # code -> response key (value fields)
    codes: dict[Any, int] = field(default_factory=dict)  # stored value -> code (value fields)


def _load(v: VersionFile, schema: IndexSchema) -> tuple[dict[str, _Field], int]:
    """Every filterable field's values in one scan of the documents' JSON; the row ids' bound."""
    types: dict[str, FieldType] = {**BUILTIN_FIELDS, **schema.fields}
    pairs: dict[str, tuple[list[int], list[Any]]] = {name: ([], []) for name in types}
    size = 1
    for rid, raw in v.conn().execute("SELECT rid, filt FROM docs"):
        size = max(size, rid + 1)
        for name, value in json.loads(raw).items():
            if name in pairs and value is not None:
                rids, vals = pairs[name]
                for x in dict.fromkeys(value if isinstance(value, list) else [value]):
                    rids.append(rid)
                    vals.append(x)
    out: dict[str, _Field] = {}
    for name, (rids, vals) in pairs.items():
        ftype = types[name]
        r = np.asarray(rids, dtype=np.int64)
        single = bool(np.unique(r).size == r.size)
        if ftype in NUMERIC:
            out[name] = _Field(ftype, r, np.asarray(vals, dtype=np.float64), single)
            continue
        codes: dict[Any, int] = {}
        coded = np.fromiter((codes.setdefault(x, len(codes)) for x in vals), dtype=np.int64, count=len(vals))
        out[name] = _Field(ftype, r, coded, single, [value_key(x, ftype) for x in codes], codes)
    return out, size


class EmbeddedFacets:
    """Mixed into `EmbeddedStore` (which provides `_open`, `schema`, `fts_query` and `bm25_search`)."""

    _open: Callable[[str], VersionFile]
    schema: Callable[[str], IndexSchema]
    fts_query: Callable[[str, str], str | None]

    def bm25_search(  # provided by EmbeddedStore
        self, target: str, query: str, k: int, filters: Sequence[Filter] = (), *, with_docs: bool = True
    ) -> list[Hit]:
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
        """One MATCH for both: every matched row with its rank, so the top `k` (ordered as `bm25_search` orders
        them: rank, then row id) and the counts come from the same scan."""
        if also or k <= 0:  # synonyms: the hits come from the synonym search; this counts the wider match set
            hits = self.bm25_search(target, query, k, filters, with_docs=False) if k > 0 else []
            return hits, self.facet_counts(target, query, filters, facets, also)
        top: list[tuple[int, float]] = []
        counts = self.facet_counts(target, query, filters, facets, also, top=(k, top))
        if not top:
            return [], counts
        c = self._open(target).conn()
        ids = dict(
            c.execute(f"SELECT rid, id FROM docs WHERE rid IN ({','.join('?' * len(top))})", [r for r, _ in top])
        )
        return [Hit(id=ids[rid], score=score) for rid, score in top if rid in ids], counts

    def _facet_fields(self, v: VersionFile, target: str) -> tuple[dict[str, _Field], int]:
        lock = self.__dict__.setdefault("_facet_lock", threading.Lock())
        cache: dict[Any, tuple[int, tuple[dict[str, _Field], int]]] = self.__dict__.setdefault("_facet_cache", {})
        with lock:
            hit = cache.get(v.path)
            if hit is not None and hit[0] == v.generation and not v.closed:
                return hit[1]
            for path in [p for p, _ in cache.items() if p != v.path and not p.exists()]:
                cache.pop(path)  # dropped versions
            fields = _load(v, self.schema(target))
            cache[v.path] = (v.generation, fields)
            return fields

    def facet_counts(
        self,
        target: str,
        query: str,
        filters: Sequence[Filter],
        facets: FacetQuery,
        also: Sequence[Sequence[str]] = (),
        top: tuple[int, list[tuple[int, float]]] | None = None,
    ) -> FacetCounts:
        """The counts (see the module's docstring); `also`: stem phrases that match too (synonyms); `top`: (k, a
        list to fill with the best k allowed rows and their BM25 scores)."""
        v = self._open(target)
        version = v.path.stem  # resolved once: the alias file is read once per search
        phrases = ['"' + " ".join(s).replace('"', '""') + '"' for s in also] if v.stems() else []
        match = " OR ".join(m for m in (self.fts_query(version, query), *phrases) if m)
        if not match:
            return empty(facets)
        # One string, not a row per match: building thousands of Python tuples cost more than FTS5's matching.
        ranks = ", group_concat(printf('%.17g', rank))" if top is not None else ""  # 17 digits: exact doubles
        row = v.conn().execute(f"SELECT group_concat(rowid){ranks} FROM fts WHERE fts MATCH ?", [match]).fetchone()
        fields, size = self._facet_fields(v, version)
        matched = np.zeros(size, dtype=bool)  # masks over row ids: intersections and look-ups in O(rows)
        hit_rids = np.fromstring(row[0], dtype=np.int64, sep=",") if row[0] else np.zeros(0, dtype=np.int64)
        known = hit_rids < size  # a row written since the values were read is not counted
        matched[hit_rids[known]] = True
        for f in filters:
            if f.field not in fields:
                self.schema(version).field_type(f.field)  # raises KeyError naming the filterable fields
        passing = {id(f): _passing(fields[f.field], f, size) for f in filters}

        def allowed(fs: Sequence[Filter]) -> np.ndarray:
            out = matched.copy()
            for f in fs:
                out &= passing[id(f)]
            return out

        counts: dict[str, dict[str, int]] = {}
        for spec in facets.specs:
            fv = fields[spec.field]
            inside = allowed(others(filters, spec.field))[fv.rids]
            if spec.ranges is None:
                n = np.bincount(fv.vals[inside], minlength=len(fv.keys))
                counts[spec.field] = ordered({fv.keys[c]: int(n[c]) for c in np.flatnonzero(n)}, facets.size)
                continue
            rids, vals = fv.rids[inside], fv.vals[inside]
            per: dict[str, int] = {}
            for b in spec.ranges:
                m = np.ones(len(vals), dtype=bool)
                if b.gte is not None:
                    m &= vals >= b.gte
                if b.lt is not None:
                    m &= vals < b.lt
                per[b.key] = int(np.count_nonzero(m)) if fv.single else _distinct(rids[m], size)
            counts[spec.field] = ordered(per)
        every = allowed(filters)
        if top is not None and row[0]:
            rank = np.fromstring(row[1], dtype=np.float64, sep=",")[known]
            keep = every[hit_rids[known]]
            r, rk = hit_rids[known][keep], rank[keep]
            best = np.lexsort((r, rk))[: top[0]]
            top[1].extend((int(r[i]), -float(rk[i])) for i in best)
        return FacetCounts(facets=counts, total_hits=int(np.count_nonzero(every)))


def _distinct(rids: np.ndarray, size: int) -> int:
    seen = np.zeros(size, dtype=bool)
    seen[rids] = True
    return int(np.count_nonzero(seen))


def _passing(fv: _Field, f: Filter, size: int) -> np.ndarray:
    """A mask of the row ids with a value that passes one filter (any value, as `embedded_sql.filter_sql`)."""
    out = np.zeros(size, dtype=bool)
    out[fv.rids[_pass_values(fv, f, fv.ftype)]] = True
    return out


def _pass_values(fv: _Field, f: Filter, ftype: FieldType) -> np.ndarray:
    if isinstance(f, RangeFilter):
        m = np.ones(len(fv.vals), dtype=bool)
        for bound, op in ((f.gte, np.greater_equal), (f.gt, np.greater), (f.lte, np.less_equal), (f.lt, np.less)):
            if bound is not None:
                m &= op(fv.vals, float(coerce(bound, ftype, f.field)))
        return m
    wanted = [coerce(f.value, ftype, f.field)] if isinstance(f, TermFilter) else []
    if isinstance(f, TermsFilter):
        wanted = [coerce(x, ftype, f.field) for x in f.values]
    if ftype in NUMERIC:
        m = np.isin(fv.vals, np.asarray([float(x) for x in wanted], dtype=np.float64))
    else:
        m = np.isin(fv.vals, np.asarray([fv.codes[x] for x in wanted if x in fv.codes], dtype=np.int64))
    return m
