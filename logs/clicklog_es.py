"""The click log in Elasticsearch: one index shared by every replica, exactly-once by create-only writes.

A record's `_id` is its storage id (`ClickRecord.storage_id`) and writes are `create`, so a duplicate is a 409 the
cluster reports, never a second copy. An index created by an older version is brought up to today's mapping.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from logs.querylog import to_utc
from logs.querylog_es import RETENTION_CHECK_S, PeriodicPurge, read_sorted

if TYPE_CHECKING:
    from logs.clicklog import ClickRecord

DEFAULT_ES_INDEX = "sift-clicklog"

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
        "flagged": {"type": "keyword"},
    },
}

# Replay order; `unmapped_type`: an index created before a field existed (and not written to since) still sorts.
_READ_ORDER: list[dict[str, Any]] = [
    {name: {"order": "asc", "unmapped_type": "keyword" if name != "received_at" else "date"}}
    for name in ("received_at", "event_id", "client")
]


class EsClickLog:
    """An index shared by every replica; a record's `_id` is its storage id (`ClickRecord.storage_id`) and writes
    are `create`, so a duplicate is a 409 the cluster reports, never a second copy."""

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
        """Create the index, or bring an existing one's mapping up to date: an index created by an older version
        lacks the fields added since (`client`, `flagged`), and with `dynamic: false` they would be stored but
        neither searchable nor sortable. Adding fields to a mapping is allowed on a live index."""
        if self._ready:
            return
        from elasticsearch import BadRequestError

        created = False
        if not self.client.indices.exists(index=self.index):
            try:
                self.client.indices.create(
                    index=self.index,
                    mappings=_ES_MAPPING,
                    settings={"number_of_shards": 1, "number_of_replicas": 0, "refresh_interval": "30s"},
                )
                created = True
            except BadRequestError as exc:  # another replica created it first
                if "resource_already_exists" not in str(exc):
                    raise
        if not created:
            self.client.indices.put_mapping(index=self.index, properties=_ES_MAPPING["properties"])
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
                "_id": r.storage_id(),
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

        from logs.clicklog import ClickRecord  # here: logs.clicklog imports this module

        try:  # a reader (training) wants what was acknowledged, not what the 30 s refresh has shown yet
            self.client.indices.refresh(index=self.index)
        except NotFoundError:
            return
        query: dict[str, Any] = {"match_all": {}}
        if since is not None:
            query = {"range": {"received_at": {"gte": to_utc(since).isoformat()}}}
        yield from read_sorted(self.client, self.index, query, _READ_ORDER, ClickRecord)

    def close(self) -> None:
        return None
