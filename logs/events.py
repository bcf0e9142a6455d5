"""Impressions and user events: what was shown (logged by the server) and what users did with it.

A search or suggest response is an impression: the server logs it in the query log under a fresh `query_id`
(query, index, session/user token, ids shown with their absolute positions, the versions that ranked them),
so no client work is needed for that half. Clients then send click / conversion / view events in the shape
users of Algolia Insights and OpenSearch UBI know. `EventRecorder` checks each event against its impression
(a click on a position that was never shown is refused, not stored) and writes a batch all or nothing: one
bad event rejects the batch with a message per event, so a client fixes and resends it, and the idempotency
ids make that resend safe. Events are scoped by their caller (API key and address): an impression of an index
it may not read (not served here, or not its key's) is unknown to it, its identity is stored on every record
(idempotency ids are its own, and training counts one caller once), and clicks past the caps of
`logs.click_caps` are stored flagged (far past them, the batch is refused).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from logs.click_caps import ClickCaps, FloodRefused
from logs.clicklog import ClickLog, ClickLogConfig, ClickRecord, EventType
from logs.querylog import QueryEvent, QueryLog, to_utc
from search.service import SearchRequest, SearchResponse

MAX_EVENTS = 1000
LOOKUP_POLL_S = 0.25  # between looks for an impression another replica has not flushed yet
LOOKUP_SLACK = 3.0  # look for up to this many flush intervals before calling a query_id unknown
MAX_OBJECTS = 20


class EventIn(BaseModel):
    """One event as a client sends it."""

    model_config = ConfigDict(extra="forbid")

    type: EventType = Field(description="click (needs positions), conversion or view.")
    event_name: str = Field(min_length=1, max_length=64, description="Your name for it, e.g. 'Result clicked'.")
    query_id: str = Field(min_length=1, max_length=64, description="`query_id` of the search or suggest response.")
    object_ids: list[str] = Field(
        min_length=1, max_length=MAX_OBJECTS, description="Document ids (search) or suggestion texts (suggest)."
    )
    positions: list[int] | None = Field(
        default=None, description="1-based absolute positions of object_ids in the response (offset included)."
    )
    user_token: str | None = Field(default=None, max_length=200, description="Opaque user id.")
    session_id: str | None = Field(default=None, max_length=200, description="Opaque session id.")
    timestamp: datetime | None = Field(
        default=None, description="When the user acted: epoch milliseconds or ISO 8601 (default: when received)."
    )
    event_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=128,
        description="Idempotency id: an event this API key and address already stored under it is not stored "
        "again (default: a hash of the event's type, query_id, objects, positions and timestamp).",
    )

    @field_validator("timestamp")
    @classmethod
    def _in_utc(cls, ts: datetime | None) -> datetime | None:
        """The timestamp in UTC, checked here: a time whose offset takes it past year 1 or 9999 (e.g.
        9999-12-31T23:59:59-01:00) cannot be converted, and must be a 422, not an error later."""
        if ts is None:
            return None
        try:
            return to_utc(ts)
        except OverflowError:
            raise ValueError("timestamp out of range: in UTC it falls outside years 1 to 9999") from None

    @model_validator(mode="after")
    def _positions_match(self) -> EventIn:
        if self.positions is not None:
            if len(self.positions) != len(self.object_ids):
                raise ValueError("positions must have one entry per object id")
            if any(p < 1 for p in self.positions):
                raise ValueError("positions are 1-based")
        elif self.type == "click":
            raise ValueError("a click needs positions")
        if any(not o or len(o) > 512 for o in self.object_ids):
            raise ValueError("object ids must be 1 to 512 characters")
        return self

    def idempotency_id(self) -> str:
        """The client's event_id, else a hash of what the user did: not of `event_name`, `user_token` or
        `session_id`, which a replay could vary to have the same click counted twice."""
        if self.event_id:
            return self.event_id
        ts = to_utc(self.timestamp).isoformat() if self.timestamp else None
        content = [self.type, self.query_id, self.object_ids, self.positions, ts]
        raw = json.dumps(content, separators=(",", ":"))
        return "h-" + hashlib.sha256(raw.encode()).hexdigest()[:32]


class EventsBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    events: list[EventIn] = Field(min_length=1, max_length=MAX_EVENTS, description="1 to 1,000 events.")


class EventsAccepted(BaseModel):
    accepted: int = Field(description="Events stored now.")
    duplicates: int = Field(description="Events already stored under the same idempotency id (not stored again).")
    event_ids: list[str] = Field(description="The idempotency id of each event, in request order.")


class EventsRejected(Exception):
    """One message per bad event (FastAPI's error shape); nothing of the batch was written."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__(f"{len(errors)} event error(s)")
        self.errors = errors


def _err(i: int, field: str, msg: str) -> dict[str, Any]:
    return {"loc": ["body", "events", i, field], "msg": msg, "type": "value_error"}


class Caller(Protocol):
    """Who sent a batch, as the server knows it (`serving.auth.Principal` is one)."""

    @property
    def identity(self) -> str:
        """A digest of API key name and client address: what click caps and idempotency are scoped by."""
        ...

    def may_read(self, index: str) -> bool:
        """Whether the caller may read `index` (or its alias): the server serves it and the caller's key may."""
        ...


def _visible(caller: Caller | None, imp: QueryEvent) -> bool:
    """Whether `caller` may send events on `imp`: in-process callers (None) on any; API callers on impressions of
    an index they may read (an impression naming none, a suggest line logged before they named theirs, is not)."""
    return caller is None or (imp.index is not None and caller.may_read(imp.index))


class EventRecorder:
    """Checks events against the impressions in the query log and stores the batch in the click log."""

    def __init__(
        self,
        impressions: QueryLog,
        clicks: ClickLog,
        config: ClickLogConfig,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.impressions = impressions
        self.clicks = clicks
        self.config = config
        self.now = now
        self.caps = ClickCaps(
            config.max_clicks_per_impression, config.max_clicks_per_identity_query, config.window_days
        )

    async def _lookup(self, query_ids: set[str]) -> dict[str, QueryEvent]:
        found = await asyncio.to_thread(self.impressions.impressions, sorted(query_ids))
        missing = query_ids - set(found)
        wait = self.impressions.lookup_retry_s
        # Another replica may still hold the impression in its write buffer: poll until it should have flushed,
        # with slack for a loaded machine (a bulk write then takes longer than the flush interval).
        deadline = time.monotonic() + LOOKUP_SLACK * wait
        while missing and wait > 0 and time.monotonic() < deadline:
            await asyncio.sleep(min(LOOKUP_POLL_S, wait))
            found.update(await asyncio.to_thread(self.impressions.impressions, sorted(missing)))
            missing = query_ids - set(found)
        return found

    async def record(self, batch: EventsBatch, caller: Caller | None = None) -> EventsAccepted:
        """Check and store a batch sent by `caller` (None: in-process, e.g. the click simulator): impressions of
        indices the caller may not read are unknown to it, and every record carries its identity."""
        found = await self._lookup({e.query_id for e in batch.events})
        found = {q: imp for q, imp in found.items() if _visible(caller, imp)}
        now = self.now()
        records: list[ClickRecord] = []
        errors: list[dict[str, Any]] = []
        for i, ev in enumerate(batch.events):
            rec_or_errors = self.check(i, ev, found.get(ev.query_id), now, caller)
            if isinstance(rec_or_errors, ClickRecord):
                records.append(rec_or_errors)
            else:
                errors.extend(rec_or_errors)
        if errors:
            raise EventsRejected(errors)
        if caller is not None:  # counted once the batch is valid (a rejected one spends no cap); in-process: trusted
            try:
                flags = self.caps.decide([(rec, found[rec.query_id].ts) for rec in records])
            except FloodRefused as exc:  # far past a cap: nothing of the batch is stored or counted
                raise EventsRejected([_err(i, "query_id", msg) for i, msg in sorted(exc.refused.items())]) from None
            for rec, flag in zip(records, flags, strict=True):
                rec.flagged = flag
        unique = list({r.storage_id(): r for r in records}.values())
        written, duplicates = await asyncio.to_thread(self.clicks.append_many, unique)
        in_batch = len(records) - len(unique)  # the same event twice in one batch
        return EventsAccepted(
            accepted=written, duplicates=duplicates + in_batch, event_ids=[r.event_id for r in records]
        )

    def check(
        self, i: int, ev: EventIn, imp: QueryEvent | None, now: datetime, caller: Caller | None = None
    ) -> ClickRecord | list[dict[str, Any]]:
        """The record to store, or the reasons this event cannot be stored. An impression older than the
        acceptance window is unknown, as if the query log had dropped it: the click caps count an impression's
        clicks only that long."""
        if imp is None or to_utc(imp.ts) < now - timedelta(days=self.config.window_days):
            return [_err(i, "query_id", f"unknown query_id {ev.query_id!r}: no recent search or suggest response")]
        errors: list[dict[str, Any]] = []
        ts = to_utc(ev.timestamp) if ev.timestamp else now
        skew = timedelta(seconds=self.config.max_clock_skew_s)
        if ts > now + skew:
            errors.append(_err(i, "timestamp", f"timestamp {ts.isoformat()} is in the future"))
        elif ts < now - timedelta(days=self.config.max_event_age_days):
            errors.append(_err(i, "timestamp", f"timestamp {ts.isoformat()} is older than the events kept"))
        elif ts < to_utc(imp.ts) - skew:
            errors.append(_err(i, "timestamp", "timestamp is before the response it refers to"))
        errors.extend(_position_errors(i, ev, imp))
        if errors:
            return errors
        return ClickRecord(
            event_id=ev.idempotency_id(),
            type=ev.type,
            event_name=ev.event_name,
            query_id=ev.query_id,
            object_ids=ev.object_ids,
            positions=ev.positions,
            ts=ts,
            received_at=now,
            user_token=imp.user_token or ev.user_token,  # the impression's, if logged: an event cannot relabel it
            session_id=imp.session_id or ev.session_id,
            client=caller.identity if caller is not None else None,
            index=imp.index,
            query=imp.query,
            source="suggest" if imp.type == "suggest" else "search",
        )


def _position_errors(i: int, ev: EventIn, imp: QueryEvent) -> list[dict[str, Any]]:
    shown = imp.shown or []
    first = (imp.offset or 0) + 1
    last = first + len(shown) - 1
    errors: list[dict[str, Any]] = []
    if ev.positions is None:
        for obj in ev.object_ids:
            if obj not in shown:
                errors.append(_err(i, "object_ids", f"{obj!r} was not shown in response {ev.query_id}"))
        return errors
    for obj, pos in zip(ev.object_ids, ev.positions, strict=True):
        if not first <= pos <= last:
            span = f"positions {first}–{last}" if shown else "nothing"
            errors.append(_err(i, "positions", f"position {pos} was never shown (the response showed {span})"))
        elif shown[pos - first] != obj:
            errors.append(_err(i, "positions", f"position {pos} showed {shown[pos - first]!r}, not {obj!r}"))
    return errors


def impression_for(
    req: SearchRequest, resp: SearchResponse, versions: Mapping[str, str], client: str | None = None
) -> QueryEvent:
    """The impression of one served search: what /v1/search logs, and what an in-process simulation logs.
    `client`: who sent it as the server knows it (`Principal.identity`); None in-process."""
    return search_impression(
        resp.query_id,
        resp.request_id,
        req.query,
        resp.index,
        [r.id for r in resp.results],
        offset=resp.offset,
        session_id=req.session_id,
        user_token=req.user_token,
        versions={**versions, "stages": ",".join(resp.stages)},
        explored=resp.explored or None,
        swapped=resp.swapped,
        features=resp.features,
        teams=resp.teams,
        client=client,
    )


def search_impression(
    query_id: str,
    request_id: str,
    query: str,
    index: str,
    shown: Sequence[str],
    offset: int = 0,
    session_id: str | None = None,
    user_token: str | None = None,
    versions: Mapping[str, str] | None = None,
    explored: bool | None = None,
    features: Mapping[str, list[float | None]] | None = None,
    teams: Sequence[str] | None = None,
    client: str | None = None,
    swapped: Sequence[int] | None = None,
) -> QueryEvent:
    """The query-log line of one search response (also what suggestions learn from)."""
    return QueryEvent(
        type="search",
        query=query,
        result_count=len(shown),
        request_id=request_id,
        query_id=query_id,
        session_id=session_id,
        user_token=user_token,
        index=index,
        shown=list(shown),
        offset=offset,
        versions=dict(versions) if versions else None,
        explored=explored,
        swapped=list(swapped) if swapped else None,
        features=dict(features) if features else None,
        teams=list(teams) if teams else None,
        client=client,
    )


def suggest_impression(
    query_id: str,
    prefix: str,
    shown: Sequence[str],
    session_id: str | None = None,
    user_token: str | None = None,
    versions: Mapping[str, str] | None = None,
    client: str | None = None,
    index: str | None = None,
) -> QueryEvent:
    """The query-log line of one suggest response (`shown` are the suggestion texts). `index`: the index whose
    searches the suggestions come from (the server's default): events on them need the right to read it."""
    return QueryEvent(
        type="suggest",
        query=prefix,
        result_count=len(shown),
        request_id=query_id,
        query_id=query_id,
        session_id=session_id,
        user_token=user_token,
        index=index,
        shown=list(shown),
        versions=dict(versions) if versions else None,
        client=client,
    )
