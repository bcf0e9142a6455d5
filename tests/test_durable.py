"""The one directory-sync helper of the JSONL logs."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

import logs.clicklog
import logs.querylog
from logs.durable import fsync_directory


def test_fsync_directory_syncs_the_directory_and_closes_it_even_when_the_sync_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[bool] = []
    real_fsync, opened, closed = os.fsync, [], []
    real_open, real_close = os.open, os.close

    def spy_open(path: object, flags: int, *args: object) -> int:
        fd = real_open(path, flags, *args)  # type: ignore[arg-type]
        opened.append(fd)
        return fd

    def spy_close(fd: int) -> None:
        closed.append(fd)
        real_close(fd)

    def spy_fsync(fd: int) -> None:
        synced.append(stat.S_ISDIR(os.fstat(fd).st_mode))
        if len(synced) == 2:
            raise OSError(5, "Input/output error")
        real_fsync(fd)

    monkeypatch.setattr(os, "open", spy_open)
    monkeypatch.setattr(os, "close", spy_close)
    monkeypatch.setattr(os, "fsync", spy_fsync)
    fsync_directory(tmp_path)
    with pytest.raises(OSError):
        fsync_directory(tmp_path)
    assert synced == [True, True] and opened == closed and len(opened) == 2


def test_the_logs_share_the_one_helper() -> None:
    assert logs.querylog.fsync_directory is fsync_directory
    assert logs.clicklog.fsync_directory is fsync_directory
