"""Fail fast while the store is down: after a search finds it unreachable or overloaded, the next ones answer
503 at once for `cooldown_s`, and one probe at a time goes through until the store answers again.

Why: while a node restarts, every search that still runs its query encoder and then waits on a refused or slow
connection takes CPU from the node's start (on a small machine, the restart took twice as long under load),
and piles requests onto it the moment it answers. The client gets the same 503 with Retry-After either way.
A slow node (a JVM that accepts connections and answers late) holds a probe until its read timeout: while one
is in flight no other goes through (at most `probe_timeout_s`, in case its caller never reports). Outcomes are
reported from the thread that made the store call (`guard`), so a search cancelled at its deadline still
opens the breaker when its call times out later.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TypeVar

from search.stores.base import StoreUnavailable

T = TypeVar("T")


class StoreBreaker:
    """A circuit breaker for one process's store calls: closed, open for `cooldown_s`, half-open (one probe)."""

    def __init__(
        self, cooldown_s: float = 0.25, clock: Callable[[], float] = time.monotonic, probe_timeout_s: float = 10.0
    ) -> None:
        self.cooldown_s = cooldown_s
        self.probe_timeout_s = probe_timeout_s
        self._clock = clock
        self._lock = threading.Lock()
        self._failing = False
        self._open_until = 0.0
        self._probe_until = 0.0  # a probe is in flight until it reports, or until this time
        self.rejected = 0

    def check(self) -> None:
        """Raises StoreUnavailable while open; lets one caller through per cooldown as the probe."""
        if not self._failing:  # the common case, without the lock
            return
        with self._lock:
            now = self._clock()
            if now < self._open_until or now < self._probe_until:
                self.rejected += 1
                raise StoreUnavailable("the index store failed moments ago; failing fast until it answers")
            self._open_until = now + self.cooldown_s  # this caller probes; the others fail fast meanwhile
            self._probe_until = now + self.probe_timeout_s

    def failure(self) -> None:
        with self._lock:
            self._failing = True
            self._open_until = self._clock() + self.cooldown_s
            self._probe_until = 0.0

    def success(self) -> None:
        if self._failing:
            with self._lock:
                self._failing = False
                self._open_until = 0.0
                self._probe_until = 0.0

    def guard(self, fn: Callable[[], T]) -> T:
        """Runs a store call and reports its outcome: StoreUnavailable opens the breaker, an answer closes it
        (other errors, e.g. an unknown index, say the store answered)."""
        try:
            out = fn()
        except StoreUnavailable:
            self.failure()
            raise
        except Exception:
            self.success()
            raise
        self.success()
        return out
