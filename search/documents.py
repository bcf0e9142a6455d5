"""Documents and the typed records that flow between stages.

A `Document` is what a source yields; a `StoredRecord` is what an IndexStore keeps (the document plus its
chunk vectors). Keeping them apart lets the stores stay ignorant of cleaning and embedding.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

EXPANSION_FIELD = "doc2query"  # `fields` key of the queries doc2query wrote (indexing/doc2query.py): BM25 only


def bm25_text(doc: Document) -> str:
    """What BM25 scores for a document in both stores: title, body and any doc2query expansion queries."""
    extra = doc.fields.get(EXPANSION_FIELD)
    queries = "\n".join(str(q) for q in extra) if isinstance(extra, list) else ""
    return f"{doc.title}\n{doc.body}\n{queries}" if queries else f"{doc.title}\n{doc.body}"


class Document(BaseModel):
    """One source document, as read and cleaned."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=512, description="Stable id, unique within an index.")
    title: str = Field(default="", description="Title; may be empty.")
    body: str = Field(default="", description="Main text.")
    url: str | None = Field(default=None, description="Where the document lives.")
    fields: dict[str, Any] = Field(default_factory=dict, description="Extra fields; declared ones become filterable.")
    published_at: datetime | None = Field(default=None, description="Publication time, if known.")
    updated_at: datetime | None = Field(default=None, description="Last change in the source, if known.")
    deleted: bool = Field(default=False, description="Incremental runs delete records marked so.")

    @field_validator("id", mode="before")
    @classmethod
    def _id_to_str(cls, v: Any) -> Any:
        return str(v) if isinstance(v, int) else v

    def content_hash(self) -> str:
        """Hash of everything that ends up in the index, so unchanged documents can be recognised."""
        payload = json.dumps(self.model_dump(mode="json", exclude={"deleted"}), sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(payload.encode()).hexdigest()


class Chunk(BaseModel):
    """A token-bounded window of a document's text, the unit that gets a vector."""

    model_config = ConfigDict(extra="forbid")

    parent_id: str
    index: int = Field(ge=0, description="Position of the chunk within its parent.")
    text: str
    start: int = Field(ge=0, description="Character offset of the window in title + body.")
    end: int = Field(ge=0)


class StoredRecord(BaseModel):
    """What an IndexStore writes: the document and one vector per chunk (may be empty for BM25-only)."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    doc: Document
    vectors: list[list[float]] = Field(default_factory=list)
    chunk_spans: list[tuple[int, int]] = Field(default_factory=list)
    content_hash: str = ""


class Hit(BaseModel):
    """One scored result of a store query."""

    id: str
    score: float
    doc: Document | None = None
