"""The query log: an append-only record of what users searched (and, later, what they clicked).

Suggestions and related searches are learnt from it, so it must survive restarts and be shareable by
several API replicas: daily-rotated JSONL files in the embedded setup, an Elasticsearch index in the
Elasticsearch setup. Every event carries a `type` so click events can join later without a migration.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, field_validator

from logs.durable import fsync_directory
from search.pii import scrub_pii  # the scrubber lives with the PII detector (search.pii); importable here too

log = logging.getLogger("sift.querylog")

DEFAULT_ES_INDEX = "sift-querylog"
RETENTION_DAYS = 90.0


class QueryEvent(BaseModel):
    """One logged event. A search (or a suggest response) is an impression: `query_id` names it and `shown` lists
    what was shown from absolute position `offset + 1` on, so click events can be checked and joined later."""

    model_config = ConfigDict(extra="ignore")

    type: Literal["search", "suggest", "click"] = Field(default="search", description="Event kind.")
    ts: datetime = Field(default_factory=lambda: datetime.now(UTC), description="When it happened (UTC).")
    query: str = Field(
        description="The query as the user sent it, with e-mails and phone/card numbers replaced by placeholders "
        "(`search.pii.scrub_pii`)."
    )
    result_count: int = Field(default=0, ge=0, description="Results returned on the page.")
    request_id: str = Field(default="", description="The search response's request id.")
    session_id: str | None = Field(default=None, description="Opaque session id, if the client sent one.")
    index: str | None = Field(default=None, description="Index (alias) searched.")
    doc_id: str | None = Field(default=None, description="Clicked document (click events).")
    position: int | None = Field(default=None, description="Rank of the clicked result (click events).")
    query_id: str | None = Field(default=None, description="The response's query id (impressions).")
    shown: list[str] | None = Field(default=None, description="Doc ids (search) or suggestions shown, in order.")
    offset: int | None = Field(default=None, ge=0, description="Absolute position of shown[0] minus 1 (pagination).")
    user_token: str | None = Field(default=None, description="Opaque user token, if the client sent one.")
    client: str | None = Field(
        default=None,
        description="Who sent the request as the server knows it (an HMAC of API key name and client address "
        "under the deployment's secret, `serving.auth.Principal.identity`; an import's UBI client_id); unlike "
        "session_id/user_token an API client cannot choose it. None for impressions logged in-process.",
    )
    versions: dict[str, str] | None = Field(default=None, description="Ranker/model versions that produced it.")
    explored: bool | None = Field(default=None, description="The top results were randomised (exploration).")
    swapped: list[int] | None = Field(
        default=None,
        description="Adjacent-swap exploration (`exploration.mode: adjacent_swap`): the two 1-based ranks whose "
        "results were swapped on this page; None when the page was not explored or was shuffled.",
    )
    teams: list[str] | None = Field(
        default=None, description="Interleaving: the team (a or b) of each shown result, in order."
    )
    features: dict[str, list[float | None]] | None = Field(
        default=None, description="Ranking features per shown doc id (ranking.features.FEATURES order), as served."
    )

    @field_validator("query")
    @classmethod
    def _scrubbed(cls, v: str) -> str:
        return scrub_pii(v)

    @property
    def issuer(self) -> str | None:
        """Who issued it, for "k distinct issuers" rules (suggestions, LM data): the server-known `client` where
        the impression has one (every one the HTTP API logs), else the session id or user token (in-process
        simulations and imports); None when none is known. Prefixed so the two kinds never collide."""
        if self.client:
            return f"client:{self.client}"
        session = self.session_id or self.user_token
        return f"session:{session}" if session else None


@runtime_checkable
class QueryLog(Protocol):
    """Append-only event sink that can be replayed (to rebuild in-memory suggestion indices)."""

    def append(self, event: QueryEvent) -> None:
        """Record one event; must not block the request for long."""

    def read(self, since: datetime | None = None) -> Iterator[QueryEvent]:
        """Events at or after `since` (all when None), oldest first."""
        ...

    def flush(self) -> None:
        """Make appended events durable/visible."""

    def close(self) -> None:
        """Flush and release files/clients."""

    def impressions(self, query_ids: Sequence[str]) -> dict[str, QueryEvent]:
        """The impressions (events with a `query_id`) among `query_ids` that this log can see now."""
        ...

    @property
    def lookup_retry_s(self) -> float:
        """How long another replica may hold an impression before others can see it (0: at once)."""
        ...


class QueryLogConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    backend: Literal["auto", "jsonl", "es", "none"] = Field(
        default="auto", description="auto follows the index store (embedded → jsonl, es → es); none disables."
    )
    directory: Path | None = Field(default=None, description="JSONL directory (default <data_dir>/querylog).")
    es_index: str = Field(default=DEFAULT_ES_INDEX, description="Elasticsearch index of the log.")
    es_flush_interval_s: float = Field(default=1.0, gt=0, description="Buffered ES events are bulk-written this often.")
    es_buffer: int = Field(default=200, ge=1, description="Bulk-write as soon as this many events wait.")
    replay_days: float = Field(default=90.0, gt=0, description="Startup replays events this recent.")
    impression_days: float = Field(
        default=2.0, gt=0, description="Clicks may refer to impressions this recent; older query ids are unknown."
    )
    impression_cache: int = Field(default=200_000, ge=1, description="Impressions kept in memory for event checks.")
    retention_days: float = Field(
        default=RETENTION_DAYS,
        gt=0,
        description="Logged events older than this are deleted: JSONL day files at start and each new day, "
        "Elasticsearch log documents at start and hourly.",
    )


def to_utc(ts: datetime) -> datetime:
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def prune_day_files(directory: Path, prefix: str, retention_days: float, now: datetime | None = None) -> list[Path]:
    """Delete `PREFIX-YYYY-MM-DD.jsonl` files whose whole day is older than the retention; the deleted paths."""
    cutoff = f"{prefix}-{to_utc(now or datetime.now(UTC)) - timedelta(days=retention_days):%Y-%m-%d}.jsonl"
    gone = [p for p in sorted(directory.glob(f"{prefix}-*.jsonl")) if p.name < cutoff]
    for path in gone:
        path.unlink(missing_ok=True)
        log.info("retention: deleted %s", path)
    return gone


def purge_es_log(client: Any, index: str, retention_days: float, now: datetime | None = None, field: str = "ts") -> int:
    """Delete the documents of an Elasticsearch log index whose `field` is older than the retention; how many."""
    cutoff = to_utc(now or datetime.now(UTC)) - timedelta(days=retention_days)
    if not client.indices.exists(index=index):
        return 0
    # Search and bulk-delete rather than _delete_by_query: that needs the reindex module, absent from some
    # distributions (the integration-test one among them).
    deleted = 0
    while True:
        hits = client.search(
            index=index, query={"range": {field: {"lt": cutoff.isoformat()}}}, size=1000, source=False
        )["hits"]["hits"]
        if not hits:
            return deleted
        ops = [{"delete": {"_index": index, "_id": h["_id"]}} for h in hits]
        if client.bulk(operations=ops, refresh=True).get("errors"):  # never loop on what will not go
            raise RuntimeError(f"retention: some documents of {index} could not be deleted")
        deleted += len(hits)


def _ends_mid_line(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            if f.tell() == 0:
                return False
            f.seek(-1, 2)
            return f.read(1) != b"\n"
    except FileNotFoundError:
        return False


class ImpressionCache:
    """Recent impressions by query id, bounded (oldest out first); thread-safe."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[str, QueryEvent] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, event: QueryEvent) -> None:
        assert event.query_id
        with self._lock:
            self._items[event.query_id] = event
            self._items.move_to_end(event.query_id)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def get_many(self, query_ids: Sequence[str]) -> dict[str, QueryEvent]:
        with self._lock:
            return {q: self._items[q] for q in query_ids if q in self._items}


class JsonlQueryLog:
    """`querylog-YYYY-MM-DD.jsonl` files (UTC days): append is one line write, so a crash of the process loses at
    most one event; lines reach the disk (fsync) at `flush`, `close` and at most `fsync_interval_s` after they were
    written (by the next append, or by a timer an append starts when none is pending, so lines written just
    before the log goes idle are synced too), and a new day file's directory entry is fsynced as it is created,
    so a crash of the machine loses at most that interval."""

    lookup_retry_s = 0.0  # a line is in the file before the search returns: every replica can read it at once

    def __init__(
        self,
        directory: Path | str,
        impression_days: float = 2.0,
        impression_cache: int = 200_000,
        retention_days: float | None = None,
        fsync_interval_s: float = 1.0,
    ) -> None:
        """`retention_days`: day files older than this are deleted now and at each new day (None: kept; the
        app's log, from `make_query_log`, always has one). `fsync_interval_s`: an append fsyncs when the last
        fsync is older (0: every append; a search then waits for the disk), else a timer syncs what it wrote once
        the interval has passed."""
        self.directory = Path(directory)
        self.retention_days = retention_days
        self.fsync_interval_s = fsync_interval_s
        self._synced_at = time.monotonic()
        self._dirty = False  # lines written since the last fsync
        self._timer: threading.Timer | None = None  # the pending timed fsync, at most one
        if retention_days is not None:
            prune_day_files(self.directory, "querylog", retention_days)
        self._lock = threading.Lock()
        self._day: str | None = None
        self._fh: Any = None
        self._seen = ImpressionCache(impression_cache)
        self._impression_days = impression_days
        self._offsets: dict[str, int] = {}  # bytes of each day file already scanned for impressions

    def path_for(self, ts: datetime) -> Path:
        return self.directory / f"querylog-{to_utc(ts):%Y-%m-%d}.jsonl"

    def append(self, event: QueryEvent) -> None:
        line = event.model_dump_json(exclude_none=True) + "\n"
        day = f"{to_utc(event.ts):%Y-%m-%d}"
        with self._lock:
            if self._fh is None or day != self._day:
                if self._fh is not None:  # the day ended: its file goes to the disk before it is left
                    self._sync()
                    self._fh.close()
                if not self.directory.exists():
                    self.directory.mkdir(parents=True, exist_ok=True)
                    fsync_directory(self.directory.parent)
                if self._day is not None and self.retention_days is not None:  # a new day: the oldest may go
                    prune_day_files(self.directory, "querylog", self.retention_days)
                path = self.path_for(event.ts)
                torn = _ends_mid_line(path)
                created = not path.exists()
                self._fh = open(path, "a", encoding="utf-8")  # kept open between appends
                if created:
                    fsync_directory(self.directory)
                if torn:  # a crash cut the last line short: start ours on a fresh line
                    self._fh.write("\n")
                self._day = day
            self._fh.write(line)
            self._fh.flush()
            self._dirty = True
            if time.monotonic() - self._synced_at >= self.fsync_interval_s:
                self._sync()
            elif self._timer is None:
                self._sync_later()
        if event.query_id:
            self._seen.put(event)

    def impressions(self, query_ids: Sequence[str]) -> dict[str, QueryEvent]:
        found = self._seen.get_many(query_ids)
        if len(found) < len(set(query_ids)):  # written by another replica (or before a restart): read on
            self._scan_new_lines()
            found = self._seen.get_many(query_ids)
        return found

    def _scan_new_lines(self) -> None:
        """Read the complete lines added to recent day files since the last scan (every replica appends there)."""
        first = f"querylog-{datetime.now(UTC) - timedelta(days=self._impression_days):%Y-%m-%d}.jsonl"
        for path in sorted(self.directory.glob("querylog-*.jsonl")):
            if path.name < first:
                continue
            start = self._offsets.get(path.name, 0)
            with open(path, "rb") as f:
                f.seek(start)
                chunk = f.read()
            end = chunk.rfind(b"\n") + 1  # a line still being written is read next time
            self._offsets[path.name] = start + end
            for raw in chunk[:end].splitlines():
                if b'"query_id"' not in raw:
                    continue
                try:
                    self._seen.put(QueryEvent.model_validate_json(raw))
                except ValueError:
                    continue

    def read(self, since: datetime | None = None) -> Iterator[QueryEvent]:
        if not self.directory.exists():
            return
        since_utc = to_utc(since) if since else None
        first_day = f"querylog-{since_utc:%Y-%m-%d}.jsonl" if since_utc else ""
        for path in sorted(self.directory.glob("querylog-*.jsonl")):
            if path.name < first_day:
                continue
            with open(path, encoding="utf-8") as f:
                for n, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    try:
                        ev = QueryEvent.model_validate_json(line)
                    except ValueError:  # a torn last line after a crash, or a foreign line: skip, never fail
                        log.warning("skipping unreadable query-log line %s:%d", path, n)
                        continue
                    if since_utc is None or to_utc(ev.ts) >= since_utc:
                        yield ev

    def _sync(self) -> None:
        """Write the open day file through to the disk (the caller holds the lock)."""
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._synced_at = time.monotonic()
        self._dirty = False

    def _sync_later(self) -> None:
        """Start the timer that syncs what was just written when the interval has passed, whether or not another
        append comes (the caller holds the lock; one timer at a time, so a burst of appends starts one)."""
        delay = max(0.0, self._synced_at + self.fsync_interval_s - time.monotonic())
        self._timer = threading.Timer(delay, self._timed_sync)
        self._timer.daemon = True  # never holds the process up; close() syncs anyway
        self._timer.start()

    def _timed_sync(self) -> None:
        with self._lock:
            if self._timer is threading.current_thread():
                self._timer = None
            if self._dirty and self._fh is not None:
                try:
                    self._sync()
                except OSError as exc:  # the next append, flush or close tries again (and raises to its caller)
                    log.warning("query log: a timed fsync failed: %s", exc)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def flush(self) -> None:
        with self._lock:
            if self._fh is not None:
                self._sync()

    def close(self) -> None:
        with self._lock:
            self._cancel_timer()
            if self._fh is not None:
                self._sync()
                self._fh.close()
                self._fh = None
                self._day = None


class NullQueryLog:
    """Logging disabled."""

    lookup_retry_s = 0.0

    def impressions(self, query_ids: Sequence[str]) -> dict[str, QueryEvent]:
        return {}

    def append(self, event: QueryEvent) -> None:
        return None

    def read(self, since: datetime | None = None) -> Iterator[QueryEvent]:
        return iter(())

    def flush(self) -> None:
        return None

    def close(self) -> None:
        return None


def make_query_log(
    config: QueryLogConfig, store_kind: str, data_dir: Path | None = None, es_client: Any = None
) -> QueryLog:
    """The log for a deployment: `es_client` is the store's client when the store is Elasticsearch; the JSONL
    log lives in `config.directory`, else under `data_dir` (the caller's resolved data directory)."""
    backend = config.backend
    if backend == "auto":
        backend = "es" if store_kind == "es" else "jsonl"
    if backend == "none":
        return NullQueryLog()
    if backend == "es":
        if es_client is None:
            raise ValueError("the Elasticsearch query log needs an Elasticsearch client")
        from logs.querylog_es import EsQueryLog

        try:
            purge_es_log(es_client, config.es_index, config.retention_days)
        except Exception as exc:  # an unreachable cluster must not keep the API down; the next start retries
            log.warning("retention: purging %s failed: %s", config.es_index, exc)
        return EsQueryLog(
            es_client,
            config.es_index,
            config.es_flush_interval_s,
            config.es_buffer,
            config.impression_cache,
            retention_days=config.retention_days,
        )
    if config.directory is None and data_dir is None:
        raise ValueError("the JSONL query log needs a directory or a data_dir")
    directory = config.directory if config.directory is not None else data_dir / "querylog"  # type: ignore[operator]
    return JsonlQueryLog(directory, config.impression_days, config.impression_cache, config.retention_days)
