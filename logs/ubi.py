"""User Behavior Insights (UBI 1.3.0) at the edges: Sift's impressions and click records as UBI `queries` and
`events` documents, and UBI documents (or one plain JSONL shape) back as Sift's.

Why: a site that already collects UBI (OpenSearch's plugin, its JavaScript collector, its own analytics) can
train Sift on it, and Sift's own logs can go to any UBI tool. What UBI has no slot for (index, offset, logged
features, exploration, interleaving teams, idempotency ids, flags) travels in `query_attributes` /
`event_attributes`, which the schema leaves open, so an export imports back unchanged. The reading side is
lenient where UBI producers differ (hits wrapped in `_source`, a request's `ext.ubi`, `query_response_object_ids`,
`position.index`, `event_attributes.session_id`) and strict where training depends on it (a query, a clicked
object, a time). See docs/guides/learning-from-clicks.md, "Bring your own click log (UBI)".
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from logs.clicklog import ClickRecord
from logs.querylog import QueryEvent, to_utc

APPLICATION = "sift"
SUGGEST_APPLICATION = "sift-suggest"
MAX_ID = 100  # UBI's maxLength of query_id, client_id, session_id, user_id
MAX_OBJECT_ID = 256
MAX_QUERY_CHARS = 1000  # what the search API accepts
UNKNOWN_ORDINAL = 0  # a conversion sent without positions whose impression is gone: not a 1-based position

# UBI action names → Sift event types; any other action (page_exit, hover, impression...) is not stored.
ACTIONS: dict[str, Literal["click", "conversion", "view"]] = {
    "click": "click",
    "conversion": "conversion",
    "purchase": "conversion",
    "add_to_cart": "conversion",
    "view": "view",
    "watch": "view",
}


def ubi_time(ts: datetime) -> str:
    """ISO 8601 in UTC with a trailing Z (OpenSearch needs a zone)."""
    return to_utc(ts).isoformat().replace("+00:00", "Z")


def digest(*parts: object) -> str:
    raw = json.dumps(parts, separators=(",", ":"), default=str, ensure_ascii=False)
    return hashlib.sha256(raw.encode()).hexdigest()[:32]


def fit(value: str, limit: int = MAX_ID) -> str:
    """`value` if UBI's length limit allows it, else a stable digest of it (the full value then travels in the
    attributes)."""
    return value if len(value) <= limit else "sha256-" + hashlib.sha256(value.encode()).hexdigest()


def _drop_none(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


# -- export ---------------------------------------------------------------------------------------------------
def query_document(imp: QueryEvent) -> dict[str, Any]:
    """The UBI `queries` document of one impression (search or suggest)."""
    qid = imp.query_id or "sift-" + digest(imp.query, imp.ts.isoformat(), imp.shown, imp.session_id)
    attrs = _drop_none(
        {
            "type": "suggest" if imp.type == "suggest" else None,
            "index": imp.index,
            "offset": imp.offset,
            "result_count": imp.result_count,
            "session_id": imp.session_id,
            "user_token": imp.user_token,
            "client": imp.client if imp.client and len(imp.client) > MAX_ID else None,
            "query_id": qid if len(qid) > MAX_ID else None,
            "versions": imp.versions,
            "explored": imp.explored,
            "teams": imp.teams,
            "features": imp.features,
        }
    )
    doc: dict[str, Any] = {
        "application": SUGGEST_APPLICATION if imp.type == "suggest" else APPLICATION,
        "query_id": fit(qid),
        "user_query": imp.query,
        "timestamp": ubi_time(imp.ts),
        "query_response_hit_ids": list(imp.shown or []),
        "query_attributes": attrs,
    }
    if imp.request_id:
        doc["query_response_id"] = imp.request_id
    if imp.client:
        doc["client_id"] = fit(imp.client)
    return doc


def _position_of(obj: str, imp: QueryEvent | None) -> int | None:
    if imp is None or not imp.shown or obj not in imp.shown:
        return None
    return (imp.offset or 0) + imp.shown.index(obj) + 1


def event_documents(rec: ClickRecord, imp: QueryEvent | None = None) -> list[dict[str, Any]]:
    """The UBI `events` documents of one click record: one per object acted on (UBI names one object per event;
    `part`/`parts` let the import put the record back together). A position the client did not send is taken
    from the impression (`position_sent: false`), or is 0 when the impression is gone."""
    out = []
    for i, obj in enumerate(rec.object_ids):
        pos = rec.positions[i] if rec.positions else _position_of(obj, imp)
        attrs = _drop_none(
            {
                "object": _drop_none(
                    {"object_id": fit(obj, MAX_OBJECT_ID), "object_id_field": "id" if rec.source == "search" else None}
                ),
                "position": {"ordinal": pos if pos is not None else UNKNOWN_ORDINAL},
                "object_id": obj if len(obj) > MAX_OBJECT_ID else None,
                "event_id": rec.event_id,
                "event_name": rec.event_name,
                "type": rec.type,
                "part": i,
                "parts": len(rec.object_ids),
                "position_sent": False if rec.positions is None else None,
                "received_at": ubi_time(rec.received_at),
                "index": rec.index,
                "source": rec.source,
                "flagged": rec.flagged,
                "query_id": rec.query_id if len(rec.query_id) > MAX_ID else None,
                "session_id": rec.session_id if rec.session_id and len(rec.session_id) > MAX_ID else None,
                "user_token": rec.user_token if rec.user_token and len(rec.user_token) > MAX_ID else None,
                "client": rec.client if rec.client and len(rec.client) > MAX_ID else None,
            }
        )
        doc = {
            "application": SUGGEST_APPLICATION if rec.source == "suggest" else APPLICATION,
            "action_name": rec.type,
            "query_id": fit(rec.query_id),
            "timestamp": ubi_time(rec.ts),
            "user_query": rec.query,
            "event_attributes": attrs,
        }
        for key, value in (("session_id", rec.session_id), ("user_id", rec.user_token), ("client_id", rec.client)):
            if value:
                doc[key] = fit(value)
        out.append(doc)
    return out


# -- import: what a line may hold -------------------------------------------------------------------------------
class UbiQueryIn(BaseModel):
    """A UBI `queries` document as producers write it (the fields Sift reads; others are ignored)."""

    model_config = ConfigDict(extra="ignore")

    user_query: str = Field(min_length=1, max_length=MAX_QUERY_CHARS)
    query_id: str | None = Field(default=None, min_length=1, max_length=MAX_ID)
    client_id: str | None = Field(default=None, max_length=MAX_ID)
    application: str | None = Field(default=None, max_length=MAX_ID)
    timestamp: datetime | None = None
    query_response_id: str | None = None
    query_response_hit_ids: list[str | int] | None = None
    query_response_object_ids: list[str | int] | None = None  # the name before UBI 1.0
    query_attributes: dict[str, Any] = Field(default_factory=dict)


class UbiEventIn(BaseModel):
    """A UBI `events` document (the fields Sift reads; others are ignored)."""

    model_config = ConfigDict(extra="ignore")

    action_name: str = Field(min_length=1, max_length=MAX_ID)
    timestamp: datetime
    query_id: str | None = Field(default=None, max_length=MAX_ID)
    session_id: str | None = Field(default=None, max_length=MAX_ID)
    client_id: str | None = Field(default=None, max_length=MAX_ID)
    user_id: str | None = Field(default=None, max_length=MAX_ID)
    application: str | None = Field(default=None, max_length=MAX_ID)
    event_attributes: dict[str, Any] = Field(default_factory=dict)


class PlainClick(BaseModel):
    """One acted-on result of a plain JSONL search line."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=512, description="The document clicked (one of `shown`).")
    position: int | None = Field(
        default=None, ge=1, description="1-based absolute position (offset included); default: from `shown`."
    )
    time: datetime | None = Field(default=None, description="When it was clicked (default: the search's time).")
    type: Literal["click", "conversion"] = Field(default="click", description="click or conversion.")


class PlainSearch(BaseModel):
    """The plain JSONL shape: one line per search, with what was shown and what was clicked."""

    model_config = ConfigDict(extra="forbid")

    query: str = Field(min_length=1, max_length=MAX_QUERY_CHARS, description="The query as the user typed it.")
    shown: list[str] = Field(min_length=1, description="Document ids shown, in order, from position offset + 1.")
    clicks: list[PlainClick] = Field(default_factory=list, description="What the user clicked on that page.")
    session: str | None = Field(default=None, max_length=200, description="Session id.")
    user: str | None = Field(default=None, max_length=200, description="Opaque user id.")
    time: datetime = Field(description="When the search was made: ISO 8601 or epoch milliseconds.")
    query_id: str | None = Field(default=None, max_length=MAX_ID, description="Default: a hash of the line.")
    index: str | None = Field(default=None, description="Index searched (default: the app's default index).")
    offset: int = Field(default=0, ge=0, description="Results before shown[0] (pagination).")


def unwrap(doc: Any) -> dict[str, Any] | None:
    """The UBI document inside what an export may hold: a search hit (`_source`), a search request carrying
    `ext.ubi` (its query fields), or the document itself; None for a bulk action line (`{"index": {...}}`)."""
    if not isinstance(doc, dict):
        raise ValueError(f"expected a JSON object, got {type(doc).__name__}")
    if len(doc) == 1 and next(iter(doc)) in ("index", "create") and isinstance(next(iter(doc.values())), dict):
        return None
    if isinstance(doc.get("_source"), dict):
        doc = doc["_source"]
    ext = doc.get("ext")
    if isinstance(ext, dict) and isinstance(ext.get("ubi"), dict) and "user_query" not in doc:
        doc = dict(ext["ubi"])
    return doc


def kind(doc: Mapping[str, Any]) -> Literal["query", "event"]:
    return "event" if "action_name" in doc else "query"


def _is_sift(application: str | None) -> bool:
    return application in (APPLICATION, SUGGEST_APPLICATION)


def _opt_str(attrs: Mapping[str, Any], key: str) -> str | None:
    value = attrs.get(key)
    if value is None:
        return None
    if not isinstance(value, str | int):
        raise ValueError(f"query_attributes.{key} must be a string")
    return str(value)


def impression_from_ubi(q: UbiQueryIn, default_index: str | None, now: datetime) -> QueryEvent:
    """A query-log impression from a UBI query; Sift's own extras are read back only from Sift's exports."""
    attrs = q.query_attributes
    hits = q.query_response_hit_ids if q.query_response_hit_ids is not None else q.query_response_object_ids
    shown = [str(h) for h in hits or []]
    ts = q.timestamp or now
    qid = _opt_str(attrs, "query_id") if _is_sift(q.application) else None
    qid = qid or q.query_id or "ubi-" + digest(q.user_query, q.timestamp, q.client_id, shown)
    fields: dict[str, Any] = {
        "type": "search",
        "ts": ts,
        "query": q.user_query,
        "result_count": len(shown),
        "request_id": q.query_response_id or "",
        "session_id": _opt_str(attrs, "session_id"),
        "index": _opt_str(attrs, "index") or default_index,
        "query_id": qid,
        "shown": shown,
        "offset": attrs.get("offset", 0),
        "user_token": _opt_str(attrs, "user_token") or _opt_str(attrs, "user_id"),
        "client": q.client_id,
    }
    if _is_sift(q.application):
        fields["client"] = _opt_str(attrs, "client") or q.client_id
        fields["result_count"] = attrs.get("result_count", len(shown))
        if attrs.get("type") == "suggest" or q.application == SUGGEST_APPLICATION:
            fields["type"] = "suggest"
        for key in ("versions", "explored", "teams", "features"):
            fields[key] = attrs.get(key)
    return QueryEvent.model_validate(fields)
