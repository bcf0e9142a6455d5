"""`build_lock`: hold an index's build lock for the length of a build, renewing its lease in the background.

Two builds of one index used to interleave (the second even dropped the first's half-written version as
"stale"). The lock makes the second fail fast naming the holder; the lease expires so a SIGKILLed build does
not lock the index for ever, and a heartbeat thread renews it every third of its length while the build runs.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from search.stores.base import BuildLock, IndexStore, LockLost, StoreError

log = logging.getLogger("sift.indexing")

DEFAULT_LEASE_S = 120.0


class HeldLock:
    """The lock a build holds; `check()` raises if the heartbeat found it taken over."""

    def __init__(self, lock: BuildLock) -> None:
        self.lock = lock
        self.lost: LockLost | None = None

    def check(self) -> None:
        if self.lost is not None:
            raise self.lost


def default_owner() -> str:
    return f"sift-build@{socket.gethostname()}:{os.getpid()}"


@contextmanager
def build_lock(
    store: IndexStore, index: str, lease_s: float = DEFAULT_LEASE_S, owner: str | None = None
) -> Iterator[HeldLock]:
    """Take `index`'s build lock (LockHeld if another live build has it), renew it until the block ends, then
    release it, whatever happened inside."""
    held = HeldLock(store.acquire_build_lock(index, owner or default_owner(), lease_s))
    stop = threading.Event()

    def heartbeat() -> None:
        while not stop.wait(lease_s / 3):
            try:
                held.lock.renew()
            except LockLost as exc:
                held.lost = exc
                log.error("build lock of %s lost: %s", index, exc)
                return
            except StoreError as exc:  # unreachable for a moment: the lease has two more periods to go
                log.warning("could not renew the build lock of %s: %s", index, exc)

    thread = threading.Thread(target=heartbeat, name=f"sift-lock-{index}", daemon=True)
    thread.start()
    try:
        yield held
    finally:
        stop.set()
        thread.join()
        try:
            held.lock.release()
        except StoreError as exc:
            log.warning("could not release the build lock of %s (its lease will expire): %s", index, exc)
