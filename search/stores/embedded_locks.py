"""The embedded store's build lock: a lease file per index, read and written under an `flock` guard.

The guard (`<index>.guard`, an advisory `fcntl.flock` that the kernel drops when its process dies) makes
check-then-write atomic between processes; the lease file (`<index>.lock`, JSON of `LeaseInfo`) says who holds
the lock and until when, so a second build fails fast naming the holder and a dead holder's lease is taken over.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pydantic import ValidationError

from search.stores.base import LeaseInfo, LockLost
from search.stores.leases import held_error, is_stale, new_lease, renewed


class FileBuildLock:
    """A held lease on `<locks>/<index>.lock`."""

    def __init__(self, locks_dir: Path, lease: LeaseInfo, lease_s: float) -> None:
        self._dir = locks_dir
        self._lease = lease
        self._lease_s = lease_s
        self._released = False

    @property
    def lease(self) -> LeaseInfo:
        return self._lease

    def renew(self) -> None:
        with guard(self._dir, self._lease.index):
            current = _read(self._dir, self._lease.index)
            if current is None or current.token != self._lease.token:
                holder = current.describe() if current else "nobody"
                raise LockLost(f"build lock of {self._lease.index!r} was taken over by {holder}")
            lease = renewed(self._lease, self._lease_s)
            _write(self._dir, lease)
            self._lease = lease

    def release(self) -> None:
        if self._released:
            return
        with guard(self._dir, self._lease.index):
            current = _read(self._dir, self._lease.index)
            if current is not None and current.token == self._lease.token:
                _path(self._dir, self._lease.index).unlink(missing_ok=True)
        self._released = True


def acquire_file_lock(locks_dir: Path, index: str, owner: str, lease_s: float) -> FileBuildLock:
    """Take the lock, taking over a stale lease; raise LockHeld when a live build holds it."""
    locks_dir.mkdir(parents=True, exist_ok=True)
    lease = new_lease(index, owner, lease_s)
    with guard(locks_dir, index):
        current = _read(locks_dir, index)
        if current is not None and not is_stale(current):
            raise held_error(current)
        _write(locks_dir, lease)
    return FileBuildLock(locks_dir, lease, lease_s)


def _path(locks_dir: Path, index: str) -> Path:
    return locks_dir / f"{index}.lock"


@contextmanager
def guard(locks_dir: Path, index: str) -> Iterator[None]:
    fd = os.open(locks_dir / f"{index}.guard", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing drops the flock


def _read(locks_dir: Path, index: str) -> LeaseInfo | None:
    """The lease on file; an unreadable one (a crash mid-write cannot leave one, but a hand edit can) is stale."""
    try:
        raw = _path(locks_dir, index).read_text()
    except FileNotFoundError:
        return None
    try:
        return LeaseInfo.model_validate_json(raw)
    except ValidationError:
        return None


def _write(locks_dir: Path, lease: LeaseInfo) -> None:
    path = _path(locks_dir, lease.index)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        f.write(lease.model_dump_json())
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
