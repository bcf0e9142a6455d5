"""The JSONL click log on its own: exactly once across instances and restarts, torn lines, replay order."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from search.clicklog import ClickLogConfig, ClickRecord, JsonlClickLog, make_click_log

T0 = datetime(2026, 11, 30, 23, 59, 30, tzinfo=UTC)


def rec(i: int, received: datetime = T0) -> ClickRecord:
    return ClickRecord(
        event_id=f"e{i}",
        type="click",
        event_name="Result clicked",
        query_id=f"q{i % 3}",
        object_ids=[f"d{i}"],
        positions=[1 + i % 10],
        ts=received - timedelta(seconds=5),
        received_at=received,
        query="insulin",
    )


def test_exactly_once_across_instances_and_restarts(tmp_path: Path) -> None:
    a, b = JsonlClickLog(tmp_path), JsonlClickLog(tmp_path)  # two replicas on one directory
    assert a.append_many([rec(0), rec(1)]) == (2, 0)
    assert b.append_many([rec(1), rec(2)]) == (1, 1)  # b learns a's ids from the file under the lock
    assert a.append_many([rec(2), rec(3, T0 + timedelta(minutes=1))]) == (1, 1)
    restarted = JsonlClickLog(tmp_path)
    assert restarted.append_many([rec(0), rec(3)]) == (0, 2)
    got = list(restarted.read())
    assert [r.event_id for r in got] == ["e0", "e1", "e2", "e3"]
    assert sorted(p.name for p in tmp_path.glob("clicklog-*.jsonl")) == [
        "clicklog-2026-11-30.jsonl",
        "clicklog-2026-12-01.jsonl",
    ]
    assert [r.event_id for r in restarted.read(since=T0 + timedelta(seconds=1))] == ["e3"]


def test_a_torn_line_is_skipped_and_the_next_write_starts_fresh(tmp_path: Path) -> None:
    log = JsonlClickLog(tmp_path)
    log.append_many([rec(0)])
    path = log.path_for(T0)
    with open(path, "a") as f:
        f.write('{"event_id": "torn", "type": "cli')  # a crash mid-write: never acknowledged
    fresh = JsonlClickLog(tmp_path)
    assert fresh.append_many([rec(1)]) == (1, 0)
    lines = path.read_text().splitlines()
    assert json.loads(lines[-1])["event_id"] == "e1"
    assert [r.event_id for r in JsonlClickLog(tmp_path).read()] == ["e0", "e1"]


def test_make_click_log_follows_the_store(tmp_path: Path) -> None:
    assert isinstance(make_click_log(ClickLogConfig(), "embedded", tmp_path), JsonlClickLog)
    assert make_click_log(ClickLogConfig(backend="none"), "embedded", tmp_path) is None
    with pytest.raises(ValueError, match="Elasticsearch client"):
        make_click_log(ClickLogConfig(), "es", tmp_path)
