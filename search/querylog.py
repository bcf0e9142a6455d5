"""The query log: an append-only record of what users searched (and, later, what they clicked).

Suggestions and related searches are learnt from it, so it must survive restarts and be shareable by
several API replicas: daily-rotated JSONL files in the embedded setup, an Elasticsearch index in the
Elasticsearch setup. Every event carries a `type` so click events can join later without a migration.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

log = logging.getLogger("sift.querylog")

DEFAULT_ES_INDEX = "sift-querylog"


class QueryEvent(BaseModel):
    """One logged event. Search events fill `query`/`result_count`; click events (later) fill `doc_id`/`position`."""

    model_config = ConfigDict(extra="ignore")

    type: Literal["search", "click"] = Field(default="search", description="Event kind.")
    ts: datetime = Field(default_factory=lambda: datetime.now(UTC), description="When it happened (UTC).")
    query: str = Field(description="The query as the user sent it.")
    result_count: int = Field(default=0, ge=0, description="Results returned on the page.")
    request_id: str = Field(default="", description="The search response's request id.")
    session_id: str | None = Field(default=None, description="Opaque session id, if the client sent one.")
    index: str | None = Field(default=None, description="Index (alias) searched.")
    doc_id: str | None = Field(default=None, description="Clicked document (click events).")
    position: int | None = Field(default=None, description="Rank of the clicked result (click events).")


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


def _to_utc(ts: datetime) -> datetime:
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


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


class JsonlQueryLog:
    """`querylog-YYYY-MM-DD.jsonl` files (UTC days): append is one line write, so a crash loses at most one event."""

    def __init__(self, directory: Path | str) -> None:
        self.directory = Path(directory)
        self._lock = threading.Lock()
        self._day: str | None = None
        self._fh: Any = None

    def path_for(self, ts: datetime) -> Path:
        return self.directory / f"querylog-{_to_utc(ts):%Y-%m-%d}.jsonl"

    def append(self, event: QueryEvent) -> None:
        line = event.model_dump_json(exclude_none=True) + "\n"
        day = f"{_to_utc(event.ts):%Y-%m-%d}"
        with self._lock:
            if self._fh is None or day != self._day:
                if self._fh is not None:
                    self._fh.close()
                self.directory.mkdir(parents=True, exist_ok=True)
                path = self.path_for(event.ts)
                torn = _ends_mid_line(path)
                self._fh = open(path, "a", encoding="utf-8")  # kept open between appends
                if torn:  # a crash cut the last line short: start ours on a fresh line
                    self._fh.write("\n")
                self._day = day
            self._fh.write(line)
            self._fh.flush()

    def read(self, since: datetime | None = None) -> Iterator[QueryEvent]:
        if not self.directory.exists():
            return
        since_utc = _to_utc(since) if since else None
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
                    if since_utc is None or _to_utc(ev.ts) >= since_utc:
                        yield ev

    def flush(self) -> None:
        with self._lock:
            if self._fh is not None:
                self._fh.flush()

    def close(self) -> None:
        with self._lock:
            if self._fh is not None:
                self._fh.close()
                self._fh = None
                self._day = None


_ES_MAPPING: dict[str, Any] = {
    "dynamic": "false",
    "properties": {
        "type": {"type": "keyword"},
        "ts": {"type": "date"},
        "query": {"type": "keyword", "ignore_above": 1024},
        "result_count": {"type": "integer"},
        "request_id": {"type": "keyword"},
        "session_id": {"type": "keyword"},
        "index": {"type": "keyword"},
        "doc_id": {"type": "keyword"},
        "position": {"type": "integer"},
    },
}


class EsQueryLog:
    """An Elasticsearch index shared by every replica. Appends are buffered and bulk-written by a background
    thread, so a slow cluster never holds a search request; `flush()` writes what is buffered now."""

    def __init__(self, client: Any, index: str = DEFAULT_ES_INDEX, flush_interval_s: float = 1.0, buffer: int = 200):
        self.client = client
        self.index = index
        self.flush_interval_s = flush_interval_s
        self.buffer_size = buffer
        self._buf: list[QueryEvent] = []
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._ready = False
        self.dropped = 0

    def _ensure_index(self) -> None:
        if self._ready:
            return
        from elasticsearch import BadRequestError

        if not self.client.indices.exists(index=self.index):
            try:
                self.client.indices.create(
                    index=self.index,
                    mappings=_ES_MAPPING,
                    # An append-only log read back at startup: a 30 s refresh instead of 1 s keeps Elasticsearch
                    # from writing and merging a tiny segment every second beside the searches it serves.
                    settings={"number_of_shards": 1, "number_of_replicas": 0, "refresh_interval": "30s"},
                )
            except BadRequestError as exc:  # another replica created it first
                if "resource_already_exists" not in str(exc):
                    raise
        self._ready = True

    def _start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="sift-querylog-es", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.flush_interval_s)
            self._wake.clear()
            try:
                self.flush()
            except Exception as exc:  # keep the events for the next try; the cluster may be back then
                log.warning("query log flush failed: %s", exc)

    def append(self, event: QueryEvent) -> None:
        with self._lock:
            if len(self._buf) >= 100 * self.buffer_size:  # cluster down for long: bound memory, count the loss
                self._buf.pop(0)
                self.dropped += 1
            self._buf.append(event)
            full = len(self._buf) >= self.buffer_size
        self._start()
        if full:
            self._wake.set()

    def flush(self) -> None:
        from elasticsearch import helpers

        with self._flush_lock:
            with self._lock:
                batch, self._buf = self._buf, []
            if not batch:
                return
            try:
                self._ensure_index()
                actions = [
                    {"_index": self.index, "_source": ev.model_dump(mode="json", exclude_none=True)} for ev in batch
                ]
                helpers.bulk(self.client, actions, refresh=False)
            except Exception:
                with self._lock:
                    self._buf[:0] = batch
                raise

    def refresh(self) -> None:
        """Make flushed events searchable now (tests, replay right after writing)."""
        self._ensure_index()
        self.client.indices.refresh(index=self.index)

    def read(self, since: datetime | None = None) -> Iterator[QueryEvent]:
        from elasticsearch import NotFoundError

        query: dict[str, Any] = {"match_all": {}}
        if since is not None:
            query = {"range": {"ts": {"gte": _to_utc(since).isoformat()}}}
        after: list[Any] | None = None
        while True:
            try:
                resp = self.client.search(
                    index=self.index,
                    query=query,
                    sort=[{"ts": "asc"}, {"_doc": "asc"}],
                    size=1000,
                    search_after=after,
                )
            except NotFoundError:
                return
            hits = resp["hits"]["hits"]
            for h in hits:
                try:
                    yield QueryEvent.model_validate(h["_source"])
                except ValueError:
                    continue
            if len(hits) < 1000:
                return
            after = hits[-1]["sort"]

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        try:
            self.flush()
        except Exception as exc:
            log.warning("query log: %d event(s) not written at close: %s", len(self._buf), exc)


class NullQueryLog:
    """Logging disabled."""

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
        return EsQueryLog(es_client, config.es_index, config.es_flush_interval_s, config.es_buffer)
    if config.directory is not None:
        return JsonlQueryLog(config.directory)
    if data_dir is None:
        raise ValueError("the JSONL query log needs a directory or a data_dir")
    return JsonlQueryLog(data_dir / "querylog")
