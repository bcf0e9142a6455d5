"""The IndexStore protocol: one interface over Elasticsearch and the embedded store.

Physical indices are versions (`NAME-v<timestamp>`) behind an alias `NAME`; a reindex writes a new version
and only then moves the alias, so readers never see a half-built index.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol, runtime_checkable

from pydantic import BaseModel, Field

from search.documents import Document, Hit, StoredRecord
from search.filters import Filter
from search.schema import IndexSchema


class StoreError(RuntimeError):
    """The store failed as a whole (unreachable, corrupt): callers may retry later."""


class StoreUnavailable(StoreError):
    """The backing service cannot be reached."""


class IndexNotFound(StoreError, KeyError):
    """No such alias or version."""


class LockHeld(StoreError):
    """Another build holds the index's build lock (its lease names the holder)."""


class LockLost(StoreError):
    """Our lease expired and another build took the lock over: this build must not move the alias."""


class AliasConflict(StoreError):
    """A compare-and-swap of an alias found it no longer where the build started."""


class DeleteFailed(StoreError):
    """Some deletions were refused (not merely absent ids); `deleted` counts those that were applied."""

    def __init__(self, message: str, *, deleted: int, failures: list[DocFailure]) -> None:
        super().__init__(message)
        self.deleted = deleted
        self.failures = failures


class DocFailure(BaseModel):
    """A single record the store refused, with the store's own reason.

    `transient` marks refusals that may pass on a retry (429 queue full, disk flood-stage block): the pipeline
    retries those with backoff instead of dead-lettering them."""

    id: str
    reason: str
    status: int | None = None
    transient: bool = False


class WriteResult(BaseModel):
    """Outcome of a bulk write: what landed and what did not."""

    written: int = 0
    failures: list[DocFailure] = Field(default_factory=list)


class LeaseInfo(BaseModel):
    """Who holds a build lock and until when; stored as the lock document / lock file."""

    index: str
    owner: str
    host: str
    pid: int
    token: str
    acquired: datetime
    expires: datetime

    def describe(self) -> str:
        return f"{self.owner} (host {self.host}, pid {self.pid}, lease until {self.expires.isoformat()})"


@runtime_checkable
class BuildLock(Protocol):
    """A held lease on one index's build lock."""

    @property
    def lease(self) -> LeaseInfo:
        """The lease as last written."""

    def renew(self) -> None:
        """Extend the lease by its length; raises LockLost when another build took it over."""

    def release(self) -> None:
        """Give the lock back (a no-op when it was taken over); idempotent."""


class VersionInfo(BaseModel):
    name: str
    version: str
    complete: bool
    count: int | None = None


@runtime_checkable
class IndexStore(Protocol):
    """Storage and search for one kind of backend. `target` is an alias or a concrete version name."""

    def warm_up(self) -> None:
        """Open clients/files; idempotent."""

    def ping(self) -> bool:
        """Whether the backing service answers (readiness probes)."""

    def create_version(self, name: str, dims: int, schema: IndexSchema) -> str:
        """Create an empty physical index for alias `name`; returns its version name."""

    def mark_complete(self, version: str) -> None:
        """Record that a version holds every document of its build."""

    def switch_alias(self, name: str, version: str) -> None:
        """Point alias `name` at `version` atomically."""

    def swap_alias(self, name: str, version: str, expected: str | None) -> None:
        """Compare-and-swap: point `name` at `version` only if it still points at `expected` (None: no alias
        yet); raises AliasConflict otherwise, leaving the alias alone. Builds use this, so a build that started
        from one version never overwrites what another build put live meanwhile."""

    def acquire_build_lock(self, index: str, owner: str, lease_s: float) -> BuildLock:
        """Take the build lock of `index` for `lease_s` seconds, or raise LockHeld naming the holder. An
        expired lease, or one whose holder pid is dead on this host, is taken over."""

    def current_version(self, name: str) -> str | None:
        """The version the alias points at, or None."""

    def list_versions(self, name: str) -> list[VersionInfo]:
        """All physical versions of `name`, oldest first."""

    def drop_version(self, version: str) -> None:
        """Delete a physical version (never the current one)."""

    def upsert(self, target: str, records: Sequence[StoredRecord]) -> WriteResult:
        """Insert or replace records; per-record failures are returned, not raised."""

    def delete(self, target: str, ids: Sequence[str]) -> int:
        """Delete ids; returns how many existed. Refused deletions raise DeleteFailed (never counted)."""

    def get(self, target: str, doc_id: str) -> Document | None:
        """One document by id."""

    def get_hashes(self, target: str, ids: Sequence[str]) -> dict[str, str]:
        """Stored content hashes of these ids (absent ids left out), for skipping unchanged documents."""

    def count(self, target: str) -> int:
        """Number of documents."""

    def refresh(self, target: str) -> None:
        """Make writes visible to search."""

    def schema(self, target: str) -> IndexSchema:
        """The schema the index was created with."""

    def get_many(self, target: str, ids: Sequence[str]) -> dict[str, Document]:
        """The documents of `ids` that exist, by id (one round trip: a results page after fusion)."""

    def bm25_search(
        self, target: str, query: str, k: int, filters: Sequence[Filter] = (), *, with_docs: bool = True
    ) -> list[Hit]:
        """Lexical top-k over title and body. `with_docs=False` leaves `Hit.doc` None: fusion needs only ids and
        scores, and loading 100 documents per retriever only to show 10 is most of a search's store cost."""

    def knn_search(
        self, target: str, vector: Sequence[float], k: int, filters: Sequence[Filter] = (), *, with_docs: bool = True
    ) -> list[Hit]:
        """Dense top-k by cosine similarity (a document scores as its best chunk); `with_docs` as for BM25."""

    def close(self) -> None:
        """Release clients/files."""
