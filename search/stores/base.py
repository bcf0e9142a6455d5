"""The IndexStore protocol: one interface over Elasticsearch and the embedded store.

Physical indices are versions (`NAME-v<timestamp>`) behind an alias `NAME`; a reindex writes a new version
and only then moves the alias, so readers never see a half-built index.
"""

from __future__ import annotations

from collections.abc import Sequence
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


class DocFailure(BaseModel):
    """A single record the store refused, with the store's own reason."""

    id: str
    reason: str


class WriteResult(BaseModel):
    """Outcome of a bulk write: what landed and what did not."""

    written: int = 0
    failures: list[DocFailure] = Field(default_factory=list)


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

    def current_version(self, name: str) -> str | None:
        """The version the alias points at, or None."""

    def list_versions(self, name: str) -> list[VersionInfo]:
        """All physical versions of `name`, oldest first."""

    def drop_version(self, version: str) -> None:
        """Delete a physical version (never the current one)."""

    def upsert(self, target: str, records: Sequence[StoredRecord]) -> WriteResult:
        """Insert or replace records; per-record failures are returned, not raised."""

    def delete(self, target: str, ids: Sequence[str]) -> int:
        """Delete ids; returns how many existed."""

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
