"""Filter values at the bounds the API allows are served alike by both stores, and values past them are schema
errors in both (before: 1e300 or 30 digits on a `long` overflowed SQLite, `"NaN"` on a `double` was a query).
The contract suite's corpus and schema; the Elasticsearch half needs the test node (SIFT_TEST_ES_PORT)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from search.filters import MAX_TERMS, Filter, RangeFilter, TermFilter, TermsFilter
from search.schema import SchemaError
from search.stores.base import IndexStore

pytest.register_assert_rewrite("search.stores.contract")  # as test_store_contract does, whichever imports it first

from search.stores.contract import CORPUS, DIMS, SCHEMA, vec  # noqa: E402

Q = "runners pasta sleep proteins"
LONG_MIN, LONG_MAX = -(2**63), 2**63 - 1
DATE_MIN_MS, DATE_MAX_MS = -62135596800000, 253402300799999  # 0001-01-01, 9999-12-31T23:59:59.999Z
MAX_FILTERS = 64


def test_the_bounds_are_the_code_s() -> None:
    from search import filters, schema

    assert (schema.LONG_MIN, schema.LONG_MAX, schema.DATE_MIN_MS, schema.DATE_MAX_MS) == (
        LONG_MIN,
        LONG_MAX,
        DATE_MIN_MS,
        DATE_MAX_MS,
    )
    assert filters.MAX_FILTERS == MAX_FILTERS


def _ids(hits: list[Any]) -> set[str]:
    return {h.id for h in hits}


class FilterBounds:
    @pytest.fixture
    def built(self, store: IndexStore, index_name: str) -> str:
        version = store.create_version(index_name, DIMS, SCHEMA)
        assert store.upsert(version, CORPUS).failures == []
        store.refresh(version)
        store.mark_complete(version)
        store.switch_alias(index_name, version)
        return index_name

    def test_values_at_the_bounds_are_served(self, store: IndexStore, built: str) -> None:
        cases: list[tuple[list[Filter], set[str]]] = [
            ([RangeFilter(field="year", gte=LONG_MIN, lte=LONG_MAX)], {"d1", "d2", "d3", "d4"}),
            ([TermsFilter(field="year", values=[LONG_MIN, LONG_MAX, 2021, "2023"])], {"d2", "d3"}),
            ([RangeFilter(field="published_at", gte=DATE_MIN_MS, lte=DATE_MAX_MS)], {"d1", "d2", "d3"}),
            ([RangeFilter(field="published_at", gt="0001-01-01", lt="9999-12-31T23:59:59Z")], {"d1", "d2", "d3"}),
            ([RangeFilter(field="score", gte=-1.7e308, lte="1.7e308")], {"d3"}),
            ([RangeFilter(field="year", gte=2020)] * MAX_FILTERS, {"d2", "d3", "d4"}),
            ([TermsFilter(field="lang", values=["en", *map(str, range(MAX_TERMS - 1))])] * 4, {"d1", "d2"}),
        ]
        for filters, expected in cases:
            assert _ids(store.bm25_search(built, Q, 10, filters)) == expected, filters[0]
            assert _ids(store.knn_search(built, vec(1, 1, 1, 1), 10, filters)) == expected, filters[0]

    @pytest.mark.parametrize(
        "bad",
        [
            TermFilter(field="year", value=1e300),
            TermFilter(field="year", value="9" * 30),
            TermsFilter(field="year", values=[2021, 2.0**63]),
            RangeFilter(field="published_at", gte=1e300),
            RangeFilter(field="published_at", lt=1e20),
            TermFilter(field="published_at", value="9" * 30),
            TermFilter(field="score", value="NaN"),
            RangeFilter(field="score", gte="inf"),
            RangeFilter(field="score", lt="-Infinity"),
            TermFilter(field="year", value="inf"),
        ],
        ids=repr,
    )
    def test_values_past_the_bounds_are_schema_errors(self, store: IndexStore, built: str, bad: Filter) -> None:
        with pytest.raises(SchemaError, match=bad.field):
            store.bm25_search(built, Q, 10, [bad])
        with pytest.raises(SchemaError, match=bad.field):
            store.knn_search(built, vec(1, 0, 0, 0), 10, [bad])


class TestEmbeddedFilterBounds(FilterBounds):
    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[IndexStore]:
        from search.stores.embedded import EmbeddedStore

        s = EmbeddedStore(tmp_path / "data")
        s.warm_up()
        yield s
        s.close()


@pytest.mark.es
class TestElasticsearchFilterBounds(FilterBounds):
    @pytest.fixture
    def store(self, es_url: str, index_name: str) -> Iterator[IndexStore]:
        from search.stores.elasticsearch import ElasticsearchStore

        s = ElasticsearchStore(es_url)
        s.warm_up()
        yield s
        s.client.indices.delete(index=f"{index_name}-v*", ignore_unavailable=True, allow_no_indices=True)
        s.close()
