"""The query log: daily JSONL files (embedded setup) and an Elasticsearch index (Elasticsearch setup)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from logs.querylog import (
    JsonlQueryLog,
    NullQueryLog,
    QueryEvent,
    QueryLogConfig,
    make_query_log,
)
from logs.querylog_es import EsQueryLog

T0 = datetime(2024, 3, 1, 23, 59, 0, tzinfo=UTC)


def events() -> list[QueryEvent]:
    return [
        QueryEvent(ts=T0, query="Protein folding", result_count=7, request_id="r1", session_id="s1", index="docs"),
        QueryEvent(ts=T0 + timedelta(minutes=2), query="insulin", result_count=0, request_id="r2"),
        QueryEvent(ts=T0 + timedelta(days=1, hours=1), query="zebrafish heart", result_count=3, request_id="r3"),
    ]


def test_jsonl_rotates_daily_and_replays_in_order(tmp_path: Path) -> None:
    qlog = JsonlQueryLog(tmp_path / "ql")
    for ev in events():
        qlog.append(ev)
    qlog.close()
    files = sorted(p.name for p in (tmp_path / "ql").iterdir())
    assert files == ["querylog-2024-03-01.jsonl", "querylog-2024-03-02.jsonl", "querylog-2024-03-03.jsonl"]
    first = [json.loads(line) for line in (tmp_path / "ql" / files[0]).read_text().splitlines()]
    assert first[0] == {
        "type": "search",
        "ts": "2024-03-01T23:59:00Z",
        "query": "Protein folding",
        "result_count": 7,
        "request_id": "r1",
        "session_id": "s1",
        "index": "docs",
    }
    got = list(JsonlQueryLog(tmp_path / "ql").read())
    assert [e.request_id for e in got] == ["r1", "r2", "r3"]
    assert got[0] == events()[0]
    since = list(qlog.read(since=T0 + timedelta(minutes=1)))
    assert [e.request_id for e in since] == ["r2", "r3"]


def test_jsonl_is_append_only_and_survives_a_torn_line(tmp_path: Path) -> None:
    qlog = JsonlQueryLog(tmp_path)
    qlog.append(events()[0])
    qlog.close()
    path = qlog.path_for(T0)
    with open(path, "a") as f:
        f.write('{"type": "search", "query": "half a li')  # a crash mid-write
    again = JsonlQueryLog(tmp_path)
    again.append(QueryEvent(ts=T0, query="after restart", result_count=1, request_id="r9"))
    again.close()
    got = list(again.read())
    assert [e.query for e in got] == ["Protein folding", "after restart"]
    lines = path.read_text().splitlines()
    assert len(lines) == 3 and lines[1].endswith("half a li")  # nothing rewritten; ours starts a fresh line


def test_click_events_share_the_log(tmp_path: Path) -> None:
    qlog = JsonlQueryLog(tmp_path)
    qlog.append(QueryEvent(type="click", ts=T0, query="protein folding", request_id="r1", doc_id="d7", position=2))
    qlog.close()
    (ev,) = list(qlog.read())
    assert (ev.type, ev.doc_id, ev.position) == ("click", "d7", 2)


def test_factory_follows_the_store(tmp_path: Path) -> None:
    assert isinstance(make_query_log(QueryLogConfig(), "embedded", tmp_path), JsonlQueryLog)
    jl = make_query_log(QueryLogConfig(), "embedded", tmp_path)
    assert isinstance(jl, JsonlQueryLog) and jl.directory == tmp_path / "querylog"
    assert isinstance(make_query_log(QueryLogConfig(backend="none"), "es"), NullQueryLog)
    with pytest.raises(ValueError, match="client"):
        make_query_log(QueryLogConfig(), "es")


@pytest.mark.es
def test_elasticsearch_log(es_url: str, index_name: str) -> None:
    from elasticsearch import Elasticsearch

    client = Elasticsearch(es_url)
    qlog = make_query_log(QueryLogConfig(es_index=f"ql-{index_name}", es_flush_interval_s=0.05), "es", None, client)
    assert isinstance(qlog, EsQueryLog)
    try:
        assert list(qlog.read()) == []  # no index yet: an empty log, not an error
        for ev in events():
            qlog.append(ev)
        qlog.flush()
        qlog.refresh()
        got = list(qlog.read())
        assert [e.request_id for e in got] == ["r1", "r2", "r3"]
        assert got[0] == events()[0]
        assert [e.request_id for e in qlog.read(since=T0 + timedelta(hours=1))] == ["r3"]
        mapping = client.indices.get_mapping(index=f"ql-{index_name}")[f"ql-{index_name}"]["mappings"]["properties"]
        assert mapping["ts"]["type"] == "date" and mapping["query"]["type"] == "keyword"
        # The background thread writes without an explicit flush.
        qlog.append(QueryEvent(query="late", result_count=1, request_id="r4"))
        for _ in range(100):
            qlog.refresh()
            if len(list(qlog.read())) == 4:
                break
            import time

            time.sleep(0.05)
        assert [e.request_id for e in qlog.read()][-1] == "r4"
    finally:
        qlog.close()
        client.indices.delete(index=f"ql-{index_name}", ignore_unavailable=True)
        client.close()
