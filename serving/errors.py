"""Errors → status codes callers can act on, with no exception text in a response.

422 for bad input (a body too deeply nested to parse included), 404 for an unknown index, 503 with Retry-After
when the store is unreachable or overloaded, 500 for anything else. Server-side detail (store messages,
tracebacks) goes to the log under a request id, which the response carries (`request_id`, `X-Request-ID`) so an
operator can find it.

A 422 body never echoes the input (pydantic's `input` is dropped: a lone surrogate cannot be UTF-8 encoded, a
500-deep list overflowed the encoder's recursion) and is bounded (at most `MAX_ERRORS` errors of short text), and
the 422 handler cannot fail: bad input is never a 500, so never a logged traceback. A logged fault holds neither
the request's query (a digest instead) nor a validation error's input, and is at most `MAX_TRACE_CHARS` long.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
import traceback
import uuid
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from search.facets import FacetError
from search.service import RequestError
from search.stores.base import IndexNotFound, StoreError, StoreUnavailable

log = logging.getLogger("sift.api")

RETRY_AFTER_S = 5
MAX_ERRORS = 20  # validation errors in one 422 body
MAX_LOC = 12  # parts of one error's location
MAX_TEXT_CHARS = 300  # one message
MAX_TRACE_CHARS = 16_000  # one logged fault
_CLIENT_ID = re.compile(r"^[A-Za-z0-9._\-]{1,64}$")
_FALLBACK = {"loc": ["body"], "msg": "the request is not valid", "type": "value_error"}
_BODY_PARSE_FAILED = "There was an error parsing the body"  # FastAPI's 400 for a body its parser gave up on
_UNPARSEABLE = {
    "loc": ["body"],
    "msg": "the request body could not be parsed: JSON nested too deeply, or not a valid body",
    "type": "json_invalid",
}


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
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    return f"<query sha256:{digest} len:{len(text)}>"


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


def _exception_line(exc: BaseException) -> str:
    """An exception's closing line; for a validation error its count, not its errors (they carry the input)."""
    if isinstance(exc, RequestValidationError | ValidationError):
        return f"{type(exc).__qualname__}: {len(exc.errors())} validation error(s) (input not logged)\n"
    return "".join(traceback.format_exception_only(type(exc), exc))


def fault_trace(exc: BaseException) -> str:
    """The exception chain as `traceback` prints it, but validation errors without their input, at most
    `MAX_TRACE_CHARS` long (the innermost frames kept) and in text every log handler can encode."""
    chain: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and len(chain) < 8 and all(cur is not c for c in chain):
        chain.append(cur)
        cur = cur.__cause__ if cur.__cause__ is not None else None if cur.__suppress_context__ else cur.__context__
    parts = [
        "Traceback (most recent call last):\n" + "".join(traceback.format_tb(e.__traceback__)) + _exception_line(e)
        for e in reversed(chain)
    ]
    text = "\nThen, while handling it:\n\n".join(parts).rstrip()
    if len(text) > MAX_TRACE_CHARS:
        head = MAX_TRACE_CHARS // 4
        cut = len(text) - MAX_TRACE_CHARS
        text = f"{text[:head]}\n… {cut} characters left out …\n{text[-(MAX_TRACE_CHARS - head) :]}"
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _server_fault(request: Request, status: int, detail: str, exc: Exception, **headers: str) -> JSONResponse:
    rid = request_id(request)
    trace = redact(fault_trace(exc), getattr(request.state, "sift_query", None))
    log.error("%s %s → %d [request %s]\n%s", request.method, _clean(request.url.path), status, rid, trace)
    return JSONResponse(
        status_code=status,
        headers={"X-Request-ID": rid, **headers},
        content={"detail": detail, "request_id": rid},
    )


def _clean(text: str, limit: int = MAX_TEXT_CHARS) -> str:
    """At most `limit` characters, lone surrogates (which UTF-8 cannot hold) replaced by `?`."""
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return text.encode("utf-8", "replace").decode("utf-8")


def _clean_value(value: Any) -> Any:
    """A JSON-safe scalar: None, bools, longs and finite floats as they are, text short; None for anything else
    (a list or an exception may hold the input, and printing a 5,000-deep list recurses)."""
    if value is None or isinstance(value, bool) or (isinstance(value, int) and abs(value) < 2**63):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return value
    return _clean(value, 120) if isinstance(value, str) else None


def safe_errors(errors: Sequence[Any]) -> list[dict[str, Any]]:
    """Validation errors as a bounded, input-free, JSON-safe list: `loc`, `msg`, `type` and scalar `ctx` of at
    most `MAX_ERRORS` errors, then one entry saying how many more there were."""
    out: list[dict[str, Any]] = []
    for err in list(errors[:MAX_ERRORS]):
        e = err if isinstance(err, dict) else {"msg": str(err)}
        loc = e.get("loc", ())
        item: dict[str, Any] = {
            "loc": [_clean_value(p) for p in (loc if isinstance(loc, list | tuple) else [loc])[:MAX_LOC]],
            "msg": _clean(str(e.get("msg", "invalid value"))),
            "type": _clean(str(e.get("type", "value_error")), 60),
        }
        ctx = e.get("ctx")
        if isinstance(ctx, dict) and ctx:
            scalars = {_clean(str(k), 60): _clean_value(v) for k, v in list(ctx.items())[:8]}
            if kept := {k: v for k, v in scalars.items() if v is not None}:
                item["ctx"] = kept
        out.append(item)
    if len(errors) > MAX_ERRORS:
        more = f"{len(errors) - MAX_ERRORS} more errors not shown"
        out.append({"loc": ["body"], "msg": more, "type": "too_many_errors"})
    return out


async def _invalid(_: Request, exc: Exception) -> JSONResponse:
    """422 that cannot fail: anything unexpected in the errors gives a plain message, never a 500 (whose logged
    traceback would carry the input)."""
    try:
        errors = exc.errors() if isinstance(exc, RequestValidationError) else []
        return JSONResponse(status_code=422, content={"detail": safe_errors(errors)})
    except Exception:  # the plain answer is the point
        return JSONResponse(status_code=422, content={"detail": [_FALLBACK]})


async def _http_error(request: Request, exc: Exception) -> Response:
    """FastAPI's answer, except for a body its parser gave up on (JSON deeper than the parser's recursion
    limit, an undecodable form): 422 with a clear message, like any other bad input."""
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 400 and exc.detail == _BODY_PARSE_FAILED:
        return JSONResponse(status_code=422, content={"detail": [_UNPARSEABLE]})
    return await http_exception_handler(request, exc)


async def _request_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, (RequestError, FacetError))  # a facet the index cannot count: search/facets.py
    loc = [_clean(p, 60) for p in ["body", *exc.field.split(".")][:MAX_LOC]]
    detail = [{"loc": loc, "msg": _clean(exc.message), "type": "value_error"}]
    return JSONResponse(status_code=422, content={"detail": detail})


async def _not_found(_: Request, exc: Exception) -> JSONResponse:
    detail = _clean(str(exc.args[0])) if exc.args else "index not found"
    return JSONResponse(status_code=404, content={"detail": detail})


async def _unavailable(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StoreError)
    detail = "the index store is unreachable or overloaded; retry later"
    return _server_fault(request, 503, detail, exc, **{"Retry-After": str(RETRY_AFTER_S)})


async def _internal(request: Request, exc: Exception) -> JSONResponse:
    """A fault of this server (a vector dimension mismatch, a mapping error, a bug): 500, details logged."""
    return _server_fault(request, 500, "internal error; quote the request id when reporting it", exc)


def install_error_handlers(api: FastAPI) -> None:
    api.add_exception_handler(RequestValidationError, _invalid)
    api.add_exception_handler(StarletteHTTPException, _http_error)
    api.add_exception_handler(RequestError, _request_error)
    api.add_exception_handler(FacetError, _request_error)
    api.add_exception_handler(StoreUnavailable, _unavailable)
    api.add_exception_handler(IndexNotFound, _not_found)
    api.add_exception_handler(StoreError, _unavailable)
    api.add_exception_handler(ValueError, _internal)
    api.add_exception_handler(Exception, _internal)
