"""Summaries over HTTP: the summarizer model server (a Ray Serve deployment) and the SSE routes.

`POST /v1/summarize` (a query plus result ids, or a full search request) and `GET /v1/summarize` (query
params, for browsers' EventSource) stream Server-Sent Events: `token` events as the LM writes, then one
`summary` event with the checked sentences, their citations and support scores (`error` on failure).
The ingress fetches the documents and relays the stream; a client that goes away cancels the stream, which
cancels the deployment's generator, which stops generate() at the next token.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol
from urllib.parse import urlencode

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from prometheus_client import CollectorRegistry, Counter, Histogram
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from models.embedder import CachedEmbedder, Embedder, EmbedderConfig, EmbeddingCache, SentenceTransformerEmbedder
from search.documents import Document
from search.service import MAX_QUERY_CHARS, SearchRequest, SearchResponse, SearchService
from search.settings import Settings
from search.stores.base import IndexNotFound, StoreError
from search.summarize.config import SummarizerConfig
from search.summarize.schemas import StreamEvent, TokenEvent
from search.summarize.summarizer import Summarizer

log = logging.getLogger("sift.summarize")

MAX_IDS = 20
SUMMARIZE_PATH = "/v1/summarize"
_TTFT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
_TOTAL_BUCKETS = (0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 60.0)

_STREAM_RESPONSES: dict[int | str, dict[str, Any]] = {  # OpenAPI docs of both summarize routes
    200: {"content": {"text/event-stream": {}}, "description": "token events, then one summary event"},
    404: {"description": "Unknown index or result ids"},
    503: {"description": "Summaries disabled, or the store is unreachable"},
}

WireEvent = dict[str, Any]  # {"event": "token", "text": ...} | {"event": "summary", "summary": {...}}


def to_wire(ev: StreamEvent) -> WireEvent:
    """Plain dicts cross process boundaries (Ray) cheaply and map 1:1 onto SSE events."""
    if isinstance(ev, TokenEvent):
        return {"event": "token", "text": ev.text}
    return {"event": "summary", "summary": ev.summary.model_dump(mode="json")}


# -- request ---------------------------------------------------------------------------------------------
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


# -- clients: where the summarizer runs -------------------------------------------------------------------
class SummaryStream(Protocol):
    """Async iterator of wire events with a synchronous cancel(), safe to call from a cancelled task."""

    def __aiter__(self) -> AsyncIterator[WireEvent]: ...

    async def __anext__(self) -> WireEvent: ...

    def cancel(self) -> None: ...


class SummaryClient(Protocol):
    def stream(self, query: str, docs: Sequence[Document], max_new_tokens: int | None) -> SummaryStream:
        """Start summarizing; events arrive as they are produced."""
        ...

    async def ready(self) -> bool: ...


_END = object()


class _ThreadedStream:
    """Drives a Summarizer's blocking event iterator from asyncio, one next() per executor call."""

    def __init__(self, it: Iterator[StreamEvent], cancel: threading.Event, pool: ThreadPoolExecutor) -> None:
        self._it = it
        self._cancel = cancel
        self._pool = pool
        self._done = False

    def __aiter__(self) -> _ThreadedStream:
        return self

    async def __anext__(self) -> WireEvent:
        if self._done:
            raise StopAsyncIteration
        loop = asyncio.get_running_loop()
        try:
            ev = await loop.run_in_executor(self._pool, next, self._it, _END)
        except BaseException:
            self.cancel()
            raise
        if ev is _END:
            self._done = True
            raise StopAsyncIteration
        return to_wire(ev)  # type: ignore[arg-type]

    def cancel(self) -> None:
        """Generation stops at its next token; the iterator then ends without a summary."""
        self._cancel.set()
        self._done = True


class LocalSummaryClient:
    """The summarizer in this process (tests, `--no-ray`, the Serve replica itself)."""

    def __init__(self, summarizer: Summarizer, max_concurrent: int = 32) -> None:
        self.summarizer = summarizer
        self._pool = ThreadPoolExecutor(max_workers=max_concurrent, thread_name_prefix="sift-summary")

    def stream(self, query: str, docs: Sequence[Document], max_new_tokens: int | None) -> _ThreadedStream:
        cancel = threading.Event()
        it = self.summarizer.stream(query, docs, max_new_tokens=max_new_tokens, cancel=cancel)
        return _ThreadedStream(it, cancel, self._pool)

    async def ready(self) -> bool:
        return True


class _ServeStream:
    def __init__(self, gen: Any) -> None:
        self._gen = gen

    def __aiter__(self) -> _ServeStream:
        return self

    async def __anext__(self) -> WireEvent:
        return await self._gen.__anext__()  # type: ignore[no-any-return]

    def cancel(self) -> None:
        """Cancels the replica's generator: its CancelledError sets the summarizer's cancel flag."""
        self._gen.cancel()


class ServeSummaryClient:
    """The `SummarizerServer` deployment, through a handle (streaming)."""

    def __init__(self, handle: Any) -> None:
        self._handle = handle

    def stream(self, query: str, docs: Sequence[Document], max_new_tokens: int | None) -> _ServeStream:
        payload = [d.model_dump(mode="json") for d in docs]
        return _ServeStream(self._handle.options(stream=True).stream.remote(query, payload, max_new_tokens))

    async def ready(self) -> bool:
        return bool(await self._handle.ready.remote())


# -- the deployment ----------------------------------------------------------------------------------------
class SummarizerServer:
    """Model server for summaries; `build_app` makes it a deployment (fractional CPU, streaming method)."""

    def __init__(self, config: SummarizerConfig, embedder: EmbedderConfig, torch_threads: int = 1) -> None:
        from serving.deployments import limit_threads

        limit_threads(torch_threads)
        encoder: Embedder = SentenceTransformerEmbedder(embedder)
        if config.cache_sentence_vectors:
            encoder = CachedEmbedder(encoder, EmbeddingCache(Settings().cache_dir / "embeddings.sqlite"))
        self.summarizer = Summarizer(config, encoder)
        self.summarizer.warm_up()
        self.summarizer.embedder.embed(["warm up"])
        self.client = LocalSummaryClient(self.summarizer)

    async def stream(
        self, query: str, docs: list[dict[str, Any]], max_new_tokens: int | None
    ) -> AsyncIterator[WireEvent]:
        """Called with `handle.options(stream=True)`. Cancelling the call raises CancelledError here."""
        s = self.client.stream(query, [Document.model_validate(d) for d in docs], max_new_tokens)
        try:
            async for ev in s:
                yield ev
        finally:
            s.cancel()

    async def ready(self) -> bool:
        return True

    async def stats(self) -> list[dict[str, Any]]:
        """Recent generations (tokens, stop reason): lets operators and tests see cancellation take effect."""
        return [
            {
                "tokens": r.tokens,
                "max_new_tokens": r.max_new_tokens,
                "reason": r.reason,
                "finished": r.finished.is_set(),
            }
            for r in list(self.summarizer.generations)
        ]


# -- metrics -------------------------------------------------------------------------------------------------
class SummaryMetrics:
    """Time to first token and total time of summary streams, on the API's registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.ttft = Histogram(
            "sift_summary_ttft_seconds",
            "Summary request start to the first streamed token",
            buckets=_TTFT_BUCKETS,
            registry=registry,
        )
        self.total = Histogram(
            "sift_summary_total_seconds",
            "Summary request start to the final summary event",
            buckets=_TOTAL_BUCKETS,
            registry=registry,
        )
        self.outcomes = Counter(
            "sift_summaries_total",
            "Summary streams by outcome (generated, extractive, cached, cancelled, error)",
            ["outcome"],
            registry=registry,
        )


# -- routes --------------------------------------------------------------------------------------------------
def sse(event: str, data: Any) -> str:
    """One SSE frame: `event:` line, one `data:` line (JSON never holds raw newlines), blank line."""
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False, separators=(',', ':'))}\n\n"


def summary_stream_url(response: SearchResponse, k: int = 5, path: str = SUMMARIZE_PATH) -> str | None:
    """The GET URL that streams the summary of a search response's top k (None when it has no results)."""
    ids = [r.id for r in response.results[:k]]
    if not ids:
        return None
    params: list[tuple[str, str]] = [("query", response.query), ("index", response.index)]
    params += [("ids", i) for i in ids]
    return f"{path}?{urlencode(params)}"


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


def add_summarize_routes(
    api: FastAPI,
    get_client: Callable[[], SummaryClient | None],
    get_service: Callable[[], SearchService],
    registry: CollectorRegistry,
    *,
    top_k: int = 5,
    path: str = SUMMARIZE_PATH,
) -> SummaryMetrics:
    """Register POST and GET `path` on `api`; metrics go to `registry` (the API's `Metrics.registry`)."""
    metrics = SummaryMetrics(registry)
    api.state.summary_metrics = metrics

    async def run(request: Request, body: SummarizeRequest) -> StreamingResponse | JSONResponse:
        started = time.perf_counter()
        client = get_client()
        if client is None:
            return _error(503, "summaries are not enabled on this server")
        service = get_service()
        k = body.k or top_k
        try:
            if body.search is not None:
                resp = await service.search(body.search.model_copy(update={"offset": 0, "limit": max(k, 1)}))
                query, index, ids = body.search.query, resp.index, [r.id for r in resp.results[:k]]
                if not ids:
                    return _error(404, "the search returned no results to summarize")
            else:
                assert body.query is not None and body.ids is not None
                query, index, ids = body.query, body.index or service.config.default_index, body.ids[:k]
            docs, missing = await asyncio.to_thread(_fetch, service, index, ids)
        except IndexNotFound as exc:
            return _error(404, str(exc.args[0]) if exc.args else "index not found")
        except StoreError as exc:
            return _error(503, f"the index store is unreachable; retry later ({exc})", {"Retry-After": "5"})
        if missing:
            return _error(404, {"message": "unknown result ids", "index": index, "ids": missing})
        stream = client.stream(query, docs, body.max_new_tokens)
        return StreamingResponse(
            _events(request, stream, metrics, started),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    @api.post(
        path,
        response_class=StreamingResponse,
        responses=_STREAM_RESPONSES,
    )
    async def summarize_post(body: SummarizeRequest, request: Request) -> Any:
        """Stream a cited summary of the given results (or of a search's top results) as Server-Sent Events."""
        return await run(request, body)

    @api.get(
        path,
        response_class=StreamingResponse,
        responses=_STREAM_RESPONSES,
    )
    async def summarize_get(
        request: Request,
        query: str = Query(max_length=MAX_QUERY_CHARS),
        ids: list[str] = Query(description="Result ids, repeated (ids=a&ids=b) or comma-separated."),
        index: str | None = None,
        k: int | None = Query(default=None, ge=1, le=MAX_IDS),
        max_new_tokens: int | None = Query(default=None, ge=1, le=8192),
    ) -> Any:
        """The same stream for EventSource (GET only): the URL `summary_stream_url` builds."""
        flat = [p for i in ids for p in i.split(",") if p]
        try:
            body = SummarizeRequest(query=query, ids=flat, index=index, k=k, max_new_tokens=max_new_tokens)
        except ValidationError as exc:
            raise RequestValidationError(
                [{**e, "loc": ("query", *e["loc"])} for e in exc.errors(include_url=False, include_context=False)]
            ) from exc
        return await run(request, body)

    return metrics


async def _events(
    request: Request, stream: SummaryStream, metrics: SummaryMetrics, started: float
) -> AsyncIterator[str]:
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
        log.exception("summary stream failed")
        outcome = "error"
        yield sse("error", {"detail": f"{type(exc).__name__}: {exc}"})
    finally:
        stream.cancel()  # no-op when finished; otherwise the client left: stop generating
        metrics.outcomes.labels(outcome=outcome).inc()
