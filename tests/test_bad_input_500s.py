"""Inputs that used to be 500s are 422s with a bounded body that does not echo them, and none of them reaches the
server's log: filter values beyond a long or a date (1e300, 30 digits), `"NaN"` / `"inf"` on numeric fields,
1,100 term filters (SQLite's expression tree), a lone surrogate (the 422 body could not be UTF-8 encoded) and
500-deep nesting (the 422 handler recursed). Also the pieces alone: `coerce`, the filter-list bounds, the 422
error sanitiser and the logged fault trace."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from indexing.pipeline import IndexingConfig, IndexingPipeline
from search.filters import RangeFilter, TermFilter, TermsFilter
from search.schema import IndexSchema, SchemaError, coerce
from search.service import SearchRequest
from search.stores.embedded import EmbeddedStore

INDEX = "bad-input"
MARK = "zqxmarker"  # user text that must appear in no response body and no log line
LIMIT_INPUT = "".join(["zz", "limit", "input"])  # not the query's words, and in no source line a trace prints
MAX_BODY = 4096  # what any of these 422 bodies may weigh
MAX_FILTERS, MAX_FILTER_VALUES, MAX_TRACE_CHARS = 64, 4096, 16_000  # as search.filters and serving.errors say


@pytest.mark.parametrize(
    ("value", "ftype"),
    [
        (1e300, "long"),
        ("9" * 30, "long"),
        (2.0**63, "long"),
        ("NaN", "long"),
        (float("inf"), "long"),
        (1e300, "date"),
        ("9" * 30, "date"),
        (1e20, "date"),
        (float("nan"), "date"),
        ("NaN", "double"),
        ("nan", "double"),
        ("inf", "double"),
        ("-Infinity", "double"),
        ("1e999", "double"),
        (float("inf"), "double"),
    ],
)
def test_values_no_store_can_compare_are_schema_errors(value: Any, ftype: Any) -> None:
    with pytest.raises(SchemaError, match="'f'"):
        coerce(value, ftype, "f")


def test_real_numbers_and_dates_still_coerce() -> None:
    assert coerce("1.5", "double", "f") == 1.5 and coerce(-2, "double", "f") == -2.0
    assert coerce(1e308, "double", "f") == 1e308
    assert coerce(2**63 - 1, "long", "f") == 2**63 - 1 and coerce(-(2**63), "long", "f") == -(2**63)
    assert coerce("42", "long", "f") == 42 and coerce(2.7, "long", "f") == 2
    assert coerce("2020-01-01", "date", "f") == 1577836800000 and coerce(1577836800000, "date", "f") == 1577836800000
    assert coerce("9999-12-31T23:59:59Z", "date", "f") == 253402300799000


def test_filter_lists_are_bounded() -> None:
    from search import filters

    assert (filters.MAX_FILTERS, filters.MAX_FILTER_VALUES) == (MAX_FILTERS, MAX_FILTER_VALUES)
    many = [TermFilter(field="year", value=i).model_dump() for i in range(MAX_FILTERS)]
    assert len(SearchRequest(query="q", filters=many).filters) == MAX_FILTERS
    with pytest.raises(ValidationError, match=f"at most {MAX_FILTERS}"):
        SearchRequest(query="q", filters=[*many, many[0]])
    terms = TermsFilter(field="year", values=list(range(1024))).model_dump()
    fits = [terms] * (MAX_FILTER_VALUES // 1024)
    assert len(SearchRequest(query="q", filters=fits).filters) == len(fits)
    rng = RangeFilter(field="year", gte=1).model_dump()
    with pytest.raises(ValidationError, match=f"at most {MAX_FILTER_VALUES}"):
        SearchRequest(query="q", filters=[*fits, rng])
    with pytest.raises(ValidationError):
        TermFilter(field="x" * 129, value=1)


def test_safe_errors_drop_input_and_are_bounded() -> None:
    from serving.errors import MAX_ERRORS, safe_errors

    deep: Any = MARK
    for _ in range(5000):
        deep = [deep]
    errors = [
        {"type": "string_unicode", "loc": ("body", "q\ud800"), "msg": "bad \ud800", "input": deep, "ctx": {"e": deep}}
    ] * 500
    out = safe_errors(errors)
    text = json.dumps(out, ensure_ascii=False)
    text.encode("utf-8")  # no lone surrogate left
    assert MARK not in text and "input" not in text and len(out) == MAX_ERRORS + 1 and len(text) < 20_000
    assert out[-1]["msg"] == f"{500 - MAX_ERRORS} more errors not shown"


def _validation_error_with_input() -> ValidationError:
    try:
        SearchRequest.model_validate({"query": f"{MARK} \ud800", "limit": MARK})
    except ValidationError as exc:
        return exc
    raise AssertionError("the request was valid")


def test_a_logged_fault_holds_no_validation_input_and_is_bounded() -> None:
    from serving import errors
    from serving.errors import fault_trace

    assert errors.MAX_TRACE_CHARS == MAX_TRACE_CHARS
    try:
        try:
            raise _validation_error_with_input()
        except ValidationError:
            raise RuntimeError("the handler failed") from None
    except RuntimeError as exc:
        trace = fault_trace(exc)
    assert "RuntimeError: the handler failed" in trace and MARK not in trace
    try:
        try:
            raise _validation_error_with_input()
        except ValidationError as inner:
            raise RuntimeError("while reporting") from inner
    except RuntimeError as exc:
        trace = fault_trace(exc)
    assert "validation error(s) (input not logged)" in trace and MARK not in trace
    trace.encode("utf-8")

    def down(n: int) -> int:
        return down(n + 1) + 1

    try:
        down(0)
    except RecursionError as exc:
        trace = fault_trace(exc)
    assert "RecursionError" in trace and len(trace) <= MAX_TRACE_CHARS + 100


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    from search.settings import Settings
    from serving.api import create_api
    from serving.config import AppConfig
    from serving.local import local_backend

    tmp = tmp_path_factory.mktemp("bad-input")
    docs = tmp / "docs.jsonl"
    rows = [
        {"id": f"d{i}", "title": "Sleep", "text": "x", "year": 1990 + i, "score": 0.5 + i, "published_at": "2020-01-01"}
        for i in range(5)
    ]
    docs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    schema = IndexSchema(fields={"year": "long", "score": "double"})
    cfg = IndexingConfig(embed=False, schema=schema, dead_letter_dir=tmp / "dead", progress=False)
    IndexingPipeline(EmbeddedStore(tmp / "data" / "indices"), None, cfg).build(docs, INDEX)
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


def _nested(depth: int, leaf: str) -> str:
    return "[" * depth + leaf + "]" * depth


def _filters(*filters: str) -> bytes:
    return ('{"query":"sleep","filters":[' + ",".join(filters) + "]}").encode()


def _terms(field: str, values: list[str]) -> str:
    return f'{{"type":"terms","field":"{field}","values":[' + ",".join(values) + "]}"


def _one(ftype: str, field: str, value: str, key: str = "value") -> bytes:
    return _filters(f'{{"type":"{ftype}","field":"{field}","{key}":{value}}}')


BAD = {
    "1e300 on a long": (_one("term", "year", "1e300"), "1e300", ["body", "filters", 0, "value"]),
    "30 digits on a long": (_one("term", "year", '"%s"' % ("9" * 30)), "9" * 30, ["body", "filters", 0, "value"]),
    "30 digits in a terms list": (
        _one("terms", "year", '[1990, "%s"]' % ("9" * 30), "values"),
        "9" * 30,
        ["body", "filters", 0, "values"],
    ),
    "1e300 on a date": (_one("range", "published_at", "1e300", "gte"), "1e300", ["body", "filters", 0, "gte"]),
    "30 digits on a date": (
        _one("range", "published_at", '"%s"' % ("9" * 30), "lt"),
        "9" * 30,
        ["body", "filters", 0, "lt"],
    ),
    "1e20 ms on a date": (_one("term", "updated_at", "1e20"), "1e20", ["body", "filters", 0, "value"]),
    "NaN on a double": (_one("term", "score", '"NaN"'), "NaN", ["body", "filters", 0, "value"]),
    "inf on a double": (_one("range", "score", '"inf"', "gte"), "inf", ["body", "filters", 0, "gte"]),
    "-Infinity on a double": (_one("range", "score", '"-Infinity"', "lt"), "Infinity", ["body", "filters", 0, "lt"]),
    "NaN on a long": (_one("term", "year", '"NaN"'), "NaN", ["body", "filters", 0, "value"]),
    "inf on a date": (_one("term", "published_at", '"inf"'), "inf", ["body", "filters", 0, "value"]),
    "1,100 term filters": (
        _filters(*[f'{{"type":"term","field":"year","value":{i}}}' for i in range(1100)]),
        "1099",
        ["body", "filters"],
    ),
    "5,000 terms values in 5 filters": (
        _filters(*[_terms("year", ["1"] * 1000)] * 5),
        "1,1,1",
        ["body", "filters"],
    ),
    "lone surrogate in the query": (b'{"query":"%s \\ud800 sleep"}' % MARK.encode(), MARK, ["body", "query"]),
    "lone surrogate as a field name": (_one("term", f"{MARK}\\udfff", "1"), MARK, ["body", "filters", 0]),
    "lone surrogate as an extra key": (b'{"query":"sleep","k\\ud800":1}', "\ud800", ["body"]),
    "500-deep nested filter value": (_one("term", "year", _nested(500, f'"{MARK}"')), MARK, ["body", "filters", 0]),
    "500-deep nested filter list": (
        b'{"query":"sleep","filters":%s}' % _nested(500, f'"{MARK}"').encode(),
        MARK,
        ["body", "filters"],
    ),
    "huge bad terms list": (
        _filters(_terms("year", [f'"{MARK}{i}"' for i in range(1024)])),
        MARK,
        ["body", "filters", 0, "values"],
    ),
}


@pytest.mark.parametrize("name", list(BAD))
def test_bad_input_is_a_bounded_422_that_echoes_and_logs_nothing(
    client: TestClient, caplog: pytest.LogCaptureFixture, name: str
) -> None:
    body, echo, loc = BAD[name]
    with caplog.at_level(logging.DEBUG):
        r = client.post("/v1/search", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 422, (name, r.status_code, r.text[:500])
    assert len(r.content) <= MAX_BODY and echo not in r.text, (name, len(r.content), r.text[:500])
    details = r.json()["detail"]
    assert details and all(set(d) <= {"loc", "msg", "type", "ctx"} for d in details), details
    assert details[0]["loc"][: len(loc)] == loc, (name, details)
    server_lines = [rec.getMessage() for rec in caplog.records if not rec.name.startswith(("httpx", "httpcore"))]
    assert not [line for line in server_lines if echo in line or MARK in line], (name, server_lines)
    assert not [rec for rec in caplog.records if rec.levelno >= logging.WARNING], (name, caplog.records)


def test_the_same_filters_within_the_bounds_are_served(client: TestClient) -> None:
    ok = [
        _one("range", "score", "1.5", "gte"),
        _one("range", "score", '"2.5"', "lt"),
        _one("range", "year", "-9223372036854775808", "gte"),
        _one("range", "published_at", "253402300799999", "lt"),
        _one("range", "published_at", '"2019-06-01"', "gte"),
        _filters(*['{"type":"range","field":"year","gte":1991}'] * MAX_FILTERS),
        _filters(*[_terms("year", ["1992"] * 1024)] * 4),
    ]
    for body in ok:
        r = client.post("/v1/search", content=body, headers={"content-type": "application/json"})
        assert r.status_code == 200, (body[:200], r.text[:500])
        assert r.json()["results"], body[:200]
    r = client.post("/v1/search", json={"query": "sleep", "filters": [{"type": "range", "field": "score", "gte": 2.5}]})
    assert {h["id"] for h in r.json()["results"]} == {"d2", "d3", "d4"}


def test_a_fault_with_a_validation_error_inside_logs_no_input(
    client: TestClient, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A handler that fails while a validation error is in flight: the 500's logged trace has neither the
    request's query nor the validation error's input, and is bounded."""
    backend: Any = client.app.state.backend  # type: ignore[attr-defined]

    async def broken(*_: Any, **__: Any) -> Any:
        try:
            SearchRequest.model_validate({"query": "x", "limit": LIMIT_INPUT})
        except ValidationError as exc:
            raise RuntimeError("the service failed") from exc

    monkeypatch.setattr(backend.service, "search", broken)
    with caplog.at_level(logging.DEBUG):
        r = client.post("/v1/search", json={"query": f"{MARK} sleep"})
    assert r.status_code == 500 and MARK not in r.text
    logged = "\n".join(rec.getMessage() for rec in caplog.records if rec.name.startswith("sift"))
    assert MARK not in logged and LIMIT_INPUT not in logged and len(logged) <= MAX_TRACE_CHARS + 1000
    assert "RuntimeError: the service failed" in logged and "input not logged" in logged


@pytest.mark.parametrize("depth", [5_000, 200_000])
def test_json_too_deep_to_parse_is_a_4xx_and_logs_nothing(
    client: TestClient, caplog: pytest.LogCaptureFixture, depth: int
) -> None:
    """Deeper than the JSON parser's recursion limit (the body is never validated): 422 with a clear message, not
    FastAPI's own 400."""
    body = _one("term", "year", _nested(depth, f'"{MARK}"'))
    with caplog.at_level(logging.DEBUG):
        r = client.post("/v1/search", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 422 and len(r.content) <= MAX_BODY and MARK not in r.text, r.text[:300]
    assert "nested too deeply" in r.json()["detail"][0]["msg"]
    assert not [rec for rec in caplog.records if not rec.name.startswith(("httpx", "httpcore"))], caplog.records
