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

from logs.click_caps import ClickCaps
from logs.clicklog import ClickLogConfig, ClickRecord, JsonlClickLog
from logs.events import Caller, EventRecorder, EventsBatch, EventsRejected
from logs.querylog import QueryEvent

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
class FakeCaller:
    identity: str = "c-caller"
    readable: frozenset[str] | None = None

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


def send(rec: EventRecorder, events: list[dict[str, Any]], caller: Caller | None = FakeCaller()) -> Any:
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


def test_a_flood_far_past_the_impression_cap_is_refused_and_stores_nothing(tmp_path: Path) -> None:
    rec = recorder(tmp_path, impression("q1"))
    limit = 10 * rec.config.max_clicks_per_impression  # 50 with the defaults
    with pytest.raises(EventsRejected) as info:
        send(rec, [click("q1", 1 + i % 10) for i in range(20_000 // 20)])  # 1,000 clicks on one response
    errors = info.value.errors
    assert [e["loc"][2] for e in errors] == list(range(limit, 1000))  # one message per event past the limit
    assert all("refused" in e["msg"] and "max_clicks_per_impression" in e["msg"] for e in errors), errors[0]
    assert list(rec.clicks.read()) == [] and rec.caps.remembered() == 0  # nothing stored, nothing counted
    # Up to the limit is stored (past the cap: flagged); the click that would pass it is refused.
    assert send(rec, [click("q1") for _ in range(limit)]).accepted == limit
    flags = [r.flagged for r in rec.clicks.read()]
    assert flags.count(None) == rec.config.max_clicks_per_impression and len(flags) == limit
    with pytest.raises(EventsRejected, match="event error"):
        send(rec, [click("q1")])
    assert len(list(rec.clicks.read())) == limit
    views = [{**click("q1"), "type": "view"} for _ in range(3)]
    assert send(rec, views).accepted == 3  # views are not clicks: not capped
    assert send(rec, [click("q1")], caller=None).accepted == 1  # in-process (the simulator): trusted


def test_a_flood_far_past_the_identity_cap_is_refused(tmp_path: Path) -> None:
    imps = [impression(f"q{i}") for i in range(60)]  # one caller searching the same query again and again
    rec = recorder(tmp_path, *imps, max_clicks_per_identity_query=2)
    for i in range(20):  # 10 times the cap: stored, all but the first 2 flagged
        assert send(rec, [click(f"q{i}")]).accepted == 1
    with pytest.raises(EventsRejected) as info:
        send(rec, [click("q20"), click("q21", 2)])
    msgs = [e["msg"] for e in info.value.errors]
    assert len(msgs) == 2 and all("max_clicks_per_identity_query" in m for m in msgs), msgs
    assert send(rec, [click("q20")], caller=FakeCaller("c-other")).accepted == 1  # another caller is not refused
    flags = [r.flagged for r in rec.clicks.read()]
    assert flags == [None, None] + ["identity_cap"] * 18 + [None]


def test_the_caps_memory_is_bounded_by_count() -> None:
    caps = ClickCaps(5, 20, 4, max_entries=100)
    for i in range(1000):
        r = ClickRecord(
            event_id=f"e{i}", type="click", event_name="c", query_id=f"q{i}", object_ids=["d1"], positions=[1],
            ts=NOW, received_at=NOW, client=f"c-{i}", query=f"query {i}",
        )  # fmt: skip
        assert caps.flag(r, NOW) is None
    assert caps.remembered() <= 3 * 100  # three tables, each at most max_entries
    more = [r.model_copy(update={"event_id": f"x{j}"}) for j in range(5)]  # on the newest impression, q999
    assert [caps.flag(x, NOW) for x in more] == [None] * 4 + ["impression_cap"]  # its count (1) was kept
    assert caps.flag(r, NOW) is None and caps.flag(more[-1], NOW) == "impression_cap"  # retries: as decided


def test_the_jsonl_logs_id_memory_is_bounded_by_count(tmp_path: Path) -> None:
    log = JsonlClickLog(tmp_path, max_ids=100)
    recs = [
        ClickRecord(
            event_id=f"e{i}", type="view", event_name="v", query_id="q", object_ids=["d1"], ts=NOW, received_at=NOW
        )
        for i in range(1000)
    ]
    for i in range(0, 1000, 50):
        assert log.append_many(recs[i : i + 50]) == (50, 0)
    assert log.remembered() <= 100
    assert log.append_many(recs[-10:]) == (0, 10)  # the newest ids are still remembered (retries come soon)
    assert len(list(log.read())) == 1000


def test_an_impression_of_an_index_the_server_does_not_serve_is_unknown(tmp_path: Path) -> None:
    from serving.auth import Principal

    here = Principal(name="web", scopes=frozenset({"events"}), indices=None, served=frozenset({"docs"}), client="a")
    limited = Principal(name="sci", scopes=frozenset({"events"}), indices=frozenset({"docs"}), client="b")
    imps = [impression("q-docs"), impression("q-other", index="other"), impression("q-none", index=None)]
    rec = recorder(tmp_path, *imps)
    for caller in (here, limited):  # a key for all indices on a server that serves only "docs"; a limited key
        assert send(rec, [click("q-docs")], caller).accepted == 1
        for qid in ("q-other", "q-none"):  # another index; an impression naming none (old suggest lines)
            with pytest.raises(EventsRejected) as info:
                send(rec, [click(qid)], caller)
            assert f"unknown query_id {qid!r}" in info.value.errors[0]["msg"]
    assert send(rec, [click("q-other"), click("q-none")], caller=None).accepted == 2  # in-process: any
