"""The query log in Elasticsearch: one index shared by every API replica (the Elasticsearch setup).

Impressions are stored under their query id, so a click arriving at another replica finds its impression
with a realtime multi-get, before any refresh. Retention runs at start (`make_query_log`) and then every
`RETENTION_CHECK_S` while the server runs (`PeriodicPurge`, also used by the click log): a server that stays up
for months still deletes what passes the retention.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from typing import Any, TypeVar

from pydantic import BaseModel

from logs.querylog import DEFAULT_ES_INDEX, ImpressionCache, QueryEvent, purge_es_log, to_utc

log = logging.getLogger("sift.querylog")

RETENTION_CHECK_S = 3600.0
PAGE_SIZE = 1000

M = TypeVar("M", bound=BaseModel)


def read_sorted(client: Any, index: str, query: dict[str, Any], sort: list[Any], model: type[M]) -> Iterator[M]:
    """Every document of a log index matching `query`, in `sort` order, one `search_after` page at a time (the
    query log and the click log read this way); a missing index reads as empty, a document that no longer
    validates (a field removed since it was written) is skipped."""
    from elasticsearch import NotFoundError

    after: list[Any] | None = None
    while True:
        try:
            resp = client.search(index=index, query=query, sort=sort, size=PAGE_SIZE, search_after=after)
        except NotFoundError:
            return
        hits = resp["hits"]["hits"]
        for h in hits:
            try:
                yield model.model_validate(h["_source"])
            except ValueError:
                continue
        if len(hits) < PAGE_SIZE:
            return
        after = hits[-1]["sort"]


class PeriodicPurge:
    """Deletes an Elasticsearch log index's documents older than the retention, at most once per `every_s`
    (the first time `every_s` after creation: the log's factory purges at start). Failures are logged by type
    only (a bulk error can quote documents, and documents hold queries) and retried at the next period."""

    def __init__(
        self,
        client: Any,
        index: str,
        retention_days: float,
        field: str = "ts",
        every_s: float = RETENTION_CHECK_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client, self.index, self.retention_days, self.field = client, index, retention_days, field
        self.every_s = every_s
        self._clock = clock
        self._next = clock() + every_s
        self._running = threading.Lock()
        self.deleted = 0

    def due(self) -> bool:
        return self._clock() >= self._next

    def run(self) -> None:
        """Purge now if due (a no-op while another thread purges)."""
        if not self.due() or not self._running.acquire(blocking=False):
            return
        try:
            self._next = self._clock() + self.every_s
            self.deleted += purge_es_log(self.client, self.index, self.retention_days, field=self.field)
        except Exception as exc:  # the cluster may be down; the next period retries
            log.warning("retention: purging %s failed (%s)", self.index, type(exc).__name__)
        finally:
            self._running.release()

    def run_in_background(self) -> None:
        """For callers on a request path (the click log): the purge runs in a daemon thread when due."""
        if self.due() and not self._running.locked():
            threading.Thread(target=self.run, name=f"sift-retention-{self.index}", daemon=True).start()


_ES_MAPPING: dict[str, Any] = {
    "dynamic": "false",
    "properties": {
        "type": {"type": "keyword"},
        "ts": {"type": "date"},
        "query": {"type": "keyword", "ignore_above": 1024},
        "result_count": {"type": "integer"},
        "request_id": {"type": "keyword"},
        "session_id": {"type": "keyword"},
        "client": {"type": "keyword"},
        "index": {"type": "keyword"},
        "doc_id": {"type": "keyword"},
        "position": {"type": "integer"},
        "query_id": {"type": "keyword"},
        "shown": {"type": "keyword"},
        "offset": {"type": "integer"},
        "user_token": {"type": "keyword"},
        "versions": {"type": "object", "enabled": False},
        "explored": {"type": "boolean"},
    },
}


class EsQueryLog:
    """An Elasticsearch index shared by every replica. Appends are buffered and bulk-written by a background
    thread, so a slow cluster never holds a search request; `flush()` writes what is buffered now."""

    def __init__(
        self,
        client: Any,
        index: str = DEFAULT_ES_INDEX,
        flush_interval_s: float = 1.0,
        buffer: int = 200,
        impression_cache: int = 200_000,
        retention_days: float | None = None,
        retention_check_s: float = RETENTION_CHECK_S,
    ):
        """`retention_days`: documents older than this are deleted every `retention_check_s` by the flush
        thread (None: kept)."""
        self.client = client
        self.purge = (
            PeriodicPurge(client, index, retention_days, every_s=retention_check_s)
            if retention_days is not None
            else None
        )
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
        self._seen = ImpressionCache(impression_cache)
        if self.purge is not None:  # retention runs in the flush thread, even while nothing is logged
            self._start()

    @property
    def lookup_retry_s(self) -> float:
        """Another replica bulk-writes its buffer within a flush interval."""
        return self.flush_interval_s + 0.5

    def impressions(self, query_ids: Sequence[str]) -> dict[str, QueryEvent]:
        """This replica's recent impressions, then a realtime multi-get (impressions are stored under their query
        id, and a get sees a document before any refresh)."""
        found = self._seen.get_many(query_ids)
        missing = sorted(set(query_ids) - set(found))
        if missing:
            from elasticsearch import NotFoundError

            try:
                resp = self.client.mget(index=self.index, ids=missing)
            except NotFoundError:
                return found
            for doc in resp["docs"]:
                if doc.get("found"):
                    try:
                        ev = QueryEvent.model_validate(doc["_source"])
                    except ValueError:
                        continue
                    self._seen.put(ev)
                    found[doc["_id"]] = ev
        return found

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
                # By type only: a bulk error quotes the documents it could not write, and they hold queries.
                log.warning("query log flush failed (%s); %d event(s) kept for the next try", type(exc).__name__,
                            len(self._buf))  # fmt: skip
            if self.purge is not None:
                self.purge.run()

    def append(self, event: QueryEvent) -> None:
        with self._lock:
            if len(self._buf) >= 100 * self.buffer_size:  # cluster down for long: bound memory, count the loss
                self._buf.pop(0)
                self.dropped += 1
            self._buf.append(event)
            full = len(self._buf) >= self.buffer_size
        if event.query_id:
            self._seen.put(event)
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
                    {"_index": self.index, "_source": ev.model_dump(mode="json", exclude_none=True)}
                    | ({"_id": ev.query_id} if ev.query_id else {})
                    for ev in batch
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
        query: dict[str, Any] = {"match_all": {}}
        if since is not None:
            query = {"range": {"ts": {"gte": to_utc(since).isoformat()}}}
        yield from read_sorted(self.client, self.index, query, [{"ts": "asc"}, {"_doc": "asc"}], QueryEvent)

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        try:
            self.flush()
        except Exception as exc:
            log.warning("query log: %d event(s) not written at close (%s)", len(self._buf), type(exc).__name__)
