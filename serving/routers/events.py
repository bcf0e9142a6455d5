"""POST /v1/events: click / conversion / view events on what a search or suggest response showed.

The body is read here, not by FastAPI's JSON parser, for two reasons: its size is capped before it is parsed
(413), and `navigator.sendBeacon` can only send a CORS-safe `text/plain` body, which must be accepted too.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from logs.events import EventsAccepted, EventsBatch, EventsRejected
from serving.auth import EventsAuth
from serving.dependencies import BackendDep

router = APIRouter()


def _inlined(schema: Any, defs: dict[str, Any]) -> Any:
    """The schema with its local `$defs` references inlined: an `openapi_extra` body cannot carry `$defs`."""
    if isinstance(schema, dict):
        ref = schema.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            return _inlined(defs[ref.removeprefix("#/$defs/")], defs)
        return {k: _inlined(v, defs) for k, v in schema.items() if k != "$defs"}
    if isinstance(schema, list):
        return [_inlined(v, defs) for v in schema]
    return schema


_BATCH_SCHEMA = EventsBatch.model_json_schema()
_SCHEMA = {"application/json": {"schema": _inlined(_BATCH_SCHEMA, _BATCH_SCHEMA.get("$defs", {}))}}


def _problem(status: int, detail: Any) -> JSONResponse:
    return JSONResponse(status_code=status, content={"detail": detail})


async def _read_capped(request: Request, cap: int) -> bytes | None:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > cap:
        return None
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > cap:
            return None
    return bytes(body)


@router.post(
    "/v1/events",
    status_code=202,
    response_model=EventsAccepted,
    openapi_extra={"requestBody": {"required": True, "content": _SCHEMA}},
    responses={
        413: {"description": "Body larger than click_log.max_body_bytes"},
        422: {"description": "A message per bad event; nothing of the batch was stored"},
        501: {"description": "This server has no click log (query_log or click_log backend: none)"},
    },
)
async def events(request: Request, backend: BackendDep, principal: EventsAuth) -> Any:
    """Store a batch of 1 to 1,000 events, all or nothing. Each event refers to a response by `query_id`
    and to what it showed by `object_ids` and 1-based `positions`; `event_id` makes a retried batch safe.
    A response of an index the key may not read is an unknown query_id; clicks past the caps of `click_log`
    are stored flagged (ignored by training)."""
    recorder = backend.events
    if recorder is None:
        return _problem(501, "this server records no events (query_log or click_log backend is none)")
    cap = recorder.config.max_body_bytes
    raw = await _read_capped(request, cap)
    if raw is None:
        return _problem(413, f"the body is larger than {cap} bytes; send fewer events per batch")
    try:
        payload = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        return _problem(422, [{"loc": ["body"], "msg": f"the body is not JSON: {exc}", "type": "json_invalid"}])
    except RecursionError:  # the parser's own limit, reached long before a real batch (4 levels deep) would
        msg = "the body nests arrays or objects too deeply (an events batch is 4 levels deep)"
        return _problem(422, [{"loc": ["body"], "msg": msg, "type": "json_invalid"}])
    try:
        batch = EventsBatch.model_validate(payload)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_context=False, include_input=False)
        return _problem(422, [{**e, "loc": ["body", *e["loc"]]} for e in errors])
    try:
        accepted = await recorder.record(batch, principal)
    except EventsRejected as exc:
        return _problem(422, exc.errors)
    return JSONResponse(status_code=202, content=accepted.model_dump())
