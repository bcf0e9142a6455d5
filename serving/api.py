"""The HTTP API (FastAPI), independent of how models are hosted.

`create_api(backend)` serves the same routes whether the backend calls Ray Serve deployment handles
(production) or in-process models (tests, `--no-ray`). Errors map to status codes callers can act on:
422 for bad input, 404 for an unknown index, 503 with Retry-After when the store is unreachable.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Annotated, Any, Protocol

from fastapi import FastAPI, Query, Request, Response
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from pydantic import BaseModel
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from search.service import RequestError, SearchRequest, SearchResponse, SearchService
from search.stores.base import IndexNotFound, StoreError, StoreUnavailable
from search.suggest.schemas import MAX_K, MAX_PREFIX_CHARS, RelatedResponse, SuggestResponse
from serving.summaries import add_summarize_routes, summary_stream_url

RETRY_AFTER_S = 5
log = logging.getLogger("sift.api")
_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0)


class Backend(Protocol):
    """`service` answers searches. Optional: `suggest` (serving.app.SuggestRuntime: query log + suggester),
    `summary_client` (serving.summaries.SummaryClient) and `summary_top_k`."""

    service: SearchService

    async def readiness(self) -> dict[str, bool]:
        """Named checks (store reachable, models warm); ready when all are true."""
        ...


class Metrics:
    """Prometheus metrics of one API instance (own registry, so several apps can live in one process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "sift_http_requests_total", "HTTP requests", ["route", "method", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "sift_http_request_seconds", "HTTP request latency", ["route"], buckets=_BUCKETS, registry=self.registry
        )
        self.stage = Histogram(
            "sift_stage_seconds", "Latency of one search stage", ["stage"], buckets=_BUCKETS, registry=self.registry
        )

    def observe_stage(self, stage: str, seconds: float) -> None:
        self.stage.labels(stage=stage).observe(seconds)


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    ready: bool
    checks: dict[str, bool]


class ErrorBody(BaseModel):
    detail: Any


class _ObserveMiddleware:
    """Request counts and latency per route, as plain ASGI: Starlette's BaseHTTPMiddleware (`@app.middleware`)
    runs each request in an extra task with memory streams, a measurable share of a search's CPU.

    Latency runs until the response body is sent (a streamed summary counts whole)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            path = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.requests.labels(route=path, method=scope["method"], status=str(status)).inc()
            self.metrics.latency.labels(route=path).observe(time.perf_counter() - t)


def create_api(backend: Backend, metrics: Metrics | None = None, cors_origins: list[str] | None = None) -> FastAPI:
    metrics = metrics or Metrics()
    api = FastAPI(
        title="Sift search API",
        version="1.0",
        description="Hybrid (BM25 + dense) search with neural reranking and per-result explanations.",
    )
    api.state.backend = backend
    api.state.metrics = metrics
    if cors_origins:
        api.add_middleware(
            CORSMiddleware, allow_origins=cors_origins, allow_methods=["GET", "POST"], allow_headers=["*"]
        )

    api.add_middleware(_ObserveMiddleware, metrics=metrics)

    @api.exception_handler(RequestError)
    async def _request_error(_: Request, exc: RequestError) -> JSONResponse:
        loc = ["body", *exc.field.split(".")]
        return JSONResponse(
            status_code=422, content={"detail": [{"loc": loc, "msg": exc.message, "type": "value_error"}]}
        )

    @api.exception_handler(StoreUnavailable)
    async def _unavailable(_: Request, exc: StoreUnavailable) -> JSONResponse:
        return JSONResponse(
            status_code=503,
            headers={"Retry-After": str(RETRY_AFTER_S)},
            content={"detail": f"the index store is unreachable; retry later ({exc})"},
        )

    @api.exception_handler(IndexNotFound)
    async def _not_found(_: Request, exc: IndexNotFound) -> JSONResponse:
        return JSONResponse(status_code=404, content={"detail": str(exc.args[0]) if exc.args else "index not found"})

    @api.exception_handler(StoreError)
    async def _store_error(_: Request, exc: StoreError) -> JSONResponse:
        return JSONResponse(status_code=503, headers={"Retry-After": str(RETRY_AFTER_S)}, content={"detail": str(exc)})

    @api.exception_handler(ValueError)
    async def _value_error(_: Request, exc: ValueError) -> JSONResponse:
        return JSONResponse(status_code=400, content={"detail": str(exc)})

    @api.post(
        "/v1/search",
        response_model=SearchResponse,
        responses={
            404: {"model": ErrorBody, "description": "Unknown index"},
            503: {"model": ErrorBody, "description": "Store unreachable (see Retry-After)"},
        },
    )
    async def search(body: SearchRequest, request: Request) -> SearchResponse:
        be: Backend = request.app.state.backend
        resp = await be.service.search(body)
        if body.summarize and getattr(be, "summary_client", None) is not None:
            resp.summary_url = summary_stream_url(resp, k=getattr(be, "summary_top_k", 5))
        runtime = getattr(be, "suggest", None)
        if runtime is not None:
            try:
                runtime.record_search(body, resp)
            except Exception as exc:  # logging must never fail a search that succeeded
                log.warning("recording the search failed: %s", exc)
        return resp

    @api.get("/v1/suggest", response_model=SuggestResponse)
    async def suggest(
        request: Request,
        q: Annotated[str, Query(max_length=MAX_PREFIX_CHARS, description="What the user typed so far.")] = "",
        k: Annotated[int, Query(ge=1, le=MAX_K, description="Suggestions wanted.")] = 8,
        session_id: Annotated[str | None, Query(max_length=200, description="Opaque session id.")] = None,
    ) -> SuggestResponse:
        """Query completions from past searches and the language model; blank `q` gives none. Served within
        the LM deadline: `partial` says LM candidates were still being generated."""
        runtime = getattr(request.app.state.backend, "suggest", None)
        if runtime is None or runtime.suggester is None or not q.strip():
            return SuggestResponse(query=q, suggestions=[], partial=False, took_ms=0.0)
        return await runtime.suggester.suggest(q, k)  # type: ignore[no-any-return]

    @api.get("/v1/related", response_model=RelatedResponse)
    async def related(
        request: Request,
        q: Annotated[str, Query(max_length=MAX_PREFIX_CHARS, description="A complete query.")] = "",
        k: Annotated[int, Query(ge=1, le=MAX_K, description="Related searches wanted.")] = 8,
    ) -> RelatedResponse:
        """Searches that co-occur with `q` in sessions, and LM rewrites that return results."""
        runtime = getattr(request.app.state.backend, "suggest", None)
        if runtime is None or runtime.suggester is None or not q.strip():
            return RelatedResponse(query=q, related=[])
        return await runtime.suggester.related(q, k)  # type: ignore[no-any-return]

    @api.get("/healthz", response_model=Health)
    async def healthz() -> Health:
        return Health(status="ok")

    @api.get("/readyz", response_model=Readiness, responses={503: {"model": Readiness}})
    async def readyz(request: Request) -> JSONResponse:
        be: Backend = request.app.state.backend
        try:
            checks = await asyncio.wait_for(be.readiness(), timeout=5)
        except TimeoutError:
            checks = {"checks_completed": False}
        ok = all(checks.values())
        return JSONResponse(status_code=200 if ok else 503, content=Readiness(ready=ok, checks=checks).model_dump())

    @api.get("/metrics", response_class=Response)
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    add_summarize_routes(
        api,
        lambda: getattr(backend, "summary_client", None),
        lambda: backend.service,
        metrics.registry,
        top_k=getattr(backend, "summary_top_k", 5),
    )

    try:  # the autocomplete widget and demo page, where that module is installed
        from serving.widget import mount_widget
    except ImportError:
        pass
    else:
        mount_widget(api)

    return api
