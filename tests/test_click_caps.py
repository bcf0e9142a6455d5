"""Click caps and the event recorder on their own (no HTTP): old impressions, floods far past the caps, and the
bounds on what the recorder and the caps hold in memory."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from search.click_caps import ClickCaps
from search.clicklog import ClickLogConfig, ClickRecord, JsonlClickLog
from search.events import EventRecorder, EventsBatch, EventsRejected
from search.querylog import QueryEvent

NOW = datetime(2026, 12, 7, 12, tzinfo=UTC)
PAGE = [f"d{i}" for i in range(1, 11)]


class Impressions:
    """A query log that finds the impressions it was given (of any age, as the Elasticsearch log's mget does)."""

    lookup_retry_s = 0.0

    def __init__(self, events: Sequence[QueryEvent]) -> None:
        self.events = {e.query_id: e for e in events if e.query_id}

    def impressions(self, query_ids: Sequence[str]) -> dict[str, QueryEvent]:
        return {q: self.events[q] for q in query_ids if q in self.events}


@dataclass(frozen=True)
class Caller:
    identity: str = "c-caller"
    readable: frozenset[str] | None = None

    @property
    def indices(self) -> frozenset[str] | None:
        return self.readable

    def may_read(self, index: str) -> bool:
        return self.readable is None or index in self.readable


def impression(qid: str, age: timedelta = timedelta(minutes=1), index: str | None = "docs") -> QueryEvent:
    return QueryEvent(
        type="search", query="insulin", result_count=10, query_id=qid, shown=PAGE, index=index, ts=NOW - age
    )


def click(qid: str, pos: int = 1) -> dict[str, Any]:
    return {
        "type": "click",
        "event_name": "Result clicked",
        "query_id": qid,
        "object_ids": [PAGE[pos - 1]],
        "positions": [pos],
        "event_id": uuid.uuid4().hex,
    }


def recorder(tmp_path: Path, *imps: QueryEvent, **config: Any) -> EventRecorder:
    cfg = ClickLogConfig(**config)
    return EventRecorder(Impressions(imps), JsonlClickLog(tmp_path), cfg, now=lambda: NOW)  # type: ignore[arg-type]


def send(rec: EventRecorder, events: list[dict[str, Any]], caller: Caller | None = Caller()) -> Any:
    return asyncio.run(rec.record(EventsBatch.model_validate({"events": events}), caller))


def test_an_impression_older_than_the_acceptance_window_is_unknown(tmp_path: Path) -> None:
    old, recent = impression("q-old", timedelta(days=10)), impression("q-new", timedelta(days=3))
    rec = recorder(tmp_path, old, recent)
    with pytest.raises(EventsRejected) as info:
        send(rec, [click("q-old")])  # the click itself is fresh: only its impression is old
    (err,) = info.value.errors
    assert "unknown query_id 'q-old'" in err["msg"], err
    assert send(rec, [click("q-new")]).accepted == 1  # within the window (4 days): still counted
    assert [r.query_id for r in rec.clicks.read()] == ["q-new"]


def test_the_caps_do_not_trust_clicks_on_an_impression_older_than_they_remember() -> None:
    caps = ClickCaps(5, 1000, 4)
    shown = NOW - timedelta(days=10)  # past the days the caps keep: its count would be forgotten at once
    recs = [
        ClickRecord(
            event_id=f"e{i}",
            type="click",
            event_name="c",
            query_id="q-old",
            object_ids=["d1"],
            positions=[1],
            ts=NOW,
            received_at=NOW,
            client="c-x",
            query="insulin",
        )
        for i in range(8)
    ]
    flags = [caps.flag(r, shown) for r in recs]
    assert flags[5:] == ["impression_cap"] * 3, flags  # never more than the cap trusted
    recent = [r.model_copy(update={"query_id": "q-new", "event_id": f"n{i}"}) for i, r in enumerate(recs)]
    assert [caps.flag(r, NOW - timedelta(days=3)) for r in recent] == [None] * 5 + ["impression_cap"] * 3
