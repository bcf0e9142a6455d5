"""Admission control for searches: a bounded number run at once in a replica, those that start while it is
busy run lighter, and one that cannot start soon is answered 503 at once.

Why: with an unbounded FIFO queue, an overload that lasts a moment (a cold JVM, a replica restarting) makes every
queued search late: each waits behind all the others, runs, and then passes its deadline, so the replica spends
its CPU on answers nobody gets and stays overloaded after the load is back to normal (a metastable collapse:
bench/chaos.py at 50 req/s on 2 CPUs failed 43% of its searches with no fault at all). Shedding what cannot
start within `max_wait_s` keeps the admitted searches fast, and the replica leaves the overload when the load does,
as concurrency limiters in front of a service do (Netflix's concurrency-limits, Envoy's admission control).
Before shedding, a busy replica degrades: searches admitted while `lighter_from` of the slots are held by others
run a hybrid search as BM25 alone and skip the rerank (a brownout), so each costs less and fewer are shed. A
slot bounds the searches in flight, not every thread: a search cancelled at its deadline frees its slot while a
store call it started in a worker thread may still finish.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from pydantic import BaseModel, ConfigDict, Field

log = logging.getLogger("sift.api")
WARN_EVERY_S = 10.0  # one warning per this many seconds of shedding, not one per request


class AdmissionConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_concurrent: int = Field(
        default=16, ge=1, le=4096, description="Searches one ingress replica runs at once; the others wait."
    )
    lighter_from: float | None = Field(
        default=0.5,
        gt=0,
        le=1,
        description="Share of the slots held by other searches from which a search runs lighter (hybrid as BM25 "
        "alone, no rerank, each with a note): degrade before shedding; null: never.",
    )
    max_wait_s: float = Field(
        default=1.0,
        gt=0,
        description="How long a search may wait for a slot before it is answered 503 with Retry-After "
        "(the search deadline starts once it runs).",
    )


class Overloaded(Exception):
    """No slot within the wait: the caller answers 503."""


class Admission:
    """One per app (an ingress replica): `async with admission.slot(): ...` around a search."""

    def __init__(self, config: AdmissionConfig, on_outcome: Callable[[str], None] | None = None) -> None:
        """`on_outcome("lighter" | "shed")`: a metrics hook, called once per such search."""
        self.config = config
        self._on_outcome = on_outcome
        self._slots = asyncio.Semaphore(config.max_concurrent)
        self.shed = 0
        self.in_use = 0
        self.lightened = 0
        self._warned_at = -WARN_EVERY_S
        self._warned_shed = 0

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[bool]:
        """Holds a slot for the block; yields whether the search should run lighter (the replica is busy)."""
        try:
            async with asyncio.timeout(self.config.max_wait_s):
                await self._slots.acquire()
        except TimeoutError:
            self.shed += 1
            self._note("shed")
            self._warn()
            raise Overloaded from None
        self.in_use += 1
        share = self.config.lighter_from
        lighter = share is not None and self.in_use - 1 >= share * self.config.max_concurrent  # the others
        if lighter:
            self.lightened += 1
            self._note("lighter")
        try:
            yield lighter
        finally:
            self.in_use -= 1
            self._slots.release()

    def _note(self, outcome: str) -> None:
        if self._on_outcome is not None:
            self._on_outcome(outcome)

    def _warn(self) -> None:
        now = time.monotonic()
        if now - self._warned_at >= WARN_EVERY_S:
            log.warning(
                "overloaded: %d searches found no free slot (of %d) within %s s since the last warning; answered 503",
                self.shed - self._warned_shed,
                self.config.max_concurrent,
                self.config.max_wait_s,
            )
            self._warned_at, self._warned_shed = now, self.shed
