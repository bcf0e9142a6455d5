"""Summaries over HTTP: `POST /v1/summarize` (a query plus result ids, or a full search request) and
`GET /v1/summarize` (query params, for browsers' EventSource) stream Server-Sent Events: `token` events as the
LM writes, then one `summary` event with the checked sentences, their citations and support scores (`error` on
failure). The ingress fetches the documents and relays the backend's summary client's stream; a client that
goes away cancels the stream, which cancels the deployment's generator, which stops generate() at the next token.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from logs.querylog import NullQueryLog
from search.documents import Document
from search.service import MAX_QUERY_CHARS, SearchRequest, SearchResponse, SearchService
from search.stores.base import IndexNotFound, StoreError
from serving.admission import Overloaded
from serving.auth import Principal, SummarizeAuth
from serving.backend import Backend
from serving.dependencies import BackendDep, SummaryMetricsDep
from serving.errors import OVERLOADED, fault_trace, note_query, redact, request_id, retry_later
from serving.inputs import check_filter_values
from serving.metrics import SummaryMetrics
from serving.summary_clients import SummaryStream

log = logging.getLogger("sift.summarize")

MAX_IDS = 20
SUMMARIZE_PATH = "/v1/summarize"

_STREAM_RESPONSES: dict[int | str, dict[str, Any]] = {  # OpenAPI docs of both summarize routes
    200: {"content": {"text/event-stream": {}}, "description": "token events, then one summary event"},
    404: {"description": "Unknown index or result ids"},
    503: {"description": "Summaries disabled, or the store is unreachable"},
}

router = APIRouter()


class SummarizeRequest(BaseModel):
    """Either `query` + `ids` (results the client already has) or `search` (run it, summarize the top k)."""

    model_config = ConfigDict(extra="forbid")

    query: str | None = Field(default=None, max_length=MAX_QUERY_CHARS, description="The query the results answer.")
    ids: list[str] | None = Field(
        default=None, min_length=1, max_length=MAX_IDS, description="Result ids, best first (at most 20)."
    )
    index: str | None = Field(
        default=None,
        pattern=r"^[a-z0-9][a-z0-9_\-]{0,127}$",
        description="Index (alias or version) the ids belong to; the server's default if omitted.",
    )
    search: SearchRequest | None = Field(default=None, description="A search request whose top k get summarized.")
    k: int | None = Field(default=None, ge=1, le=MAX_IDS, description="Results summarized (server default: 5).")
    max_new_tokens: int | None = Field(
        default=None, ge=1, le=8192, description="Lower the server's cap on generated tokens."
    )

    @field_validator("query")
    @classmethod
    def _not_blank(cls, v: str | None) -> str | None:
        if v is not None and not v.strip():
            raise ValueError("query must not be empty")
        return v

    @field_validator("ids")
    @classmethod
    def _ids(cls, v: list[str] | None) -> list[str] | None:
        if v is None:
            return v
        if any(not i or len(i) > 512 for i in v):
            raise ValueError("ids must be 1 to 512 characters")
        return list(dict.fromkeys(v))

    @model_validator(mode="after")
    def _one_form(self) -> SummarizeRequest:
        if self.search is not None:
            if self.query is not None or self.ids is not None or self.index is not None:
                raise ValueError("give either search, or query and ids, not both")
        elif self.query is None or self.ids is None:
            raise ValueError("give query and ids, or search")
        return self


def sse(event: str, data: Any) -> str:
    """One SSE frame: `event:` line, one `data:` line (JSON never holds raw newlines), blank line."""
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False, separators=(',', ':'))}\n\n"


def summary_stream_url(response: SearchResponse, k: int = 5, path: str = SUMMARIZE_PATH) -> str | None:
    """The GET URL that streams the summary of a search response's top k (None when it has no results).

    It names the search by its `query_id`, never by its text: URLs end up in proxy, browser and access logs.
    The GET route reads the query back from the impression the search logged."""
    ids = [r.id for r in response.results[:k]]
    if not ids:
        return None
    params: list[tuple[str, str]] = [("query_id", response.query_id), ("index", response.index)]
    params += [("ids", i) for i in ids]
    return f"{path}?{urlencode(params)}"


UNKNOWN_QUERY_ID = "unknown or expired query_id; search again, or POST /v1/summarize"


async def _logged_query(
    backend: Backend, query_id: str, principal: Principal, index: str | None
) -> tuple[str, str] | None:
    """The (scrubbed) query and the index of a logged search impression; another replica's may need its flush
    interval.

    None, exactly as for an unknown id, for an impression of an index the key may not read or the server does
    not serve, or of another index than the one named: the answer must not tell that the impression exists
    (nor its timing: a refused one returns when an unknown one would have)."""
    runtime = backend.suggest
    if runtime is None or isinstance(runtime.query_log, NullQueryLog):
        return None
    qlog = runtime.query_log
    found = await asyncio.to_thread(qlog.impressions, [query_id])
    deadline = time.monotonic() + 2 * qlog.lookup_retry_s
    while query_id not in found and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        found = await asyncio.to_thread(qlog.impressions, [query_id])
    event = found.get(query_id)
    searched = (event.index if event is not None else None) or backend.service.config.default_index
    try:
        if event is None or event.type != "search" or (index is not None and index != searched):
            raise HTTPException(404)
        principal.check_index(searched)
    except (HTTPException, RequestValidationError):
        await asyncio.sleep(max(0.0, deadline - time.monotonic()))
        return None
    return event.query, searched


def can_link_summaries(backend: Backend) -> bool:
    """Whether `summary_stream_url` links resolve here: summaries are on and searches are logged."""
    runtime = backend.suggest
    logged = runtime is not None and not isinstance(runtime.query_log, NullQueryLog)
    return backend.summary_client is not None and logged


def _error(status: int, detail: Any, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(status_code=status, content={"detail": detail}, headers=headers)


def _fetch(service: SearchService, index: str, ids: Sequence[str]) -> tuple[list[Document], list[str]]:
    docs, missing = [], []
    for i in ids:
        d = service.store.get(index, i)
        if d is None:
            missing.append(i)
        else:
            docs.append(d)
    return docs, missing


async def _run(
    request: Request, body: SummarizeRequest, backend: Backend, metrics: SummaryMetrics, principal: Principal
) -> StreamingResponse | JSONResponse:
    started = time.perf_counter()
    service = backend.service
    note_query(request, body.query or (body.search.query if body.search is not None else ""))
    if body.search is not None:
        index = body.search.index or service.config.default_index
        principal.check_index(index, ("body", "search", "index"))
        await check_filter_values(service.store, index, body.search.filters, ("body", "search"))
    else:
        principal.check_index(body.index or service.config.default_index, ("body", "index"))
    client = backend.summary_client
    if client is None:
        return _error(503, "summaries are not enabled on this server")
    k = body.k or backend.summary_top_k
    try:
        if body.search is not None:  # a search like /v1/search's: it takes one of the replica's slots
            async with request.app.state.search_admission.slot() as lighter:
                resp = await service.search(body.search.model_copy(update={"offset": 0, "limit": max(k, 1)}), lighter)
            query, index, ids = body.search.query, resp.index, [r.id for r in resp.results[:k]]
            if not ids:
                return _error(404, "the search returned no results to summarize")
        else:
            assert body.query is not None and body.ids is not None
            query, index, ids = body.query, body.index or service.config.default_index, body.ids[:k]
        docs, missing = await asyncio.to_thread(_fetch, service, index, ids)
    except Overloaded:
        return retry_later(OVERLOADED)
    except IndexNotFound as exc:
        return _error(404, str(exc.args[0]) if exc.args else "index not found")
    except StoreError as exc:  # by type: a store's message may quote the query
        log.warning("summarize: the store failed (%s)", type(exc).__name__)
        return retry_later("the index store is unreachable or overloaded; retry later")
    if missing:
        return _error(404, {"message": "unknown result ids", "index": index, "ids": missing})
    stream = client.stream(query, docs, body.max_new_tokens)
    return StreamingResponse(
        _events(request, stream, metrics, started, query),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.post(SUMMARIZE_PATH, response_class=StreamingResponse, responses=_STREAM_RESPONSES)
async def summarize_post(
    body: SummarizeRequest, request: Request, backend: BackendDep, metrics: SummaryMetricsDep, principal: SummarizeAuth
) -> Any:
    """Stream a cited summary of the given results (or of a search's top results) as Server-Sent Events."""
    return await _run(request, body, backend, metrics, principal)


@router.get(SUMMARIZE_PATH, response_class=StreamingResponse, responses=_STREAM_RESPONSES)
async def summarize_get(
    request: Request,
    backend: BackendDep,
    metrics: SummaryMetricsDep,
    principal: SummarizeAuth,
    ids: list[str] = Query(description="Result ids, repeated (ids=a&ids=b) or comma-separated."),
    query_id: str | None = Query(
        default=None,
        pattern=r"^[A-Za-z0-9_\-]{1,64}$",
        description="The search's query_id (what `summary_url` uses: no query text in a URL).",
    ),
    query: str | None = Query(
        default=None, max_length=MAX_QUERY_CHARS, description="The query itself, where no query_id is given."
    ),
    index: str | None = None,
    k: int | None = Query(default=None, ge=1, le=MAX_IDS),
    max_new_tokens: int | None = Query(default=None, ge=1, le=8192),
) -> Any:
    """The same stream for EventSource (GET only): the URL `summary_stream_url` builds."""
    flat = [p for i in ids for p in i.split(",") if p]
    if (query is None) == (query_id is None):
        msg = "give either query_id (a search's) or query"
        raise RequestValidationError([{"loc": ("query", "query_id"), "msg": msg, "type": "value_error"}])
    if query_id is not None:
        logged = await _logged_query(backend, query_id, principal, index)
        if logged is None:
            return _error(404, UNKNOWN_QUERY_ID)
        query, index = logged
    try:
        body = SummarizeRequest(query=query, ids=flat, index=index, k=k, max_new_tokens=max_new_tokens)
    except ValidationError as exc:
        raise RequestValidationError(
            [{**e, "loc": ("query", *e["loc"])} for e in exc.errors(include_url=False, include_context=False)]
        ) from exc
    return await _run(request, body, backend, metrics, principal)


async def _events(
    request: Request, stream: SummaryStream, metrics: SummaryMetrics, started: float, query: str
) -> AsyncIterator[str]:
    """The SSE frames of one summary. A failure is logged as the API logs a server fault (serving.errors): the
    trace bounded and without the query (the summarizer's or the LM server's error text may quote it), under a
    request id the `error` event carries."""
    outcome = "cancelled"
    first = True
    try:
        async for ev in stream:
            if await request.is_disconnected():
                break
            if ev["event"] == "token":
                if first:
                    metrics.ttft.observe(time.perf_counter() - started)
                    first = False
                yield sse("token", {"text": ev["text"]})
            elif ev["event"] == "summary":
                s = ev["summary"]
                if first:
                    metrics.ttft.observe(time.perf_counter() - started)
                metrics.total.observe(time.perf_counter() - started)
                outcome = "cached" if s.get("cached") else "extractive" if s.get("extractive") else "generated"
                yield sse("summary", s)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        outcome = "error"
        rid = request_id(request)
        log.error("summary stream failed [request %s]\n%s", rid, redact(fault_trace(exc), query))
        detail = f"the summary failed ({type(exc).__name__}); quote the request id when reporting it"
        yield sse("error", {"detail": detail, "request_id": rid})
    finally:
        stream.cancel()  # no-op when finished; otherwise the client left: stop generating
        metrics.outcomes.labels(outcome=outcome).inc()
