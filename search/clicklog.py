"""The click log: append-only, exactly-once storage of accepted click / conversion / view events.

Same storage choice as the query log (daily JSONL files in the embedded setup, an Elasticsearch index with
Elasticsearch). Every record carries an `event_id`, its idempotency key: a retried batch, or the same batch
sent to two API replicas, is stored once. JSONL replicas on one machine serialise appends with an advisory
file lock and share the set of ids already written; Elasticsearch stores a record under its id with
create-only semantics, so the cluster decides between racing replicas. A batch is written and synced before
the API answers 202, so an accepted event survives a crash.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from search.querylog import RETENTION_DAYS, prune_day_files, purge_es_log, to_utc
from search.querylog_es import RETENTION_CHECK_S, PeriodicPurge

log = logging.getLogger("sift.clicklog")

DEFAULT_ES_INDEX = "sift-clicklog"
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
        description="Who sent the event as the server knows it (`serving.auth.Principal.identity`: a digest of "
        "API key name and client address), not client-chosen; None for events written in-process.",
    )
    index: str | None = Field(default=None, description="Index the impression searched.")
    query: str = Field(default="", description="The impression's query (or typed prefix, for suggest).")
    source: Literal["search", "suggest"] = Field(default="search", description="Kind of impression.")


@runtime_checkable
class ClickLog(Protocol):
    """Append-only, idempotent event storage that can be replayed."""

    def append_many(self, records: Sequence[ClickRecord]) -> tuple[int, int]:
        """Store the records whose event_id is new; return (written, duplicates). Durable on return."""
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
    max_event_age_days: float = Field(default=4.0, gt=0, description="Older timestamps: 422 (as Algolia Insights).")
    retention_days: float = Field(
        default=RETENTION_DAYS,
        gt=0,
        description="Events older than this are deleted: JSONL day files at the first write of each day, "
        "Elasticsearch documents at start and then hourly (on the next write).",
    )


class JsonlClickLog:
    """`clicklog-YYYY-MM-DD.jsonl` by day received. Appends take an exclusive `flock` on a lock file, read what
    other processes appended since (to learn their event ids), skip duplicates, write, fsync, unlock."""

    def __init__(self, directory: Path | str, retention_days: float | None = None) -> None:
        """`retention_days`: day files older than this are deleted, checked once a day (None: kept; the app's
        log, from `make_click_log`, always has one)."""
        self.directory = Path(directory)
        self.retention_days = retention_days
        self._pruned_day = ""
        self._thread_lock = threading.Lock()  # flock does not exclude threads sharing one descriptor
        self._ids: set[str] = set()
        self._offsets: dict[str, int] = {}

    def path_for(self, ts: datetime) -> Path:
        return self.directory / f"clicklog-{to_utc(ts):%Y-%m-%d}.jsonl"

    def _catch_up(self) -> None:
        for path in sorted(self.directory.glob("clicklog-*.jsonl")):
            start = self._offsets.get(path.name, 0)
            with open(path, "rb") as f:
                f.seek(start)
                chunk = f.read()
            end = chunk.rfind(b"\n") + 1
            self._offsets[path.name] = start + end
            for raw in chunk[:end].splitlines():
                try:
                    self._ids.add(ClickRecord.model_validate_json(raw).event_id)
                except ValueError:  # a torn line from a crash: it was never acknowledged
                    continue

    def append_many(self, records: Sequence[ClickRecord]) -> tuple[int, int]:
        if not records:
            return 0, 0
        self.directory.mkdir(parents=True, exist_ok=True)
        with self._thread_lock, open(self.directory / ".clicklog.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                self._catch_up()
                fresh: list[ClickRecord] = []
                for r in records:
                    if r.event_id not in self._ids:
                        self._ids.add(r.event_id)
                        fresh.append(r)
                self._prune()
                by_day: dict[Path, list[str]] = {}
                for r in fresh:
                    by_day.setdefault(self.path_for(r.received_at), []).append(r.model_dump_json(exclude_none=True))
                for path, lines in by_day.items():
                    self._write(path, lines)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
        return len(fresh), len(records) - len(fresh)

    def _prune(self) -> None:
        """Drop day files past the retention, once a day (under the append lock)."""
        today = f"{datetime.now(UTC):%Y-%m-%d}"
        if self.retention_days is not None and today != self._pruned_day:
            for path in prune_day_files(self.directory, "clicklog", self.retention_days):
                self._offsets.pop(path.name, None)
            self._pruned_day = today

    def _write(self, path: Path, lines: list[str]) -> None:
        size = path.stat().st_size if path.exists() else 0
        if size and self._offsets.get(path.name, 0) != size:  # a crash left a torn line: start on a fresh one
            lines[0] = "\n" + lines[0]
        data = ("\n".join(lines) + "\n").encode()
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
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


_ES_MAPPING: dict[str, Any] = {
    "dynamic": "false",
    "properties": {
        "event_id": {"type": "keyword"},
        "type": {"type": "keyword"},
        "event_name": {"type": "keyword"},
        "query_id": {"type": "keyword"},
        "object_ids": {"type": "keyword"},
        "positions": {"type": "integer"},
        "ts": {"type": "date"},
        "received_at": {"type": "date"},
        "user_token": {"type": "keyword"},
        "session_id": {"type": "keyword"},
        "client": {"type": "keyword"},
        "index": {"type": "keyword"},
        "query": {"type": "keyword", "ignore_above": 1024},
        "source": {"type": "keyword"},
    },
}


class EsClickLog:
    """An index shared by every replica; a record's `_id` is its event id and writes are `create`, so a
    duplicate is a 409 the cluster reports, never a second copy."""

    def __init__(
        self,
        client: Any,
        index: str = DEFAULT_ES_INDEX,
        retention_days: float | None = None,
        retention_check_s: float = RETENTION_CHECK_S,
    ) -> None:
        """`retention_days`: older records are deleted, checked at a write at most every `retention_check_s`
        (in a background thread; None: kept)."""
        self.client = client
        self.index = index
        self._ready = False
        self.purge = (
            PeriodicPurge(client, index, retention_days, field="received_at", every_s=retention_check_s)
            if retention_days is not None
            else None
        )

    def _ensure_index(self) -> None:
        if self._ready:
            return
        from elasticsearch import BadRequestError

        if not self.client.indices.exists(index=self.index):
            try:
                self.client.indices.create(
                    index=self.index,
                    mappings=_ES_MAPPING,
                    settings={"number_of_shards": 1, "number_of_replicas": 0, "refresh_interval": "30s"},
                )
            except BadRequestError as exc:  # another replica created it first
                if "resource_already_exists" not in str(exc):
                    raise
        self._ready = True

    def append_many(self, records: Sequence[ClickRecord]) -> tuple[int, int]:
        from elasticsearch import helpers

        if self.purge is not None:
            self.purge.run_in_background()
        if not records:
            return 0, 0
        self._ensure_index()
        actions = [
            {
                "_op_type": "create",
                "_index": self.index,
                "_id": r.event_id,
                "_source": r.model_dump(mode="json", exclude_none=True),
            }
            for r in records
        ]
        written = duplicates = 0
        failed: list[str] = []
        for ok, item in helpers.streaming_bulk(
            self.client, actions, raise_on_error=False, max_retries=5, initial_backoff=0.5
        ):
            info = item.get("create", {})
            if ok:
                written += 1
            elif info.get("status") == 409:
                duplicates += 1
            else:
                failed.append(str(info.get("error", info))[:200])
        if failed:  # the client retries the batch; what was written is then a duplicate, not a second copy
            raise OSError(f"{len(failed)} event(s) not stored in {self.index}: {failed[0]}")
        return written, duplicates

    def refresh(self) -> None:
        self._ensure_index()
        self.client.indices.refresh(index=self.index)

    def read(self, since: datetime | None = None) -> Iterator[ClickRecord]:
        from elasticsearch import NotFoundError

        try:  # a reader (training) wants what was acknowledged, not what the 30 s refresh has shown yet
            self.client.indices.refresh(index=self.index)
        except NotFoundError:
            return
        query: dict[str, Any] = {"match_all": {}}
        if since is not None:
            query = {"range": {"received_at": {"gte": to_utc(since).isoformat()}}}
        after: list[Any] | None = None
        while True:
            try:
                resp = self.client.search(
                    index=self.index,
                    query=query,
                    sort=[{"received_at": "asc"}, {"event_id": "asc"}],
                    size=1000,
                    search_after=after,
                )
            except NotFoundError:
                return
            hits = resp["hits"]["hits"]
            for h in hits:
                try:
                    yield ClickRecord.model_validate(h["_source"])
                except ValueError:
                    continue
            if len(hits) < 1000:
                return
            after = hits[-1]["sort"]

    def close(self) -> None:
        return None


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
    if config.directory is not None:
        return JsonlClickLog(config.directory, config.retention_days)
    if data_dir is None:
        raise ValueError("the JSONL click log needs a directory or a data_dir")
    return JsonlClickLog(data_dir / "clicklog", config.retention_days)
