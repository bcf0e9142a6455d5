"""The embedded store's facet counts (`search.facets`): one SQL statement over the BM25 match set.

The match set (rid and the JSON of filterable values of every document BM25's FTS5 MATCH finds, the same
expression `EmbeddedStore.fts_query` gives `bm25_search`) is materialised once in a CTE; each facet is then a
`GROUP BY` over it, under every filter except its own field's (`embedded_sql.filter_sql`): value facets group
`json_each` of the field (a multi-valued field counts a document once per distinct value, as Elasticsearch's
`terms` does), range facets join the values with their buckets (a document counts once in each bucket holding
any of its values, as Elasticsearch's `range` does). The result set's size is one more `count(*)`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from search.documents import Hit
from search.facets import FacetCounts, FacetQuery, FacetSpec, empty, ordered, others, value_key
from search.filters import Filter
from search.stores.embedded_sql import filter_sql

_SAFE_FIELD = re.compile(r"^[A-Za-z0-9_.\-]+$")  # as filter_sql: the name is spliced into a JSON path

if TYPE_CHECKING:
    from search.schema import IndexSchema
    from search.stores.embedded_versions import VersionFile


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
        hits = self.bm25_search(target, query, k, filters, with_docs=False) if k > 0 else []
        return hits, self.facet_counts(target, query, filters, facets, also)

    def facet_counts(
        self, target: str, query: str, filters: Sequence[Filter], facets: FacetQuery, also: Sequence[Sequence[str]]
    ) -> FacetCounts:
        """The counts alone (see the module's docstring); `also`: stem phrases that match too (synonyms)."""
        phrases = ['"' + " ".join(s).replace('"', '""') + '"' for s in also] if self._open(target).stems() else []
        match = " OR ".join(m for m in (self.fts_query(target, query), *phrases) if m)
        if not match:
            return empty(facets)
        schema = self.schema(target)
        parts: list[str] = []
        params: list[Any] = [match]
        for i, spec in enumerate(facets.specs):
            sql, p = _facet_sql(i, spec, filter_sql(others(filters, spec.field), schema))
            parts.append(sql)
            params.extend(p)
        where, p = filter_sql(filters, schema)
        parts.append(f"SELECT -1, NULL, count(*) FROM m d {'WHERE ' + where if where else ''}")
        params.extend(p)
        sql = (
            "WITH m AS MATERIALIZED (SELECT d.rid, d.filt FROM fts JOIN docs d ON d.rid = fts.rowid "
            "WHERE fts MATCH ?) " + " UNION ALL ".join(parts)
        )
        rows = self._open(target).conn().execute(sql, params).fetchall()
        counts: dict[int, dict[str, int]] = {
            i: {b.key: 0 for b in s.ranges} if s.ranges else {} for i, s in enumerate(facets.specs)
        }
        total = 0
        for i, key, n in rows:
            if i < 0:
                total = int(n)
                continue
            spec = facets.specs[i]
            if spec.ranges is None:
                counts[i][value_key(key, spec.ftype)] = int(n)
            else:
                counts[i][spec.ranges[int(key)].key] = int(n)
        return FacetCounts(
            facets={s.field: ordered(counts[i], None if s.ranges else facets.size) for i, s in enumerate(facets.specs)},
            total_hits=total,
        )


def _facet_sql(i: int, spec: FacetSpec, where: tuple[str, list[Any]]) -> tuple[str, list[Any]]:
    """One facet's `SELECT facet, key, count` over the match set `m` (aliased `d`, as `filter_sql` expects)."""
    cond, params = where
    if not _SAFE_FIELD.match(spec.field):
        raise KeyError(f"invalid field name {spec.field!r}")
    values = f"json_each(d.filt, '$.\"{spec.field}\"') je"
    and_cond = f" AND {cond}" if cond else ""
    if spec.ranges is None:
        return (
            f"SELECT {i}, je.value, count(DISTINCT d.rid) FROM m d, {values} "
            f"{'WHERE ' + cond if cond else ''} GROUP BY je.value",
            params,
        )
    rows = " UNION ALL ".join("SELECT ? AS j, ? AS lo, ? AS hi" for _ in spec.ranges)
    bounds = [x for j, b in enumerate(spec.ranges) for x in (j, b.gte, b.lt)]
    return (
        f"SELECT {i}, b.j, count(DISTINCT d.rid) FROM m d, {values}, ({rows}) b "
        f"WHERE (b.lo IS NULL OR je.value >= b.lo) AND (b.hi IS NULL OR je.value < b.hi){and_cond} GROUP BY b.j",
        [*bounds, *params],
    )
