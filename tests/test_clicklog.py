"""The JSONL click log on its own: exactly once across instances and restarts, torn lines, replay order."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from logs.clicklog import ClickLogConfig, ClickRecord, JsonlClickLog, make_click_log

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


def test_a_failed_write_is_not_remembered_and_its_retry_is_stored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    log = JsonlClickLog(tmp_path)
    assert log.append_many([rec(0)]) == (1, 0)
    for name in ("write", "fsync"):  # the disk fills up, or the sync fails: the API answers 500
        real = getattr(os, name)
        calls = {"n": 0}

        def once(*args: object, _real: object = real, _calls: dict[str, int] = calls) -> object:
            _calls["n"] += 1
            if _calls["n"] == 1:
                raise OSError(28, "No space left on device")
            return _real(*args)  # type: ignore[operator]

        monkeypatch.setattr(os, name, once)
        i = 1 if name == "write" else 2
        with pytest.raises(OSError):
            log.append_many([rec(i)])
        assert log.append_many([rec(i)]) == (1, 0)  # the client's retry is stored, not called a duplicate
        assert log.append_many([rec(i)]) == (0, 1)
        monkeypatch.undo()
    assert [r.event_id for r in JsonlClickLog(tmp_path).read()] == ["e0", "e1", "e2"]  # once each, no torn line
    assert JsonlClickLog(tmp_path).append_many([rec(1), rec(2)]) == (0, 2)


def test_stored_ids_are_forgotten_past_the_acceptance_window(tmp_path: Path) -> None:
    clock = [T0]
    log = JsonlClickLog(tmp_path, window_days=2.0, now=lambda: clock[0])
    held = []
    for day in range(8):
        clock[0] = T0 + timedelta(days=day)
        assert log.append_many([rec(10 * day + j, clock[0]) for j in range(10)]) == (10, 0)
        held.append(log.remembered())
    assert held[:4] == [10, 20, 30, 40] and held[4:] == [40] * 4  # the window's days (and a day's slack) only
    assert log.append_many([rec(75, clock[0])]) == (0, 1)  # within the window: still a duplicate
    restarted = JsonlClickLog(tmp_path, window_days=2.0, now=lambda: clock[0])
    assert restarted.append_many([rec(1, clock[0])]) == (1, 0)  # a week old: forgotten (the API refuses it)
    assert restarted.remembered() == 41
    assert JsonlClickLog(tmp_path).append_many([rec(2, clock[0])]) == (0, 1)  # no window: all remembered


def test_a_new_day_file_syncs_its_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os
    import stat

    synced: list[str] = []
    real = os.fsync

    def spy(fd: int) -> None:
        synced.append("dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file")
        real(fd)

    monkeypatch.setattr(os, "fsync", spy)
    log = JsonlClickLog(tmp_path)
    log.append_many([rec(0)])
    assert synced == ["file", "dir"]  # the new file's entry is durable too
    log.append_many([rec(1)])
    assert synced[2:] == ["file"]  # same day's file: no directory sync
    log.append_many([rec(2, T0 + timedelta(days=1))])
    assert synced[3:] == ["file", "dir"]


def test_an_event_id_is_scoped_by_who_sent_it(tmp_path: Path) -> None:
    log = JsonlClickLog(tmp_path)
    victim, attacker = rec(0).model_copy(update={"client": "c-victim"}), rec(0).model_copy(update={"client": "c-bad"})
    assert log.append_many([attacker]) == (1, 0)
    assert log.append_many([victim]) == (1, 0)  # the attacker's use of the id first does not swallow it
    assert JsonlClickLog(tmp_path).append_many([victim, attacker]) == (0, 2)  # each one's retry: a duplicate
    assert victim.storage_id() != attacker.storage_id() != "e0" and rec(0).storage_id() == "e0"


@pytest.mark.es
def test_elasticsearch_scopes_event_ids_by_client_and_keeps_flags(es_url: str, index_name: str) -> None:
    from elasticsearch import Elasticsearch

    from logs.clicklog import EsClickLog

    client = Elasticsearch(es_url)
    index = f"cl-scope-{index_name}"
    log = EsClickLog(client, index)
    try:
        victim = rec(0).model_copy(update={"client": "c-victim"})
        attacker = rec(0).model_copy(update={"client": "c-bad", "flagged": "impression_cap"})
        assert log.append_many([attacker]) == (1, 0)
        assert log.append_many([victim, attacker]) == (1, 1)
        got = sorted(log.read(), key=lambda r: r.client or "")
        assert [(r.event_id, r.client, r.flagged) for r in got] == [
            ("e0", "c-bad", "impression_cap"),
            ("e0", "c-victim", None),
        ]
    finally:
        client.indices.delete(index=index, ignore_unavailable=True)
        client.close()


# The click log's mapping before events carried an identity and a flag (commit 61e1761): an index created then
# is still there after an upgrade, and `_ensure_index` must not assume it was created with today's mapping.
OLD_MAPPING = {
    "dynamic": "false",
    "properties": {
        "event_id": {"type": "keyword"},
        "type": {"type": "keyword"},
        "event_name": {"type": "keyword"},
        "query_id": {"type": "keyword"},
        "object_ids": {"type": "keyword"},
        "positions": {"type": "integer"},
        "ts": {"type": "date"},
        "received_at": {"type": "date"},
        "user_token": {"type": "keyword"},
        "session_id": {"type": "keyword"},
        "index": {"type": "keyword"},
        "query": {"type": "keyword", "ignore_above": 1024},
        "source": {"type": "keyword"},
    },
}


@pytest.mark.es
def test_elasticsearch_reads_and_upgrades_an_index_created_with_the_old_mapping(es_url: str, index_name: str) -> None:
    from elasticsearch import Elasticsearch, helpers

    from logs.clicklog import EsClickLog

    client = Elasticsearch(es_url)
    index = f"cl-old-{index_name}"
    client.indices.create(index=index, mappings=OLD_MAPPING, settings={"number_of_shards": 1, "number_of_replicas": 0})
    try:
        # 1,001 events the old code stored (no client, no flag): more than one page of the reader's search_after
        old = [rec(i, T0 - timedelta(minutes=1)) for i in range(1001)]
        actions = [
            {"_index": index, "_id": r.event_id, "_source": r.model_dump(mode="json", exclude_none=True)} for r in old
        ]
        helpers.bulk(client, actions, refresh=True)
        # Training on the upgraded deployment before any new event came in: nothing has written the new mapping yet.
        assert len(list(EsClickLog(client, index).read())) == 1001
        log = EsClickLog(client, index)
        new = rec(2000).model_copy(update={"client": "c-new", "flagged": "identity_cap"})
        assert log.append_many([new, rec(0, T0 - timedelta(minutes=1))]) == (1, 1)
        got = list(EsClickLog(client, index).read())
        assert len(got) == 1002 and len({r.storage_id() for r in got}) == 1002
        assert (got[-1].event_id, got[-1].client, got[-1].flagged) == ("e2000", "c-new", "identity_cap")
        props = client.indices.get_mapping(index=index)[index]["mappings"]["properties"]
        assert props["client"] == {"type": "keyword"} and props["flagged"] == {"type": "keyword"}
        hits = client.search(index=index, query={"term": {"flagged": "identity_cap"}})["hits"]["hits"]
        assert [h["_id"] for h in hits] == [new.storage_id()]  # the new fields are searchable, not just stored
    finally:
        client.indices.delete(index=index, ignore_unavailable=True)
        client.close()


def test_a_partial_write_is_cut_back_and_its_retry_is_stored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    log = JsonlClickLog(tmp_path)
    assert log.append_many([rec(0)]) == (1, 0)
    path = log.path_for(T0)
    before = path.read_bytes()
    real, calls = os.write, []

    def half_then_full_disk(fd: int, data: bytes | memoryview) -> int:
        calls.append(len(data))
        if len(calls) == 1:
            return real(fd, bytes(data)[: len(data) // 2])  # part of the batch reaches the file...
        raise OSError(28, "No space left on device")  # ...then the disk is full

    monkeypatch.setattr(os, "write", half_then_full_disk)
    with pytest.raises(OSError):
        log.append_many([rec(1), rec(2)])
    monkeypatch.undo()
    assert len(calls) == 2 and path.read_bytes() == before  # the half-written lines were cut off
    assert log.append_many([rec(1), rec(2)]) == (2, 0)  # the retry is stored, not called a duplicate
    assert [r.event_id for r in JsonlClickLog(tmp_path).read()] == ["e0", "e1", "e2"]
    assert path.read_text().count("\n") == 3  # no torn line left between them
