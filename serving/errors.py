"""Errors → status codes callers can act on, with no exception text in a response.

422 for bad input, 404 for an unknown index, 503 with Retry-After when the store is unreachable or overloaded,
500 for anything else. Server-side detail (store messages, tracebacks) goes to the log under a request id,
which the response carries (`request_id`, `X-Request-ID`) so an operator can find it.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
import traceback
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from search.service import RequestError
from search.stores.base import IndexNotFound, StoreError, StoreUnavailable

log = logging.getLogger("sift.api")

RETRY_AFTER_S = 5
_CLIENT_ID = re.compile(r"^[A-Za-z0-9._\-]{1,64}$")


OVERLOADED = "the server is overloaded; retry later"


def retry_later(detail: str, retry_after_s: int = RETRY_AFTER_S) -> JSONResponse:
    """503 with Retry-After: the caller may try again (the replica is full, a deadline passed, the store is down)."""
    return JSONResponse(status_code=503, headers={"Retry-After": str(retry_after_s)}, content={"detail": detail})


def request_id(request: Request) -> str:
    """The caller's X-Request-ID when it is a plain token, else a new one."""
    given = request.headers.get("x-request-id", "")
    return given if _CLIENT_ID.match(given) else uuid.uuid4().hex


def note_query(request: Request, text: str) -> None:
    """Remember the request's query text, so a fault logged for this request can leave it out."""
    request.state.sift_query = text


def query_tag(text: str) -> str:
    """What logs say instead of a query: a short digest (to correlate lines) and the length."""
    return f"<query sha256:{hashlib.sha256(text.encode('utf-8')).hexdigest()[:12]} len:{len(text)}>"


def redact(text: str, query: str | None) -> str:
    """`text` without the query: the whole of it, then each of its words of 3+ characters (a store's error
    often quotes the query, or the terms it parsed out of it)."""
    if not query or not query.strip():
        return text
    out = re.sub(re.escape(query.strip()), "\0", text, flags=re.IGNORECASE)
    words = sorted({w for w in re.findall(r"\w{3,}", query)}, key=len, reverse=True)
    if words:
        out = re.sub(r"\b(" + "|".join(map(re.escape, words)) + r")\b", "<q>", out, flags=re.IGNORECASE)
    return out.replace("\0", query_tag(query))


def _server_fault(request: Request, status: int, detail: str, exc: Exception, **headers: str) -> JSONResponse:
    rid = request_id(request)
    trace = redact("".join(traceback.format_exception(exc)).rstrip(), getattr(request.state, "sift_query", None))
    log.error("%s %s → %d [request %s]\n%s", request.method, request.url.path, status, rid, trace)
    return JSONResponse(
        status_code=status,
        headers={"X-Request-ID": rid, **headers},
        content={"detail": detail, "request_id": rid},
    )


def _json_safe(value: Any) -> Any:
    """JSON has no Infinity or NaN: a rejected `1e999` is echoed as a string, not a 500."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


async def _invalid(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return JSONResponse(status_code=422, content={"detail": _json_safe(jsonable_encoder(exc.errors()))})


async def _request_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestError)
    loc = ["body", *exc.field.split(".")]
    return JSONResponse(status_code=422, content={"detail": [{"loc": loc, "msg": exc.message, "type": "value_error"}]})


async def _not_found(_: Request, exc: Exception) -> JSONResponse:
    return JSONResponse(status_code=404, content={"detail": str(exc.args[0]) if exc.args else "index not found"})


async def _unavailable(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StoreError)
    detail = "the index store is unreachable or overloaded; retry later"
    return _server_fault(request, 503, detail, exc, **{"Retry-After": str(RETRY_AFTER_S)})


async def _internal(request: Request, exc: Exception) -> JSONResponse:
    """A fault of this server (a vector dimension mismatch, a mapping error, a bug): 500, details logged."""
    return _server_fault(request, 500, "internal error; quote the request id when reporting it", exc)


def install_error_handlers(api: FastAPI) -> None:
    api.add_exception_handler(RequestValidationError, _invalid)
    api.add_exception_handler(RequestError, _request_error)
    api.add_exception_handler(StoreUnavailable, _unavailable)
    api.add_exception_handler(IndexNotFound, _not_found)
    api.add_exception_handler(StoreError, _unavailable)
    api.add_exception_handler(ValueError, _internal)
    api.add_exception_handler(Exception, _internal)
