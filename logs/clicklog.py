"""The click log: append-only, exactly-once storage of accepted click / conversion / view events.

Same storage choice as the query log (daily JSONL files in the embedded setup, an Elasticsearch index with
Elasticsearch). Every record carries an `event_id`, its idempotency key, scoped by the caller's identity
(`ClickRecord.storage_id`): a retried batch, or the same batch sent to two API replicas, is stored once, and one
client cannot take another's id. JSONL replicas on one machine serialise appends with an advisory
file lock and share the set of ids already written; Elasticsearch stores a record under its id with
create-only semantics, so the cluster decides between racing replicas. A batch is written and synced before
the API answers 202, so an accepted event survives a crash.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import threading
from collections.abc import Callable, Iterator, MutableMapping, Sequence
from datetime import UTC, datetime, timedelta
from itertools import islice
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from logs.clicklog_es import DEFAULT_ES_INDEX, EsClickLog
from logs.durable import fsync_directory
from logs.querylog import RETENTION_DAYS, prune_day_files, purge_es_log, to_utc

log = logging.getLogger("sift.clicklog")

MAX_REMEMBERED_IDS = 500_000  # stored ids the JSONL log holds in memory (about 60 MB); the oldest go first
M = TypeVar("M", bound=MutableMapping[Any, Any])
EventType = Literal["click", "conversion", "view"]


class ClickRecord(BaseModel):
    """One stored event: what the client sent, checked against its impression and enriched with its query."""

    model_config = ConfigDict(extra="ignore")

    event_id: str = Field(description="Idempotency key: sent by the client, or derived from the event's content.")
    type: EventType = Field(description="click, conversion or view.")
    event_name: str = Field(description="The client's name for the event (e.g. 'Result clicked').")
    query_id: str = Field(description="The search or suggest response the event refers to.")
    object_ids: list[str] = Field(description="Documents (search) or suggestion texts (suggest) acted on.")
    positions: list[int] | None = Field(default=None, description="Absolute 1-based positions of object_ids.")
    ts: datetime = Field(description="When the user acted (UTC).")
    received_at: datetime = Field(description="When the API accepted it (UTC).")
    user_token: str | None = None
    session_id: str | None = None
    client: str | None = Field(
        default=None,
        description="Who sent the event as the server knows it (`serving.auth.Principal.identity`: an HMAC of "
        "API key name and client address), not client-chosen; None for events written in-process.",
    )
    index: str | None = Field(default=None, description="Index the impression searched.")
    query: str = Field(default="", description="The impression's query (or typed prefix, for suggest).")
    source: Literal["search", "suggest"] = Field(default="search", description="Kind of impression.")
    flagged: str | None = Field(
        default=None,
        description="Why the event is kept but not trusted (a click cap of `ClickLogConfig` was passed: "
        "'impression_cap', 'identity_cap'); training ignores flagged events. None: a plain event.",
    )

    def storage_id(self) -> str:
        """The id the log stores the event under, i.e. deduplicates on: the client's `event_id` scoped by who sent
        it, so the same client's retry is a duplicate but another client's event under the same id never is (one
        client cannot pre-empt another's event by using its id first). Unscoped when `client` is None
        (in-process events, records written before identities existed)."""
        if self.client is None:
            return self.event_id
        raw = f"{self.client}\x1f{self.event_id}".encode()
        return "k-" + hashlib.sha256(raw).hexdigest()[:32]


@runtime_checkable
class ClickLog(Protocol):
    """Append-only, idempotent event storage that can be replayed."""

    def append_many(self, records: Sequence[ClickRecord]) -> tuple[int, int]:
        """Store the records whose `storage_id` is new; return (written, duplicates). Durable on return."""
        ...

    def read(self, since: datetime | None = None) -> Iterator[ClickRecord]:
        """Records received at or after `since` (all when None), in the order they were stored."""
        ...

    def close(self) -> None:
        """Release files/clients."""


class ClickLogConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    backend: Literal["auto", "jsonl", "es", "none"] = Field(
        default="auto", description="auto follows the index store (embedded → jsonl, es → es); none disables events."
    )
    directory: Path | None = Field(default=None, description="JSONL directory (default <data_dir>/clicklog).")
    es_index: str = Field(default=DEFAULT_ES_INDEX, description="Elasticsearch index of the click log.")
    max_body_bytes: int = Field(default=1_048_576, ge=1024, description="Larger POST /v1/events bodies get 413.")
    max_clock_skew_s: float = Field(default=60.0, ge=0, description="Timestamps further in the future: 422.")
    max_event_age_days: float = Field(
        default=4.0,
        gt=0,
        description="Older timestamps: 422 (as Algolia Insights). Also how long the JSONL log remembers the ids "
        "it stored: a retry of an older event is refused anyway.",
    )
    max_clicks_per_impression: int = Field(
        default=5,
        ge=1,
        description="Clicked or converted objects one response (query_id) may collect; more are stored flagged "
        "'impression_cap' and training ignores them; a batch past 10 times this is refused (422, nothing stored). "
        "Counted per API process, for events sent over the API.",
    )
    max_clicks_per_identity_query: int = Field(
        default=20,
        ge=1,
        description="Clicked or converted objects one caller (API key and client address) may send per query "
        "text per day (UTC); more are stored flagged 'identity_cap' and training ignores them; a batch past 10 "
        "times this is refused (422, nothing stored). Counted per API process, for events sent over the API.",
    )
    retention_days: float = Field(
        default=RETENTION_DAYS,
        gt=0,
        description="Events older than this are deleted: JSONL day files at the first write of each day, "
        "Elasticsearch documents at start and then hourly (on the next write).",
    )

    @property
    def window_days(self) -> float:
        """The acceptance window in days: how old an event (or the impression it refers to) may be, clock skew
        included. What the events API accepts, and so what the id and cap memories must cover."""
        return self.max_event_age_days + self.max_clock_skew_s / 86_400


class JsonlClickLog:
    """`clicklog-YYYY-MM-DD.jsonl` by day received. Appends take an exclusive `flock` on a lock file, read what
    other processes appended since (to learn their event ids), skip duplicates, write, fsync, unlock. An id counts
    as stored only once its write is synced: a failed write is cut off the file and its retry is stored. The ids
    held in memory are those of the acceptance window, at most `max_ids` (the oldest forgotten first: a retry
    comes within minutes, not after a million other events)."""

    def __init__(
        self,
        directory: Path | str,
        retention_days: float | None = None,
        window_days: float | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        max_ids: int = MAX_REMEMBERED_IDS,
    ) -> None:
        """`retention_days`: day files older than this are deleted, checked once a day (None: kept; the app's
        log, from `make_click_log`, always has one). `window_days`: the stored ids of day files older than this
        are forgotten (the events API refuses events that old, so their retries never come; None: remembered)."""
        self.directory = Path(directory)
        self.retention_days = retention_days
        self.window_days = window_days
        self.now = now
        self.max_ids = max_ids
        self._pruned_day = ""
        self._thread_lock = threading.Lock()  # flock does not exclude threads sharing one descriptor
        self._ids: dict[str, dict[str, None]] = {}  # day (YYYY-MM-DD, of the file) → storage ids, in write order
        self._offsets: dict[str, int] = {}

    def path_for(self, ts: datetime) -> Path:
        return self.directory / f"clicklog-{to_utc(ts):%Y-%m-%d}.jsonl"

    def remembered(self) -> int:
        """How many stored ids are held in memory (bounded by the window and by `max_ids`)."""
        return sum(len(ids) for ids in self._ids.values())

    def _oldest_day(self) -> str:
        """Day files before this one are past the window; "" when there is none."""
        if self.window_days is None:
            return ""
        return f"{to_utc(self.now()) - timedelta(days=self.window_days + 1):%Y-%m-%d}"

    def _catch_up(self) -> None:
        oldest = self._oldest_day()
        for day in [d for d in self._ids if d < oldest]:
            del self._ids[day]
        for path in sorted(self.directory.glob("clicklog-*.jsonl")):
            day = path.name.removeprefix("clicklog-").removesuffix(".jsonl")
            if day < oldest:
                continue
            start = self._offsets.get(path.name, 0)
            with open(path, "rb") as f:
                f.seek(start)
                chunk = f.read()
            end = chunk.rfind(b"\n") + 1
            self._offsets[path.name] = start + end
            ids = self._ids.setdefault(day, {})
            for raw in chunk[:end].splitlines():
                try:
                    ids[ClickRecord.model_validate_json(raw).storage_id()] = None
                except ValueError:  # a torn line from a crash: it was never acknowledged
                    continue
        trim_oldest(self._ids, self.max_ids)

    def _stored(self, key: str) -> bool:
        return any(key in ids for ids in self._ids.values())

    def append_many(self, records: Sequence[ClickRecord]) -> tuple[int, int]:
        if not records:
            return 0, 0
        self.directory.mkdir(parents=True, exist_ok=True)
        with self._thread_lock, open(self.directory / ".clicklog.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                self._catch_up()
                fresh: dict[str, ClickRecord] = {}
                for r in records:
                    key = r.storage_id()
                    if key not in fresh and not self._stored(key):
                        fresh[key] = r
                self._prune()
                by_day: dict[Path, dict[str, ClickRecord]] = {}
                for key, r in fresh.items():
                    by_day.setdefault(self.path_for(r.received_at), {})[key] = r
                for path, day_records in by_day.items():
                    self._write(path, [r.model_dump_json(exclude_none=True) for r in day_records.values()])
                    day = path.name.removeprefix("clicklog-").removesuffix(".jsonl")
                    self._ids.setdefault(day, {}).update(dict.fromkeys(day_records))  # only now: it is durable
                trim_oldest(self._ids, self.max_ids)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
        return len(fresh), len(records) - len(fresh)

    def _prune(self) -> None:
        """Drop day files past the retention, once a day (under the append lock)."""
        today = f"{to_utc(self.now()):%Y-%m-%d}"
        if self.retention_days is not None and today != self._pruned_day:
            for path in prune_day_files(self.directory, "clicklog", self.retention_days, now=self.now()):
                self._offsets.pop(path.name, None)
            self._pruned_day = today

    def _write(self, path: Path, lines: list[str]) -> None:
        """Append and fsync (the directory too, for a new file); on failure the file is cut back to its old
        length, so the lines never become ids a retry would be refused under."""
        created = not path.exists()
        size = 0 if created else path.stat().st_size
        if size and self._offsets.get(path.name, 0) != size:  # a crash left a torn line: start on a fresh one
            lines[0] = "\n" + lines[0]
        data = ("\n".join(lines) + "\n").encode()
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            except OSError:
                try:
                    os.ftruncate(fd, size)
                except OSError as exc:  # the torn tail is skipped by readers and by the next write
                    log.error("click log: could not cut a failed write off %s: %s", path.name, exc)
                raise
        finally:
            os.close(fd)
        if created:
            fsync_directory(self.directory)
        self._offsets[path.name] = size + len(data)

    def read(self, since: datetime | None = None) -> Iterator[ClickRecord]:
        if not self.directory.exists():
            return
        since_utc = to_utc(since) if since else None
        first_day = f"clicklog-{since_utc:%Y-%m-%d}.jsonl" if since_utc else ""
        for path in sorted(self.directory.glob("clicklog-*.jsonl")):
            if path.name < first_day:
                continue
            with open(path, encoding="utf-8") as f:
                for n, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    try:
                        rec = ClickRecord.model_validate_json(line)
                    except ValueError:
                        log.warning("skipping unreadable click-log line %s:%d", path, n)
                        continue
                    if since_utc is None or to_utc(rec.received_at) >= since_utc:
                        yield rec

    def close(self) -> None:
        return None


def trim_oldest(table: MutableMapping[str, M], limit: int) -> None:
    """Drop the oldest entries of a day → entries table (days `YYYY-MM-DD`, entries in insertion order) until it
    holds at most `limit`; a tenth of `limit` more goes at once, so a full table is not trimmed at every insert."""
    total = sum(len(entries) for entries in table.values())
    if total <= limit:
        return
    excess = total - limit + limit // 10
    for day in sorted(table):
        entries = table[day]
        if len(entries) <= excess:
            excess -= len(entries)
            del table[day]
        else:
            for key in list(islice(entries, excess)):
                del entries[key]
            excess = 0
        if excess <= 0:
            return


def make_click_log(
    config: ClickLogConfig, store_kind: str, data_dir: Path | None = None, es_client: Any = None
) -> ClickLog | None:
    """The click log of a deployment, or None when events are disabled (`backend: none`)."""
    backend = config.backend
    if backend == "auto":
        backend = "es" if store_kind == "es" else "jsonl"
    if backend == "none":
        return None
    if backend == "es":
        if es_client is None:
            raise ValueError("the Elasticsearch click log needs an Elasticsearch client")
        try:
            purge_es_log(es_client, config.es_index, config.retention_days, field="received_at")
        except Exception as exc:  # an unreachable cluster must not keep the API down; the next start retries
            log.warning("retention: purging %s failed: %s", config.es_index, type(exc).__name__)
        return EsClickLog(es_client, config.es_index, config.retention_days)
    directory = config.directory
    if directory is None:
        if data_dir is None:
            raise ValueError("the JSONL click log needs a directory or a data_dir")
        directory = data_dir / "clicklog"
    return JsonlClickLog(directory, config.retention_days, window_days=config.window_days)
