"""The store circuit breaker (search/breaker.py) and the search service failing fast behind it."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from search.breaker import StoreBreaker
from search.documents import Document, StoredRecord
from search.schema import IndexSchema
from search.service import SearchConfig, SearchRequest, SearchService
from search.stores.base import StoreUnavailable
from search.stores.embedded import EmbeddedStore


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_open_half_open_closed() -> None:
    clock = Clock()
    b = StoreBreaker(cooldown_s=1.0, clock=clock)
    b.check()  # closed: passes
    b.failure()
    with pytest.raises(StoreUnavailable, match="failing fast"):
        b.check()
    clock.now += 1.01
    b.check()  # the probe goes through ...
    with pytest.raises(StoreUnavailable):
        b.check()  # ... and the others fail fast while it runs
    b.failure()  # the probe failed: open again
    clock.now += 0.5
    with pytest.raises(StoreUnavailable):
        b.check()
    clock.now += 0.6
    b.check()
    b.success()  # the probe answered: closed
    b.check()
    b.check()
    assert b.rejected == 3


class FlakyStore:
    """The real embedded store, with BM25 calls failing as unreachable while `down`; counts the calls."""

    def __init__(self, inner: EmbeddedStore) -> None:
        self.inner, self.down, self.calls = inner, False, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def bm25_search(self, *a: Any, **kw: Any) -> Any:
        self.calls += 1
        if self.down:
            raise StoreUnavailable("connection refused")
        return self.inner.bm25_search(*a, **kw)


def test_searches_fail_fast_without_encoding_while_the_store_is_down(tmp_path: Path) -> None:
    inner = EmbeddedStore(tmp_path)
    v = inner.create_version("docs", 2, IndexSchema())
    inner.upsert(v, [StoredRecord(doc=Document(id="d1", title="python tips", body="loops"), vectors=[[1.0, 0.0]])])
    inner.switch_alias("docs", v)
    store = FlakyStore(inner)
    encoded: list[str] = []

    async def encode(q: str) -> list[float]:
        encoded.append(q)
        return [1.0, 0.0]

    svc = SearchService(store, encode, None, SearchConfig(fail_fast_s=30.0))  # type: ignore[arg-type]

    def search() -> Any:
        return asyncio.run(svc.search(SearchRequest(query="python tips", limit=3)))

    assert [r.id for r in search().results] == ["d1"]
    store.down = True
    with pytest.raises(StoreUnavailable, match="connection refused"):
        search()
    calls, encodes = store.calls, len(encoded)
    for _ in range(5):
        with pytest.raises(StoreUnavailable, match="failing fast"):
            search()
    assert store.calls == calls and len(encoded) == encodes  # neither the store nor the encoder was called
    assert svc.breaker is not None and svc.breaker.rejected == 5
    off = SearchService(store, encode, None, SearchConfig(fail_fast_s=0))  # type: ignore[arg-type]
    assert off.breaker is None
    inner.close()


def test_one_probe_in_flight_and_outcomes_reported_by_guard() -> None:
    clock = Clock()
    b = StoreBreaker(cooldown_s=0.25, clock=clock, probe_timeout_s=5.0)

    def down() -> None:
        raise StoreUnavailable("read timed out")

    with pytest.raises(StoreUnavailable, match="read timed out"):
        b.guard(down)  # opens the breaker, whoever awaited the call
    clock.now += 0.3
    b.check()  # the probe goes through and hangs on the slow node ...
    clock.now += 1.0
    with pytest.raises(StoreUnavailable, match="failing fast"):
        b.check()  # ... past the cooldown: no second probe while it is in flight
    clock.now += 4.1
    b.check()  # its caller never reported: another probe after probe_timeout_s
    assert b.guard(lambda: 7) == 7  # it answered: closed
    b.check()
