"""Facet counts for a search (issue 35): value counts of keyword/boolean fields and bucket counts of
numeric/date fields, over the whole result set, disjunctive as Algolia counts them.

The result set is what BM25 matches (the store's own BM25 query: `ElasticsearchStore.bm25_clauses`,
`EmbeddedStore.fts_query`, so typo corrections and synonyms applied there count too) within the request's
filters; in `dense` mode, the dense candidates. A facet's counts apply every filter except those on its own
field, so a refinement list keeps showing the values a user could add. Each store counts in its own way
(`es_facets`: aggregations riding on the BM25 request; `embedded_facets`: SQL over the match set); this module
holds the request and response fields, the checks (422 with a message), the ordering and cut-off, and a Python
counter over documents (dense candidates, and the reference the contract suite compares the stores with).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from search.documents import Hit
from search.filters import Filter, RangeFilter, TermFilter, TermsFilter
from search.schema import (
    BUILTIN_FIELDS,
    MAX_FACET_RANGES,
    FacetRange,
    FacetRanges,
    FieldType,
    IndexSchema,
    SchemaError,
    coerce,
    facet_bound,
)

__all__ = ["MAX_FACET_RANGES", "FacetRange"]

MAX_FACETS = 20
MAX_FACET_VALUES = 100
VALUE_TYPES = ("keyword", "boolean")  # value counts; long/double/date get range buckets


class FacetError(ValueError):
    """A facet request that cannot be served (unknown field, missing ranges): the service answers 422."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


class FacetParams(BaseModel):
    """The facet fields of `SearchRequest` (a base class there, so the service module stays small)."""

    model_config = ConfigDict(extra="forbid")

    facets: list[str] = Field(
        default_factory=list,
        max_length=MAX_FACETS,
        description=f"Fields to count over the whole result set (at most {MAX_FACETS}): keyword and boolean "
        "fields by value, long/double/date fields by range. Disjunctive: a facet's counts ignore the filters on "
        "its own field.",
    )
    facet_ranges: dict[str, FacetRanges] = Field(
        default_factory=dict,
        max_length=MAX_FACETS,
        description=f"Buckets of numeric/date facets (field -> at most {MAX_FACET_RANGES} ranges, `gte` <= value "
        "< `lt`); a numeric/date facet without them uses the index schema's `facet_ranges`.",
    )
    max_facet_values: int = Field(
        default=10, ge=1, le=MAX_FACET_VALUES, description="Values returned per value facet, most frequent first."
    )
    count: bool = Field(default=False, description="Return `total_hits` even when no facet is asked for.")


class FacetResults(BaseModel):
    """The facet fields of `SearchResponse`."""

    facets: dict[str, dict[str, int]] | None = Field(
        default=None,
        description="Field -> value (or range key) -> documents of the result set, most frequent first, ties by "
        "value; set when the request asked for facets.",
    )
    total_hits: int | None = Field(
        default=None,
        description="Size of the result set (the documents matching the query's words within the filters; in "
        "dense mode the dense candidates); set when facets or `count` were asked for.",
    )


class Bucket(BaseModel):
    """A resolved range: bounds as both stores compare them (doubles; epoch milliseconds for dates)."""

    key: str
    gte: float | None = None
    lt: float | None = None


class FacetSpec(BaseModel):
    """One facet to count: value counts when `ranges` is None, else one count per bucket."""

    field: str
    ftype: FieldType
    ranges: list[Bucket] | None = None


class FacetQuery(BaseModel):
    """What a store counts: the facets, and how many values each value facet returns."""

    specs: list[FacetSpec] = Field(default_factory=list)
    size: int = 10


class FacetCounts(BaseModel):
    """What a store returns: counts per facet (ordered, cut to size) and the result set's size."""

    facets: dict[str, dict[str, int]] = Field(default_factory=dict)
    total_hits: int = 0


@runtime_checkable
class FacetStore(Protocol):
    """A store that counts facets over its BM25 match set."""

    def bm25_facet_search(
        self, target: str, query: str, k: int, filters: Sequence[Filter], facets: FacetQuery
    ) -> tuple[list[Hit], FacetCounts]:
        """BM25's top `k` by id (as `bm25_search(..., with_docs=False)`) and the facet counts of every document
        it matches within `filters` (each facet without the filters on its own field): one round trip where the
        store is remote."""


class FacetCollector:
    """Carries a search's facet query into retrieval and its counts back out (retrieval returns results only)."""

    def __init__(self, query: FacetQuery) -> None:
        self.query = query
        self.counts: FacetCounts | None = None


# ---- the request, checked against the index's schema ---------------------------------------------------------


def resolve(schema: IndexSchema, params: FacetParams) -> FacetQuery:
    """The facets of a request as the stores count them; FacetError (422) for what cannot be counted."""
    specs: list[FacetSpec] = []
    for name in params.facet_ranges:
        if name not in params.facets:
            raise FacetError(f"facet_ranges.{name}", f"facet_ranges names {name!r}, which is not in `facets`")
    for i, name in enumerate(dict.fromkeys(params.facets)):
        try:
            ftype = schema.field_type(name)
        except KeyError as exc:
            raise FacetError(f"facets.{i}", str(exc.args[0]).replace("filter field", "facet field")) from exc
        if ftype in VALUE_TYPES:
            if name in params.facet_ranges:
                raise FacetError(f"facet_ranges.{name}", f"{name!r} is a {ftype} field: it is counted by value")
            specs.append(FacetSpec(field=name, ftype=ftype))
            continue
        ranges = params.facet_ranges.get(name) or schema.facet_ranges.get(name)
        if not ranges:
            raise FacetError(
                f"facets.{i}",
                f"{name!r} is a {ftype} field: give its buckets in `facet_ranges` (none are declared in the index "
                "schema's `facet_ranges`)",
            )
        specs.append(FacetSpec(field=name, ftype=ftype, ranges=buckets(ranges, ftype, name)))
    return FacetQuery(specs=specs, size=params.max_facet_values)


def buckets(ranges: Sequence[FacetRange], ftype: FieldType, field: str) -> list[Bucket]:
    if len({r.key for r in ranges}) < len(ranges):
        raise FacetError(f"facet_ranges.{field}", f"{field!r}: each range needs its own key")
    out = []
    for r in ranges:
        try:
            b = Bucket(key=r.key, gte=facet_bound(r.gte, ftype, field), lt=facet_bound(r.lt, ftype, field))
        except SchemaError as exc:
            raise FacetError(f"facet_ranges.{field}", str(exc)) from exc
        if b.gte is not None and b.lt is not None and b.gte >= b.lt:
            raise FacetError(f"facet_ranges.{field}", f"{field!r}, range {r.key!r}: `gte` must be below `lt`")
        out.append(b)
    return out


# ---- shared by the stores ------------------------------------------------------------------------------------


def others(filters: Sequence[Filter], field: str) -> list[Filter]:
    """The filters a facet's counts apply: all but those on its own field (disjunctive faceting)."""
    return [f for f in filters if f.field != field]


def store_path(field: str) -> str:
    """Where a filterable field lives in an Elasticsearch document."""
    return field if field in BUILTIN_FIELDS else f"fields.{field}"


def value_key(value: Any, ftype: FieldType) -> str:
    """A value as a response key: booleans as `true` / `false` (SQLite holds 1 / 0, Elasticsearch 1 / 0 too)."""
    if ftype == "boolean":
        return "true" if value in (True, 1, "true", "1") else "false"
    return str(value)


def ordered(counts: Mapping[str, int], size: int | None = None) -> dict[str, int]:
    """Most frequent first, ties by value; the first `size` (None: all, for range buckets)."""
    items = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return dict(items if size is None else items[:size])


def empty(query: FacetQuery) -> FacetCounts:
    """The counts of an empty result set: no values, every bucket at zero."""
    return FacetCounts(
        facets={s.field: ordered({b.key: 0 for b in s.ranges}) if s.ranges else {} for s in query.specs},
        total_hits=0,
    )


# ---- counting in Python: dense candidates, and the contract suite's reference --------------------------------


def _values(doc_values: Mapping[str, Any], field: str) -> list[Any]:
    v = doc_values.get(field)
    return [] if v is None else (v if isinstance(v, list) else [v])


def _matches(doc_values: Mapping[str, Any], f: Filter, schema: IndexSchema) -> bool:
    ftype = schema.field_type(f.field)
    vals = _values(doc_values, f.field)
    if isinstance(f, TermFilter):
        return coerce(f.value, ftype, f.field) in vals
    if isinstance(f, TermsFilter):
        wanted = {coerce(x, ftype, f.field) for x in f.values}
        return any(v in wanted for v in vals)
    assert isinstance(f, RangeFilter)
    ops = [(b, op) for b, op in ((f.gte, "ge"), (f.gt, "gt"), (f.lte, "le"), (f.lt, "lt")) if b is not None]
    bounds = [(coerce(b, ftype, f.field), op) for b, op in ops]
    return any(all(getattr(v, f"__{op}__")(b) for b, op in bounds) for v in vals)


def count_values(
    docs: Iterable[Mapping[str, Any]], filters: Sequence[Filter], query: FacetQuery, schema: IndexSchema
) -> FacetCounts:
    """Facet counts over documents given as their typed filterable values (`embedded_sql.filter_values`)."""
    rows = list(docs)
    out: dict[str, dict[str, int]] = {}
    for spec in query.specs:
        rest = others(filters, spec.field)
        counts: dict[str, int] = {b.key: 0 for b in spec.ranges or []}
        for row in rows:
            if not all(_matches(row, f, schema) for f in rest):
                continue
            vals = _values(row, spec.field)
            if spec.ranges is None:
                for key in {value_key(v, spec.ftype) for v in vals}:
                    counts[key] = counts.get(key, 0) + 1
            else:
                for b in spec.ranges:
                    if any((b.gte is None or v >= b.gte) and (b.lt is None or v < b.lt) for v in vals):
                        counts[b.key] += 1
        out[spec.field] = ordered(counts, None if spec.ranges else query.size)
    total = sum(1 for row in rows if all(_matches(row, f, schema) for f in filters))
    return FacetCounts(facets=out, total_hits=total)


# ---- retrieval's hooks -------------------------------------------------------------------------------------


def facet_collector(store: Any, index: str, params: FacetParams) -> FacetCollector | None:
    """The collector a search passes to retrieval (None: no facets nor `count` asked); FacetError for a 422."""
    if not params.facets and not params.count:
        return None
    schema_of = store.schema
    if not isinstance(store, FacetStore):
        raise FacetError("facets", "this index's store cannot count facets")
    return FacetCollector(resolve(schema_of(index), params) if params.facets else FacetQuery())


def lexical_with_facets(
    store: Any, index: str, query: str, k: int, filters: Sequence[Filter], syn: Any, collector: FacetCollector
) -> list[Hit]:
    """BM25's top `k` by id and, into `collector`, the counts of its match set: one store call (one round trip on
    Elasticsearch). With synonym clauses (`search.synonyms.SynonymQuery`), the hits come from the synonym search
    and the match set gains the clauses' phrases (a second, counting-only call)."""
    clauses = getattr(syn, "clauses", None)
    if not clauses:
        hits, collector.counts = store.bm25_facet_search(index, query, k, filters, collector.query)
        return list(hits)
    from search.stores.synonym_stores import bm25_with_synonyms

    hits = bm25_with_synonyms(store, index, query, k, filters, syn)
    also = [tuple(c.stems) for c in clauses]
    _, collector.counts = store.bm25_facet_search(index, query, 0, filters, collector.query, also=also)
    return hits


def dense_facets(
    store: Any, index: str, hits: Sequence[Hit], filters: Sequence[Filter], collector: FacetCollector
) -> None:
    """`dense` mode: the counts of the dense candidates (retrieved under every filter, so a facet's own filter
    still narrows them: kNN has no match set to count disjunctively)."""
    from search.stores.embedded_sql import filter_values

    schema = store.schema(index)
    docs = store.get_many(index, [h.id for h in hits]) if hits else {}
    collector.counts = count_values([filter_values(d, schema) for d in docs.values()], filters, collector.query, schema)


def facet_fields(collector: FacetCollector | None, params: FacetParams) -> dict[str, Any]:
    """The response's `facets` (when asked for) and `total_hits` (facets or `count` asked for)."""
    if collector is None:
        return {}
    counts = collector.counts or FacetCounts()
    return {"facets": counts.facets if params.facets else None, "total_hits": counts.total_hits}
