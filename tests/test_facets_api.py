"""Facets over HTTP (the in-process app on an embedded-store index): the response's shape and order, disjunctive
counts, `count`, the schema's declared ranges, and a 422 with a message for every facet request that cannot be
served (search/facets.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from indexing.pipeline import IndexingConfig, IndexingPipeline
from search.schema import IndexSchema
from search.stores.embedded import EmbeddedStore

INDEX = "facet-docs"
SCHEMA = {
    "fields": {"lang": "keyword", "tags": "keyword", "year": "long", "score": "double", "draft": "boolean"},
    "facet_ranges": {"year": [{"key": "old", "lt": 2000}, {"key": "new", "gte": 2000}]},
}
DOCS = [  # every document says "sleep"; d5 does not
    {"id": "d0", "title": "Sleep one", "text": "sleep", "lang": "en", "tags": ["a", "b"], "year": 1990, "draft": True},
    {"id": "d1", "title": "Sleep two", "text": "sleep", "lang": "en", "tags": ["b"], "year": 2001},
    {"id": "d2", "title": "Sleep three", "text": "sleep", "lang": "de", "tags": ["b", "c"], "year": 2005},
    {"id": "d3", "title": "Sleep four", "text": "sleep", "lang": "fr", "year": 1995, "draft": False},
    {"id": "d4", "title": "Sleep five", "text": "sleep well", "lang": "de", "year": 2010, "score": 0.5},
    {"id": "d5", "title": "Pasta", "text": "boil water", "lang": "en", "tags": ["a"], "year": 2020},
]


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    from search.settings import Settings
    from serving.api import create_api
    from serving.config import AppConfig
    from serving.local import local_backend

    tmp = tmp_path_factory.mktemp("facets-api")
    docs = tmp / "docs.jsonl"
    docs.write_text("".join(json.dumps(d) + "\n" for d in DOCS))
    cfg = IndexingConfig(
        embed=False, schema=IndexSchema.model_validate(SCHEMA), dead_letter_dir=tmp / "dead", progress=False
    )
    report = IndexingPipeline(EmbeddedStore(tmp / "data" / "indices"), None, cfg).build(docs, INDEX)
    assert report.indexed == len(DOCS)
    config = AppConfig.model_validate(
        {
            "data_dir": str(tmp / "data"),
            "search": {"default_index": INDEX, "retrieval": {"mode": "bm25"}},
            "reranker": {"model": None},
            "suggest": {"lm": {"enabled": False}, "prefetch_top": 0},
            "summarizer": None,
        }
    )
    backend = local_backend(config, Settings())
    with TestClient(create_api(backend, backend.metrics), raise_server_exceptions=False) as c:
        yield c
    backend.suggest.close()
    backend.store.close()


def _search(client: TestClient, **body: Any) -> Any:
    return client.post("/v1/search", json={"query": "sleep", "limit": 2, **body})


def test_counts_cover_the_whole_result_set_most_frequent_first(client: TestClient) -> None:
    r = _search(client, facets=["lang", "tags", "draft", "year"])
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["results"]) == 2 and body["total_hits"] == 5  # counted past the page; d5 does not match
    facets = body["facets"]
    assert list(facets["lang"].items()) == [("de", 2), ("en", 2), ("fr", 1)]  # ties by value
    assert list(facets["tags"].items()) == [("b", 3), ("a", 1), ("c", 1)]  # multi-valued: each value once
    assert facets["draft"] == {"false": 1, "true": 1}
    assert facets["year"] == {"new": 3, "old": 2}  # the schema's declared ranges


def test_a_facet_ignores_its_own_filter_and_applies_the_others(client: TestClient) -> None:
    filters = [{"type": "term", "field": "lang", "value": "de"}, {"type": "range", "field": "year", "gte": 2000}]
    body = _search(client, facets=["lang", "year", "tags"], filters=filters).json()
    assert {r["id"] for r in body["results"]} == {"d2", "d4"} and body["total_hits"] == 2
    assert body["facets"]["lang"] == {"de": 2, "en": 1}  # the year filter only: d1, d2, d4
    assert body["facets"]["year"] == {"new": 2, "old": 0}  # the lang filter only: d2, d4 (0 buckets stay)
    assert body["facets"]["tags"] == {"b": 1, "c": 1}  # both filters: d2


def test_request_ranges_dates_and_the_value_cut_off(client: TestClient) -> None:
    ranges = {"year": [{"key": "90s", "gte": 1990, "lt": 2000}, {"key": "00s", "gte": 2000.5, "lt": 2010}]}
    body = _search(client, facets=["year", "lang"], facet_ranges=ranges, max_facet_values=1).json()
    assert body["facets"]["year"] == {"90s": 2, "00s": 2}  # gte 2000.5 on a long: 2001 and up
    assert body["facets"]["lang"] == {"de": 2}  # one value: the most frequent, ties by value


def test_count_alone_and_no_facets(client: TestClient) -> None:
    body = _search(client, count=True).json()
    assert body["total_hits"] == 5 and body["facets"] is None
    body = _search(client).json()
    assert body["total_hits"] is None and body["facets"] is None
    body = client.post("/v1/search", json={"query": "nothingmatcheshere", "facets": ["lang", "year"]}).json()
    assert body["total_hits"] == 0 and body["facets"] == {"lang": {}, "year": {"new": 0, "old": 0}}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"facets": [f"f{i}" for i in range(21)]}, "at most 20"),
        ({"facets": ["lang"], "max_facet_values": 101}, "less than or equal to 100"),
        ({"facets": ["lang"], "max_facet_values": 0}, "greater than or equal to 1"),
        ({"facets": ["year"], "facet_ranges": {"year": [{"key": f"k{i}"} for i in range(51)]}}, "at most 50"),
        ({"facets": ["colour"]}, "unknown facet field 'colour'"),
        ({"facets": ["score"]}, "give its buckets in `facet_ranges`"),
        ({"facets": ["lang"], "facet_ranges": {"lang": [{"key": "a"}]}}, "counted by value"),
        ({"facets": ["lang"], "facet_ranges": {"year": [{"key": "a"}]}}, "not in `facets`"),
        ({"facets": ["year"], "facet_ranges": {"year": [{"key": "a", "gte": 5, "lt": 5}]}}, "below `lt`"),
        ({"facets": ["year"], "facet_ranges": {"year": [{"key": "a"}, {"key": "a"}]}}, "its own key"),
        ({"facets": ["published_at"], "facet_ranges": {"published_at": [{"key": "a", "gte": "soon"}]}}, "soon"),
        ({"facets": ["year"], "facet_ranges": {"year": [{"key": "a", "gte": "x"}]}}, "cannot parse"),
        ({"facets": ["lang"], "facet_ranges": {"year": []}}, "at least 1"),
    ],
)
def test_facet_requests_that_cannot_be_served_are_422_with_a_message(
    client: TestClient, body: dict[str, Any], message: str
) -> None:
    r = _search(client, **body)
    assert r.status_code == 422, r.text
    assert message in json.dumps(r.json()["detail"]), r.text


def test_the_schema_refuses_ranges_on_fields_that_take_none() -> None:
    with pytest.raises(ValueError, match="not a declared long, double or date field"):
        IndexSchema.model_validate({"fields": {"lang": "keyword"}, "facet_ranges": {"lang": [{"key": "a"}]}})
    with pytest.raises(ValueError, match="names a range key twice"):
        IndexSchema.model_validate({"fields": {"n": "long"}, "facet_ranges": {"n": [{"key": "a"}, {"key": "a"}]}})
