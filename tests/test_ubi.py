"""UBI at the edges: `sift logs export --format ubi` writes documents valid against the UBI 1.3.0 schemas,
`sift clicks import` reads them back (and OpenSearch's shapes, the spec's samples, the plain JSONL shape), and
export → import gives the ranker the very training rows the native logs give."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from typer.testing import CliRunner

from logs.clicklog import ClickRecord, JsonlClickLog
from logs.querylog import JsonlQueryLog, QueryEvent
from sift.cli import app
from tests.ubi_native import SPECS, native_logs, same_rows, training_rows, write_config


def validators(literal: bool = False) -> dict[str, Draft202012Validator]:
    """The three schemas as given, except (unless `literal`) one rule read as its description says it means:
    `action_name` is `oneOf` [one of the common names, any string], so under the letter of the schema every common
    name ("click", "view"...) matches both branches and fails; "you can pass in whatever you want" is `anyOf`."""
    names = {"request": "query.request", "response": "query.response", "event": "event"}
    schemas = {k: json.loads((SPECS / f"{v}.schema.json").read_text()) for k, v in names.items()}
    action = schemas["event"]["properties"]["action_name"]
    if not literal:
        action["anyOf"] = action.pop("oneOf")
    return {k: Draft202012Validator(s) for k, s in schemas.items()}


def schema_errors(out: Path, literal: bool = False) -> tuple[int, int, list[str]]:
    """(queries, events, error messages) of an export folder, against the three schemas."""
    v = validators(literal)
    errors: list[str] = []
    lines = {"queries": 0, "events": 0}
    for name, checks in (("queries", ("request", "response")), ("events", ("event",))):
        for n, line in enumerate((out / f"{name}.ndjson").read_text().splitlines(), 1):
            doc = json.loads(line)
            lines[name] += 1
            for c in checks:
                errors += [f"{name}:{n}:{'.'.join(map(str, e.path))}: {e.message}" for e in v[c].iter_errors(doc)]
            ts = doc["timestamp"]  # format: date-time is not checked by jsonschema without extra packages
            if not ts.endswith("Z") or datetime.fromisoformat(ts).tzinfo is None:
                errors.append(f"{name}:{n}: timestamp {ts} has no zone")
    return lines["queries"], lines["events"], errors


POSITION = {"position": {"ordinal": 1}}


def test_the_literal_schema_refuses_only_common_action_names(tmp_path: Path) -> None:
    """Why `validators` reads one `oneOf` as `anyOf`: the event schema taken literally refuses "click" itself
    (and every other common name), and accepts any other string; nothing else differs."""
    event = validators(literal=True)["event"]
    doc = {"action_name": "click", "timestamp": "2026-03-01T12:00:00Z", "event_attributes": POSITION}
    assert [e.message for e in event.iter_errors(doc)] == [
        "'click' is valid under each of {'type': 'string', 'maxLength': 100}, "
        "{'type': 'string', 'maxLength': 100, 'enum': ['add_to_cart', 'click', 'watch', 'view', 'purchase', "
        "'impression']}"
    ]
    assert not list(event.iter_errors({**doc, "action_name": "conversion"}))
    assert not list(validators()["event"].iter_errors(doc))


def invoke(*args: str) -> Any:
    return CliRunner().invoke(app, list(args))


def import_ubi(config: Path, *files: str) -> Any:
    return invoke("clicks", "import", "--format", "ubi", "--config", str(config), "--no-progress", *files)


@pytest.fixture(scope="module")
def native(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return native_logs(tmp_path_factory.mktemp("ubi-native"))


def test_round_trip_gives_identical_training_rows(native: Path, tmp_path: Path) -> None:
    out = tmp_path / "export"
    res = invoke("logs", "export", "--format", "ubi", "--config", str(native), "--out", str(out))
    assert res.exit_code == 0, res.output
    counts = json.loads(res.output)
    queries, events, errors = schema_errors(out)
    assert errors == [] and queries == counts["queries"] > 250 and events == counts["events"] > 50
    first = json.loads((out / "queries.ndjson").read_text().splitlines()[0])
    assert first["query_attributes"]["features"] and first["query_attributes"]["index"] == "ubi-docs"
    assert len(first["query_response_hit_ids"]) == 10 and first["application"] == "sift"

    fresh = write_config(tmp_path / "fresh")
    files = ["--queries", str(out / "queries.ndjson"), "--events", str(out / "events.ndjson")]
    res = import_ubi(fresh, *files)
    assert res.exit_code == 0, res.output
    report = json.loads(res.output.splitlines()[-1])
    assert report["impressions_written"] == queries and report["records_written"] == counts["records"]
    assert report["rejected"] == report["orphans"] == report["positions_corrected"] == 0

    native_rows, native_sessions = training_rows(native)
    imported_rows, imported_sessions = training_rows(fresh)
    assert imported_sessions == native_sessions
    assert same_rows(native_rows, imported_rows) and len(native_rows.y) > 50

    again = import_ubi(fresh, *files)  # idempotent: the same files store nothing new
    assert again.exit_code == 0, again.output
    second = json.loads(again.output.splitlines()[-1])
    assert second["impressions_written"] == second["records_written"] == 0
    assert second["impressions_existing"] == queries and second["records_existing"] == counts["records"]
    assert same_rows(native_rows, training_rows(fresh)[0])


def test_the_specs_sample_documents_import(tmp_path: Path) -> None:
    config = write_config(tmp_path / "logs")
    res = import_ubi(
        config, "--queries", str(SPECS / "query-opensearch.json"), "--events", str(SPECS / "event-opensearch.json")
    )
    assert res.exit_code == 0, res.output
    report = json.loads(res.output.splitlines()[-1])
    assert report["impressions_written"] == 1 and report["ignored_actions"] == {"page_exit": 1}
    [imp] = JsonlQueryLog(tmp_path / "logs" / "querylog").read()
    assert imp.query == "Toner" and imp.query_id == "12300d16cb-b6f1-4012-93ebcc49cac90426"
    assert imp.client == "c4af7ca2-d6d2-4326-a41f-e616ebdd3d7b" and imp.index == "ubi-docs"


T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)


def _ts(minutes: int) -> str:
    return (T0 + timedelta(minutes=minutes)).isoformat().replace("+00:00", "Z")


def _event(qid: str, obj: Any, ordinal: Any, minutes: int = 1, action: str = "click") -> dict[str, Any]:
    attrs: dict[str, Any] = {"position": {} if ordinal is None else {"ordinal": ordinal}}
    if obj is not None:
        attrs["object"] = {"object_id": obj, "object_id_field": "sku"}
    return {"action_name": action, "query_id": qid, "timestamp": _ts(minutes), "client_id": "browser-1",
            "session_id": "s-1", "event_attributes": attrs}  # fmt: skip


def test_opensearch_shapes_bad_lines_and_orphans(tmp_path: Path) -> None:
    """Hits wrapped in `_source`, bulk action lines, 0-based ordinals; bad lines and events without an
    impression are refused with their line numbers (exit 1), everything valid is stored."""
    config = write_config(tmp_path / "logs")
    q1 = {"query_id": "q-1", "user_query": "vitamin d", "timestamp": _ts(0), "client_id": "browser-1",
          "query_response_hit_ids": ["d2", "d8", "d14"], "query_attributes": {"experiment": "x"}}  # fmt: skip
    q2 = {"query_id": "q-2", "user_query": "gut flora", "timestamp": _ts(0), "query_response_object_ids": [5, 11]}
    queries = tmp_path / "ubi_queries.ndjson"
    queries.write_text(
        "\n".join([
            json.dumps({"index": {"_index": "ubi_queries"}}),
            json.dumps({"_index": "ubi_queries", "_id": "x", "_source": q1}),
            json.dumps(q2),
            json.dumps({"query_id": "q-3", "timestamp": _ts(0)}),  # line 4: no user_query
        ]) + "\n"
    )  # fmt: skip
    events = tmp_path / "ubi_events.ndjson"
    events.write_text(
        "\n".join([
            json.dumps({"_source": _event("q-1", "d8", 1)}),  # 0-based ordinal of d8: corrected to 2
            "{not json",  # line 2
            json.dumps(_event("q-1", None, 1)),  # line 3: a click without an object
            json.dumps(_event("q-404", "d2", 1)),  # line 4: no such impression
            json.dumps(_event("q-2", "d99", 1)),  # line 5: never shown
            json.dumps(_event("q-2", 11, 2, action="purchase")),
            json.dumps(_event("q-1", "d2", 1, action="hover")),
        ]) + "\n"
    )  # fmt: skip
    dead = tmp_path / "dead.jsonl"
    res = import_ubi(config, "--queries", str(queries), "--events", str(events), "--dead-letter", str(dead))
    assert res.exit_code == 1 and "5 line(s) refused" in res.output
    report = json.loads(res.output.splitlines()[0])
    assert report["rejected"] == 4 and report["orphans"] == 1 and report["bulk_action_lines"] == 1
    assert report["impressions_written"] == 2 and report["records_written"] == 2
    assert report["positions_corrected"] == 1 and report["ignored_actions"] == {"hover": 1}
    refused = {(Path(r["file"]).name, r["line"]): r["reason"] for r in map(json.loads, dead.read_text().splitlines())}
    assert set(refused) == {("ubi_queries.ndjson", 4), ("ubi_events.ndjson", 2), ("ubi_events.ndjson", 3),
                            ("ubi_events.ndjson", 4), ("ubi_events.ndjson", 5)}  # fmt: skip
    assert "user_query" in refused[("ubi_queries.ndjson", 4)] and "q-404" in refused[("ubi_events.ndjson", 4)]
    assert "not shown" in refused[("ubi_events.ndjson", 5)] and "object_id" in refused[("ubi_events.ndjson", 3)]
    records = {r.query_id: r for r in JsonlClickLog(tmp_path / "logs" / "clicklog").read()}
    assert records["q-1"].positions == [2] and records["q-1"].client == "browser-1"
    assert records["q-1"].session_id == "s-1" and records["q-1"].query == "vitamin d"
    assert records["q-2"].type == "conversion" and records["q-2"].object_ids == ["11"]
    imps = {e.query_id: e for e in JsonlQueryLog(tmp_path / "logs" / "querylog").read()}
    assert imps["q-2"].shown == ["5", "11"] and imps["q-2"].session_id == "s-1"  # from its event


def test_events_join_impressions_imported_before(tmp_path: Path) -> None:
    """Queries one day, their events the next (the collector's shape: epoch-millisecond time, the session in
    event_attributes): the events find their impressions in the query log."""
    config = write_config(tmp_path / "logs")
    queries, events = tmp_path / "q.ndjson", tmp_path / "e.ndjson"
    queries.write_text(json.dumps({"query_id": "q-9", "user_query": "sleep", "query_response_hit_ids": ["d4", "d10"],
                                   "timestamp": _ts(0)}) + "\n")  # fmt: skip
    assert import_ubi(config, "--queries", str(queries)).exit_code == 0
    ev = _event("q-9", "d10", 2)
    ev.pop("session_id")
    ev["event_attributes"]["session_id"] = "s-9"
    ev["timestamp"] = int((T0 + timedelta(minutes=2)).timestamp() * 1000)
    events.write_text(json.dumps(ev) + "\n")
    res = import_ubi(config, "--events", str(events))
    assert res.exit_code == 0, res.output
    [rec] = JsonlClickLog(tmp_path / "logs" / "clicklog").read()
    assert rec.positions == [2] and rec.session_id == "s-9" and rec.ts == T0 + timedelta(minutes=2)
    assert rec.query == "sleep" and rec.index == "ubi-docs"


def test_plain_jsonl_shape(tmp_path: Path) -> None:
    from training.click_logs import sessions_from_logs

    config = write_config(tmp_path / "logs")
    plain = tmp_path / "searches.jsonl"
    rows = [
        {"query": "vitamin d", "shown": ["d2", "d8", "d14"], "clicks": [{"id": "d8", "position": 2}],
         "session": "s1", "user": "u1", "time": _ts(0)},
        {"query": "gut flora", "shown": ["d5", "d11"], "clicks": [{"id": "d11"}], "time": _ts(5), "index": "other"},
        {"query": "sleep", "shown": ["d4"], "clicks": [{"id": "d9"}], "time": _ts(6)},  # clicked, never shown
        {"query": "sleep", "shown": ["d4"], "time": _ts(7), "typo_field": 1},
        {"query": "old", "shown": ["d4"], "clicks": [{"id": "d4"}], "time": _ts(-91 * 24 * 60)},  # past retention
    ]  # fmt: skip
    plain.write_text("".join(json.dumps(r) + "\n" for r in rows))
    args = ["clicks", "import", "--format", "jsonl", "--file", str(plain), "--config", str(config), "--no-progress"]
    res = invoke(*args)
    assert res.exit_code == 1, res.output
    report = json.loads(res.output.splitlines()[0])
    assert report["impressions_written"] == 2 and report["records_written"] == 2 and report["rejected"] == 2
    assert report["past_retention"] == 2  # the old search and its click: the 90-day retention would delete them
    imps = list(JsonlQueryLog(tmp_path / "logs" / "querylog").read())
    clicks = list(JsonlClickLog(tmp_path / "logs" / "clicklog").read())
    sessions = {s.query: s for s in sessions_from_logs(imps, clicks)}
    assert sessions["vitamin d"].clicks == (False, True, False) and sessions["vitamin d"].session_id == "s1"
    assert sessions["gut flora"].clicks == (False, True)
    assert {e.index for e in imps} == {"ubi-docs", "other"}
    again = json.loads(invoke(*args).output.splitlines()[0])
    assert again["impressions_written"] == again["records_written"] == 0


def test_usage_errors(tmp_path: Path) -> None:
    config = write_config(tmp_path / "logs")
    assert invoke("clicks", "import", "--format", "csv", "--file", "x", "--config", str(config)).exit_code == 2
    assert invoke("clicks", "import", "--format", "ubi", "--config", str(config)).exit_code == 2
    missing = invoke("clicks", "import", "--format", "jsonl", "--file", str(tmp_path / "no"), "--config", str(config))
    assert missing.exit_code == 2 and "no such file" in missing.output
    bad = invoke("logs", "export", "--out", str(tmp_path / "o"), "--config", str(config), "--since", "last week")
    assert bad.exit_code == 2 and "--since" in bad.output


@pytest.mark.slow
def test_an_export_of_10000_events_validates(tmp_path: Path) -> None:
    """2,500 impressions with 4 events each (clicks, a two-object conversion, a view, a suggest click)."""
    config = write_config(tmp_path / "logs")
    qlog = JsonlQueryLog(tmp_path / "logs" / "querylog")
    records: list[ClickRecord] = []
    t0 = T0
    for i in range(2500):
        ts = t0 + timedelta(seconds=i)
        shown = [f"doc-{i}-{j}" for j in range(10)]
        kind = "suggest" if i % 10 == 0 else "search"
        session = "s" * (150 if i == 7 else 8)  # longer than UBI's 100: travels in the attributes
        qlog.append(QueryEvent(type=kind, ts=ts, query=f"query {i % 300}", query_id=f"qid-{i}", shown=shown,
                               offset=0, index="ubi-docs", session_id=session,
                               features={d: [1.0, None] for d in shown}, explored=i % 2 == 0))  # fmt: skip
        base = {"query_id": f"qid-{i}", "ts": ts, "received_at": ts, "source": kind, "client": f"c{i % 7}",
                "query": f"query {i % 300}", "index": "ubi-docs", "session_id": session}  # fmt: skip
        records += [
            ClickRecord(event_id=f"e{i}a", type="click", event_name="Result clicked", object_ids=[shown[1]],
                        positions=[2], **base),
            ClickRecord(event_id=f"e{i}b", type="conversion", event_name="Bought", object_ids=shown[2:4], **base),
            ClickRecord(event_id=f"e{i}c", type="view", event_name="Viewed", object_ids=[shown[5]], positions=[6],
                        flagged="impression_cap" if i % 50 == 0 else None, **base),
        ]  # fmt: skip
    qlog.close()
    JsonlClickLog(tmp_path / "logs" / "clicklog").append_many(records)
    out = tmp_path / "export"
    res = invoke("logs", "export", "--config", str(config), "--out", str(out))
    assert res.exit_code == 0, res.output
    queries, events, errors = schema_errors(out)
    assert (queries, events, errors) == (2500, 10000, [])
    fresh = write_config(tmp_path / "fresh")
    files = ["--queries", str(out / "queries.ndjson"), "--events", str(out / "events.ndjson")]
    report = json.loads(import_ubi(fresh, *files).output.splitlines()[-1])
    assert report["records_written"] == len(records) and report["impressions_written"] == 2500
    back = {r.event_id: r for r in JsonlClickLog(tmp_path / "fresh" / "clicklog").read()}
    differ = [(r, back.get(r.event_id)) for r in records if back.get(r.event_id) != r]
    assert differ == []  # conversions' two objects put back into one record, long ids restored
    assert [e for e in JsonlQueryLog(tmp_path / "fresh" / "querylog").read()] == list(qlog.read())


@pytest.mark.es
def test_elasticsearch_logs_round_trip(native: Path, es_url: str, index_name: str, tmp_path: Path) -> None:
    """The same export imported into Elasticsearch logs (twice: nothing new the second time) exports again as
    the same documents."""
    import yaml

    from tests.ubi_native import app_dict

    first = tmp_path / "first"
    assert invoke("logs", "export", "--config", str(native), "--out", str(first)).exit_code == 0
    cfg = {**app_dict(tmp_path / "es"), "store": "es", "elasticsearch_url": es_url}
    cfg["query_log"] = {"es_index": f"{index_name}-querylog", "es_flush_interval_s": 0.1}
    cfg["click_log"] = {"es_index": f"{index_name}-clicklog"}
    config = tmp_path / "es.yaml"
    config.write_text(yaml.safe_dump(cfg))
    files = ["--queries", str(first / "queries.ndjson"), "--events", str(first / "events.ndjson")]
    res = import_ubi(config, *files)
    assert res.exit_code == 0, res.output
    report = json.loads(res.output.splitlines()[-1])
    assert report["impressions_written"] > 250 and report["records_written"] > 50
    again = json.loads(import_ubi(config, *files).output.splitlines()[-1])
    assert again["impressions_written"] == again["records_written"] == 0
    second = tmp_path / "second"
    assert invoke("logs", "export", "--config", str(config), "--out", str(second)).exit_code == 0
    for name in ("queries.ndjson", "events.ndjson"):
        a, b = ((d / name).read_text().splitlines() for d in (first, second))
        assert sorted(map(json.loads, a), key=json.dumps) == sorted(map(json.loads, b), key=json.dumps)
