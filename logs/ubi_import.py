"""Importing a click log from outside: UBI NDJSON (queries and events) or the plain JSONL shape, appended to the
configured query log and click log as impressions and click records.

Why these rules: training must not learn from what it cannot check, and an operator must see what was left out.
Every line is read, parsed and checked (a query, a clicked object that the impression showed, a time); a line
that fails is counted and written to a dead-letter file with its line number, never dropped in silence. An
event whose query_id names no impression (in the input or already in the log) is reported the same way. Ids
are the input's or derived from its content, and what the logs hold already is skipped, so importing the same
file twice stores nothing new.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError
from tqdm import tqdm

from logs.clicklog import ClickLog, ClickRecord
from logs.querylog import QueryEvent, QueryLog, to_utc
from logs.ubi import (
    ACTIONS,
    PlainSearch,
    UbiEventIn,
    UbiQueryIn,
    _is_sift,
    digest,
    impression_from_ubi,
    kind,
    unwrap,
)

WHOLE_FILE_LIMIT = 64 * 1024 * 1024  # a pretty-printed JSON file (not NDJSON) is read whole up to this size
APPEND_BATCH = 500


@dataclass
class Line:
    source: str
    line: int
    raw: str


@dataclass
class PendingEvent:
    """An event read from the input, before it is joined with its impression."""

    at: Line
    type: Literal["click", "conversion", "view"]
    query_id: str
    objects: list[str]
    ordinals: list[int | None]
    ts: datetime
    event_name: str
    received_at: datetime | None = None
    session_id: str | None = None
    user_token: str | None = None
    client: str | None = None
    event_id: str | None = None
    index: str | None = None
    flagged: str | None = None
    position_sent: bool = True
    parts: tuple[int, int] = (0, 1)


class ImportReport(BaseModel):
    """What an import read, stored, skipped and refused."""

    lines: int = Field(default=0, description="Non-blank lines (documents) read.")
    impressions_read: int = 0
    impressions_written: int = 0
    impressions_existing: int = Field(default=0, description="Already in the query log (or twice in the input).")
    events_read: int = 0
    records_written: int = 0
    records_existing: int = Field(default=0, description="Already in the click log (or twice in the input).")
    ignored_actions: dict[str, int] = Field(
        default_factory=dict, description="Events of actions Sift does not learn from (page_exit...), by name."
    )
    bulk_action_lines: int = Field(default=0, description='`{"index": ...}` lines of a bulk file, skipped.')
    positions_corrected: int = Field(
        default=0, description="Events whose ordinal disagreed with where the impression showed the object."
    )
    no_timestamp: int = Field(default=0, description="Queries without a timestamp: given the import's time.")
    past_retention: int = Field(
        default=0,
        description="Impressions and records older than the logs' retention_days: not written (the log's retention "
        "would delete them); raise query_log/click_log retention_days to keep older history.",
    )
    rejected: int = Field(default=0, description="Lines refused (bad JSON or fields, unshown objects).")
    orphans: int = Field(default=0, description="Events whose query_id names no impression: refused.")
    dead_letter: str | None = Field(default=None, description="Where the refused lines were written.")


def read_lines(path: Path) -> Iterator[tuple[Line, Any, str | None]]:
    """(line, parsed JSON or None, error or None) per non-blank line; a file that is one pretty-printed JSON
    document (object or array) is read as that document (or its items)."""
    first = True
    with open(path, encoding="utf-8", errors="replace") as f:
        for n, raw in enumerate(f, 1):
            text = raw.strip()
            if not text:
                continue
            try:
                doc = json.loads(text)
            except json.JSONDecodeError as exc:
                whole = _whole(path) if first and path.stat().st_size <= WHOLE_FILE_LIMIT else None
                if whole is not None:
                    for i, item in enumerate(whole if isinstance(whole, list) else [whole], 1):
                        yield Line(str(path), i, json.dumps(item)[:2000]), item, None
                    return
                yield Line(str(path), n, text[:2000]), None, f"not JSON: {exc.msg} (column {exc.colno})"
            else:
                yield Line(str(path), n, text[:2000]), doc, None
            first = False


def _whole(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None


def _error(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'document'}: {e['msg']}" for e in exc.errors()[:5])
    return str(exc)


def _object_and_ordinal(attrs: dict[str, Any]) -> tuple[str | None, int | None]:
    obj = attrs.get("object") if isinstance(attrs.get("object"), dict) else {}
    oid = obj.get("object_id") if obj else None
    if _is_str_or_int(attrs.get("object_id")):  # Sift's export: the full id when longer than UBI allows
        oid = attrs["object_id"]
    pos = attrs.get("position") if isinstance(attrs.get("position"), dict) else {}
    ordinal = pos.get("ordinal", pos.get("index")) if pos else None
    if ordinal is not None and (isinstance(ordinal, bool) or not isinstance(ordinal, int)):
        raise ValueError("event_attributes.position.ordinal must be an integer")
    if oid is not None and not _is_str_or_int(oid):
        raise ValueError("event_attributes.object.object_id must be a string or an integer")
    return (str(oid) if oid is not None and str(oid) else None), ordinal


def _is_str_or_int(v: Any) -> bool:
    return isinstance(v, str | int) and not isinstance(v, bool)


@dataclass
class Importer:
    """Collects impressions and events from input files, then joins, deduplicates and appends them (`run`)."""

    qlog: QueryLog
    clog: ClickLog
    default_index: str | None = None
    now: datetime = field(default_factory=lambda: datetime.now(UTC))
    progress: bool = True
    retention_days: float | None = None
    report: ImportReport = field(default_factory=ImportReport)
    impressions: dict[str, QueryEvent] = field(default_factory=dict)
    events: list[PendingEvent] = field(default_factory=list)
    refused: list[dict[str, Any]] = field(default_factory=list)
    _actions: Counter[str] = field(default_factory=Counter)

    def reject(self, at: Line, reason: str, orphan: bool = False) -> None:
        self.refused.append({"file": at.source, "line": at.line, "reason": reason, "text": at.raw})
        if orphan:
            self.report.orphans += 1
        else:
            self.report.rejected += 1

    def add_ubi(self, path: Path, expect: Literal["query", "event"] | None = None) -> None:
        """A UBI NDJSON file: queries, events, or both mixed (`expect` None)."""
        for at, doc, err in read_lines(path):
            self.report.lines += 1
            if err is not None:
                self.reject(at, err)
                continue
            try:
                ubi = unwrap(doc)
                if ubi is None:
                    self.report.bulk_action_lines += 1
                    continue
                got = kind(ubi)
                if expect is not None and got != expect:
                    raise ValueError(f"a UBI {got} in the {expect} file")
                if got == "query":
                    self._add_query(at, UbiQueryIn.model_validate(ubi))
                else:
                    self._add_event(at, UbiEventIn.model_validate(ubi))
            except (ValidationError, ValueError, TypeError) as exc:
                self.reject(at, _error(exc))

    def _add_query(self, at: Line, q: UbiQueryIn) -> None:
        self.report.impressions_read += 1
        if q.timestamp is None:
            self.report.no_timestamp += 1
        imp = impression_from_ubi(q, self.default_index, self.now)
        self._keep(imp)

    def _keep(self, imp: QueryEvent) -> None:
        assert imp.query_id
        if imp.query_id in self.impressions:
            self.report.impressions_existing += 1
        else:
            self.impressions[imp.query_id] = imp

    def _add_event(self, at: Line, ev: UbiEventIn) -> None:
        self.report.events_read += 1
        etype = ACTIONS.get(ev.action_name)
        if etype is None:
            self._actions[ev.action_name[:100]] += 1
            return
        if not ev.query_id:
            raise ValueError(f"a {ev.action_name} event needs a query_id (the search it refers to)")
        attrs = ev.event_attributes
        obj, ordinal = _object_and_ordinal(attrs)
        if obj is None:
            raise ValueError(f"a {ev.action_name} event needs event_attributes.object.object_id")
        if etype == "click" and ordinal is None:
            raise ValueError("a click needs event_attributes.position.ordinal")
        session = ev.session_id or (attrs.get("session_id") if isinstance(attrs.get("session_id"), str) else None)
        pending = PendingEvent(
            at=at, type=etype, query_id=ev.query_id, objects=[obj], ordinals=[ordinal], ts=ev.timestamp,
            event_name=ev.action_name, session_id=session, user_token=ev.user_id, client=ev.client_id,
        )  # fmt: skip
        if _is_sift(ev.application):
            self._sift_extras(pending, attrs)
        self.events.append(pending)

    @staticmethod
    def _sift_extras(p: PendingEvent, attrs: dict[str, Any]) -> None:
        """Fields only Sift's own export writes (a record's idempotency id, name, flag, parts)."""
        checked = PendingExtras.model_validate(attrs)
        p.event_id, p.event_name = checked.event_id, checked.event_name or p.event_name
        p.received_at, p.index, p.flagged = checked.received_at, checked.index, checked.flagged
        p.position_sent = checked.position_sent
        p.parts = (checked.part, checked.parts)
        p.query_id = checked.query_id or p.query_id
        p.session_id = checked.session_id or p.session_id
        p.user_token = checked.user_token or p.user_token
        p.client = checked.client or p.client

    def add_plain(self, path: Path) -> None:
        """The plain JSONL shape (`logs.ubi.PlainSearch`), one search per line."""
        for at, doc, err in read_lines(path):
            self.report.lines += 1
            if err is not None:
                self.reject(at, err)
                continue
            try:
                s = PlainSearch.model_validate(doc)
                self._add_plain(at, s)
            except (ValidationError, ValueError) as exc:
                self.reject(at, _error(exc))

    def _add_plain(self, at: Line, s: PlainSearch) -> None:
        qid = s.query_id or "jsonl-" + digest(s.query, s.time.isoformat(), s.shown, s.session, s.user, s.offset)
        imp = QueryEvent(
            type="search", ts=s.time, query=s.query, result_count=len(s.shown), session_id=s.session,
            index=s.index or self.default_index, query_id=qid, shown=s.shown, offset=s.offset, user_token=s.user,
        )  # fmt: skip
        for c in s.clicks:  # checked before anything of the line is kept: a bad click refuses the line
            if c.id not in s.shown:
                raise ValueError(f"clicked {c.id!r} is not in shown")
        self.report.impressions_read += 1
        self._keep(imp)
        for c in s.clicks:
            self.report.events_read += 1
            pending = PendingEvent(
                at=at, type=c.type, query_id=qid, objects=[c.id], ordinals=[c.position], ts=c.time or s.time,
                event_name=c.type, session_id=s.session, user_token=s.user,
            )  # fmt: skip
            self.events.append(pending)


class PendingExtras(BaseModel):
    """Sift's extras in `event_attributes` of its own export."""

    event_id: str | None = Field(default=None, min_length=1, max_length=128)
    event_name: str | None = Field(default=None, max_length=64)
    received_at: datetime | None = None
    index: str | None = None
    flagged: str | None = None
    position_sent: bool = True
    part: int = Field(default=0, ge=0)
    parts: int = Field(default=1, ge=1)
    query_id: str | None = None
    session_id: str | None = None
    user_token: str | None = None
    client: str | None = None


def merge_parts(events: list[PendingEvent]) -> list[PendingEvent]:
    """Sift's export writes a record acting on n objects as n UBI events (`part` i of `parts` n): put them back
    into one record, objects in part order; incomplete groups stay one event per part."""
    groups: dict[tuple[str | None, str | None, str], list[PendingEvent]] = {}
    out: list[PendingEvent] = []
    for ev in events:
        if ev.parts[1] == 1 or ev.event_id is None:
            out.append(ev)
            continue
        key = (ev.event_id, ev.client, ev.query_id)
        if key not in groups:
            groups[key] = []
            out.append(ev)  # the group's place in the order
        groups[key].append(ev)
    merged: list[PendingEvent] = []
    for ev in out:
        group = groups.get((ev.event_id, ev.client, ev.query_id)) if ev.parts[1] > 1 else None
        if group is None:
            merged.append(ev)
            continue
        parts = sorted({p.parts[0]: p for p in group}.values(), key=lambda p: p.parts[0])
        if len(parts) != ev.parts[1]:  # a part is missing: each keeps its own derived id
            for p in parts:
                p.event_id = f"{p.event_id}#{p.parts[0]}"
            merged.extend(parts)
            continue
        ev.objects = [o for p in parts for o in p.objects]
        ev.ordinals = [o for p in parts for o in p.ordinals]
        merged.append(ev)
    return merged


def _place(ev: PendingEvent, imp: QueryEvent) -> tuple[list[int], int] | str:
    """The 1-based absolute positions of the event's objects on its impression (and how many ordinals said
    otherwise: 0-based or page-relative producers), or why it cannot be placed."""
    shown, first = imp.shown or [], imp.offset or 0
    if not shown:
        return f"impression {ev.query_id!r} lists no shown results: the event cannot be placed"
    positions, corrected = [], 0
    for obj, ordinal in zip(ev.objects, ev.ordinals, strict=True):
        if obj not in shown:
            return f"{obj!r} was not shown in impression {ev.query_id!r}"
        if ordinal is not None and 0 <= ordinal - first - 1 < len(shown) and shown[ordinal - first - 1] == obj:
            positions.append(ordinal)
            continue
        positions.append(first + shown.index(obj) + 1)
        corrected += ordinal is not None and ev.position_sent
    return positions, corrected


def _record(ev: PendingEvent, imp: QueryEvent, positions: list[int]) -> ClickRecord:
    sent = positions if ev.position_sent else None
    event_id = ev.event_id or "ubi-" + digest(ev.type, ev.query_id, ev.objects, positions, ev.ts.isoformat())
    return ClickRecord(
        event_id=event_id, type=ev.type, event_name=ev.event_name[:64], query_id=ev.query_id,
        object_ids=ev.objects, positions=sent, ts=ev.ts, received_at=ev.received_at or ev.ts,
        user_token=imp.user_token or ev.user_token, session_id=imp.session_id or ev.session_id, client=ev.client,
        index=ev.index or imp.index, query=imp.query, source="suggest" if imp.type == "suggest" else "search",
        flagged=ev.flagged,
    )  # fmt: skip


def run_import(im: Importer, dead_letter: Path | None) -> ImportReport:
    """Join the collected events with their impressions (in the input or already logged), skip what the logs
    hold, append the rest (impressions first, so a click never precedes its search), write the refused lines
    to `dead_letter`. The query log and click log are read once, whole: the price of idempotence."""
    report = im.report
    events = merge_parts(im.events)
    wanted = {ev.query_id for ev in events}
    logged: dict[str, QueryEvent] = {}
    known: set[str] = set()
    for e in im.qlog.read():
        if e.query_id:
            known.add(e.query_id)
            if e.query_id in wanted:
                logged[e.query_id] = e
    fresh = [imp for qid, imp in im.impressions.items() if qid not in known]
    report.impressions_existing += len(im.impressions) - len(fresh)
    first_event: dict[str, PendingEvent] = {}
    for ev in events:
        first_event.setdefault(ev.query_id, ev)
    for i, imp in enumerate(fresh):  # UBI queries carry no session or user: their events do
        ev0 = first_event.get(imp.query_id or "")
        if ev0 is not None and imp.session_id is None and imp.user_token is None:
            fresh[i] = imp.model_copy(update={"session_id": ev0.session_id, "user_token": ev0.user_token})
    by_id = {**logged, **{imp.query_id: imp for imp in fresh if imp.query_id}}
    records: list[ClickRecord] = []
    for ev in events:
        target = by_id.get(ev.query_id)
        if target is None:
            im.reject(ev.at, f"no impression with query_id {ev.query_id!r} in the input or the query log", True)
            continue
        placed = _place(ev, target)
        if isinstance(placed, str):
            im.reject(ev.at, placed)
            continue
        report.positions_corrected += placed[1]
        records.append(_record(ev, target, placed[0]))
    stored = {r.storage_id() for r in im.clog.read()}
    unique = {r.storage_id(): r for r in records if r.storage_id() not in stored}
    report.records_existing += len(records) - len(unique)
    if im.retention_days is not None:  # the logs delete what is older: writing it would only look imported
        cutoff = im.now - timedelta(days=im.retention_days)
        kept = [imp for imp in fresh if to_utc(imp.ts) >= cutoff]
        recent = {k: r for k, r in unique.items() if to_utc(r.received_at) >= cutoff}
        report.past_retention = len(fresh) - len(kept) + len(unique) - len(recent)
        fresh, unique = kept, recent
    bar = tqdm(total=len(fresh) + len(unique), unit="line", disable=not im.progress, desc="importing")
    for imp in fresh:
        im.qlog.append(imp)
        bar.update(1)
    im.qlog.flush()
    report.impressions_written = len(fresh)
    batch = list(unique.values())
    for start in range(0, len(batch), APPEND_BATCH):
        written, _ = im.clog.append_many(batch[start : start + APPEND_BATCH])
        report.records_written += written
        bar.update(len(batch[start : start + APPEND_BATCH]))
    bar.close()
    report.ignored_actions = dict(im._actions)
    if im.refused and dead_letter is not None:
        dead_letter.parent.mkdir(parents=True, exist_ok=True)
        with open(dead_letter, "w", encoding="utf-8") as f:
            for row in im.refused:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        report.dead_letter = str(dead_letter)
    return report
