"""The HTTP API (FastAPI), independent of how models are hosted.

`create_api(backend)` assembles the same routes whether the backend calls Ray Serve deployment handles
(production) or in-process models (tests, `--no-ray`). Errors map to status codes callers can act on:
422 for bad input, 404 for an unknown index, 503 with Retry-After when the store is unreachable.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse

from search.service import RequestError
from search.stores.base import IndexNotFound, StoreError, StoreUnavailable
from serving.auth import BodyCapMiddleware, Guard
from serving.backend import Backend
from serving.metrics import Metrics, ObserveMiddleware, SummaryMetrics
from serving.routers import events, health, search, suggest, summarize
from serving.security import SecurityConfig

RETRY_AFTER_S = 5


async def _request_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestError)
    loc = ["body", *exc.field.split(".")]
    return JSONResponse(status_code=422, content={"detail": [{"loc": loc, "msg": exc.message, "type": "value_error"}]})


async def _unavailable(_: Request, exc: Exception) -> JSONResponse:
    return JSONResponse(
        status_code=503,
        headers={"Retry-After": str(RETRY_AFTER_S)},
        content={"detail": f"the index store is unreachable; retry later ({exc})"},
    )


async def _not_found(_: Request, exc: Exception) -> JSONResponse:
    return JSONResponse(status_code=404, content={"detail": str(exc.args[0]) if exc.args else "index not found"})


async def _store_error(_: Request, exc: Exception) -> JSONResponse:
    return JSONResponse(status_code=503, headers={"Retry-After": str(RETRY_AFTER_S)}, content={"detail": str(exc)})


async def _value_error(_: Request, exc: Exception) -> JSONResponse:
    return JSONResponse(status_code=400, content={"detail": str(exc)})


def _security(backend: Backend, security: SecurityConfig | None) -> SecurityConfig:
    """The given security config, else the backend's app config's (`AppBackend`), else open defaults."""
    if security is not None:
        return security
    found = getattr(getattr(backend, "config", None), "security", None)
    return found if isinstance(found, SecurityConfig) else SecurityConfig()


def create_api(
    backend: Backend,
    metrics: Metrics | None = None,
    cors_origins: list[str] | None = None,
    security: SecurityConfig | None = None,
) -> FastAPI:
    """The app: routes, error mapping, metrics, CORS, the body cap, and keys and quotas (`security`, by
    default the backend's `AppConfig.security`)."""
    metrics = metrics or Metrics()
    security = _security(backend, security)
    api = FastAPI(
        title="Sift search API",
        version="1.0",
        description="Hybrid (BM25 + dense) search with neural reranking and per-result explanations.",
    )
    api.state.backend = backend
    api.state.metrics = metrics
    api.state.summary_metrics = SummaryMetrics(metrics.registry)
    api.state.guard = Guard(security)
    api.add_middleware(BodyCapMiddleware, cap=security.max_body_bytes)  # innermost: a 413 still gets CORS
    if cors_origins:
        api.add_middleware(
            CORSMiddleware, allow_origins=cors_origins, allow_methods=["GET", "POST"], allow_headers=["*"]
        )
    api.add_middleware(ObserveMiddleware, metrics=metrics)

    api.add_exception_handler(RequestError, _request_error)
    api.add_exception_handler(StoreUnavailable, _unavailable)
    api.add_exception_handler(IndexNotFound, _not_found)
    api.add_exception_handler(StoreError, _store_error)
    api.add_exception_handler(ValueError, _value_error)

    api.include_router(search.router)
    api.include_router(suggest.router)
    api.include_router(events.router)
    api.include_router(health.router)
    api.include_router(summarize.router)

    try:  # the autocomplete widget and demo page, where that module is installed
        from serving.widget import mount_widget
    except ImportError:
        pass
    else:
        mount_widget(api)

    return api
