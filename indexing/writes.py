"""Writes that survive a busy cluster: the dead-letter file, and retries of transient per-record refusals.

A record refused with 429 (write queue full) or by a disk flood-stage block says nothing about the record;
dead-lettering it would silently lose documents whenever the cluster is busy. Those are retried with
exponential backoff, a bounded number of times; what is still refused after that fails the build (the alias
stays). Refusals about the record itself (mapping violations) go to the dead-letter file as before.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from indexing.errors import IndexingError
from search.documents import StoredRecord
from search.stores.base import DeleteFailed, DocFailure, IndexStore, WriteResult

log = logging.getLogger("sift.indexing")

MAX_BACKOFF_S = 30.0


class DeadLetter:
    """Append-only JSONL of records that could not be indexed, each with its reason. Opened lazily."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._f: Any = None
        self.count = 0
        self._lock = threading.Lock()  # the reader and the writer thread both report here

    def add(self, *, stage: str, reason: str, doc_id: str | None, position: str | None, record: Any) -> None:
        entry = {"id": doc_id, "position": position, "stage": stage, "reason": reason, "record": record}
        line = json.dumps(entry, ensure_ascii=False, default=str) + "\n"
        with self._lock:
            if self._f is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._f = open(self.path, "a", encoding="utf-8")
            self._f.write(line)
            self._f.flush()
            self.count += 1

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None


def _backoff(attempt: int, base_s: float) -> None:
    time.sleep(min(MAX_BACKOFF_S, base_s * 2**attempt) * random.uniform(0.5, 1.0))


def _still_refused(what: str, failures: list[DocFailure], retries: int) -> IndexingError:
    return IndexingError(
        f"{len(failures)} {what} still refused after {retries} retries (transient: {failures[0].reason}); "
        "the cluster is overloaded or out of disk"
    )


def upsert_with_retries(
    store: IndexStore, target: str, records: Sequence[StoredRecord], *, retries: int, backoff_s: float
) -> WriteResult:
    """Upsert, then retry only the records refused transiently; permanent refusals are returned as failures."""
    out = WriteResult()
    pending = list(records)
    for attempt in range(retries + 1):
        res = store.upsert(target, pending)
        out.written += res.written
        out.failures.extend(f for f in res.failures if not f.transient)
        transient = [f for f in res.failures if f.transient]
        if not transient:
            return out
        if attempt == retries:
            raise _still_refused("records", transient, retries)
        log.warning("%d records refused transiently (%s); retry %d", len(transient), transient[0].reason, attempt + 1)
        again = {f.id for f in transient}
        pending = [r for r in pending if r.doc.id in again]
        _backoff(attempt, backoff_s)
    return out


def delete_with_retries(
    store: IndexStore, target: str, ids: Sequence[str], *, retries: int, backoff_s: float
) -> tuple[int, list[DocFailure]]:
    """Delete; retry transient refusals. Returns (how many existed, permanently refused deletions)."""
    deleted = 0
    refused: list[DocFailure] = []
    pending = list(ids)
    for attempt in range(retries + 1):
        try:
            return deleted + store.delete(target, pending), refused
        except DeleteFailed as exc:
            deleted += exc.deleted
            refused.extend(f for f in exc.failures if not f.transient)
            transient = [f for f in exc.failures if f.transient]
            if not transient:
                return deleted, refused
            if attempt == retries:
                raise _still_refused("deletions", transient, retries) from exc
            pending = [f.id for f in transient]
            _backoff(attempt, backoff_s)
    return deleted, refused
