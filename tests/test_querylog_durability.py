"""The JSONL query log reaches the disk: `flush` and `close` fsync the day file, appends fsync at least every
`fsync_interval_s`, and a new day file's directory entry (and a new log directory's) is fsynced as it is made."""

from __future__ import annotations

import os
import stat
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from logs.querylog import JsonlQueryLog, QueryEvent

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
INTERVAL = 0.5  # seconds; the idle test waits a few of them


class FsyncSpy:
    """Records what each os.fsync call synced, as (kind, inode), and still syncs it."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[tuple[str, int]] = []
        real = os.fsync

        def spy(fd: int) -> None:
            st = os.fstat(fd)
            self.calls.append(("dir" if stat.S_ISDIR(st.st_mode) else "file", st.st_ino))
            real(fd)

        monkeypatch.setattr(os, "fsync", spy)

    def take(self) -> list[tuple[str, int]]:
        out, self.calls = self.calls, []
        return out


def _ino(path: Path) -> int:
    return path.stat().st_ino


def test_flush_close_and_new_files_are_fsynced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spy = FsyncSpy(monkeypatch)
    qdir = tmp_path / "ql"
    qlog = JsonlQueryLog(qdir, fsync_interval_s=3600)
    qlog.append(QueryEvent(ts=T0, query="first", result_count=1))
    day1 = qlog.path_for(T0)
    assert spy.take() == [("dir", _ino(tmp_path)), ("dir", _ino(qdir))]  # the new directory, then the new file
    qlog.append(QueryEvent(ts=T0, query="second", result_count=1))
    assert spy.take() == []  # same file, within the interval
    qlog.flush()
    assert spy.take() == [("file", _ino(day1))]
    next_day = T0 + timedelta(days=1)
    qlog.append(QueryEvent(ts=next_day, query="third", result_count=1))
    day2 = qlog.path_for(next_day)
    assert spy.take() == [("file", _ino(day1)), ("dir", _ino(qdir))]  # the old day synced, the new one's entry
    qlog.close()
    assert spy.take() == [("file", _ino(day2))]
    assert [e.query for e in JsonlQueryLog(qdir).read()] == ["first", "second", "third"]


def test_appends_fsync_within_the_interval(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / f"querylog-{T0:%Y-%m-%d}.jsonl").write_text("")  # the day file exists: no directory sync
    spy = FsyncSpy(monkeypatch)
    qlog = JsonlQueryLog(tmp_path, fsync_interval_s=0)
    for i in range(3):
        qlog.append(QueryEvent(ts=T0, query=f"q{i}", result_count=1))
    assert spy.take() == [("file", _ino(qlog.path_for(T0)))] * 3
    qlog.close()


def test_lines_written_before_an_idle_period_are_fsynced_within_the_interval(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No append follows the last one (the API went quiet): the lines still reach the disk, by a timer, once the
    interval has passed; a burst of appends starts one timed sync, and an idle log is not synced again."""
    (tmp_path / f"querylog-{T0:%Y-%m-%d}.jsonl").write_text("")
    spy = FsyncSpy(monkeypatch)
    qlog = JsonlQueryLog(tmp_path, fsync_interval_s=INTERVAL)
    day = ("file", _ino(qlog.path_for(T0)))
    for i in range(20):
        qlog.append(QueryEvent(ts=T0, query=f"q{i}", result_count=1))
    assert spy.take() == []  # within the interval: appends do not wait for the disk
    deadline = time.monotonic() + 5
    while not spy.calls and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(INTERVAL * 1.6)  # more than the interval: a second sync would show now
    assert spy.take() == [day]
    qlog.append(QueryEvent(ts=T0, query="later", result_count=1))  # idle for longer than the interval: at once
    assert spy.take() == [day]
    time.sleep(INTERVAL * 1.6)
    assert spy.take() == []  # nothing was written since: no timed sync
    qlog.append(QueryEvent(ts=T0, query="again", result_count=1))  # synced at once
    qlog.append(QueryEvent(ts=T0, query="last", result_count=1))  # within the interval: a timer is pending
    assert spy.take() == [day]
    qlog.close()  # close syncs, and the pending timer is cancelled
    assert spy.take() == [day]
    time.sleep(INTERVAL * 1.6)
    assert spy.take() == []
    assert [e.query for e in JsonlQueryLog(tmp_path).read()][-3:] == ["later", "again", "last"]
