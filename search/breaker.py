"""Fail fast while the store is down: after a search finds it unreachable or overloaded, the next ones answer
503 at once for `cooldown_s`, and one probe at a time goes through until the store answers again.

Why: while a node restarts, every search that still runs its query encoder and then waits on a refused or slow
connection takes CPU from the node's start (on a small machine, the restart took twice as long under load),
and piles requests onto it the moment it answers. The client gets the same 503 with Retry-After either way.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from search.stores.base import StoreUnavailable


class StoreBreaker:
    """A circuit breaker for one process's store calls: closed, open for `cooldown_s`, half-open (one probe)."""

    def __init__(self, cooldown_s: float = 0.25, clock: Callable[[], float] = time.monotonic) -> None:
        self.cooldown_s = cooldown_s
        self._clock = clock
        self._lock = threading.Lock()
        self._failing = False
        self._open_until = 0.0
        self.rejected = 0

    def check(self) -> None:
        """Raises StoreUnavailable while open; lets one caller through per cooldown as the probe."""
        if not self._failing:  # the common case, without the lock
            return
        with self._lock:
            now = self._clock()
            if now < self._open_until:
                self.rejected += 1
                raise StoreUnavailable("the index store failed moments ago; failing fast until it answers")
            self._open_until = now + self.cooldown_s  # this caller probes; the others fail fast meanwhile

    def failure(self) -> None:
        with self._lock:
            self._failing = True
            self._open_until = self._clock() + self.cooldown_s

    def success(self) -> None:
        if self._failing:
            with self._lock:
                self._failing = False
                self._open_until = 0.0
