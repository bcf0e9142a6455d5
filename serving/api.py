"""The HTTP API (FastAPI), independent of how models are hosted.

`create_api(backend)` assembles the same routes whether the backend calls Ray Serve deployment handles
(production) or in-process models (tests, `--no-ray`). Errors map to status codes callers can act on
(`serving/errors.py`); keys, scopes, quotas and the body cap are `serving/auth.py`'s.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from serving.admission import Admission, AdmissionConfig
from serving.auth import BodyCapMiddleware, Guard
from serving.backend import Backend
from serving.errors import install_error_handlers
from serving.executor import WorkerPoolMiddleware
from serving.metrics import Metrics, ObserveMiddleware, SummaryMetrics
from serving.routers import events, health, search, suggest, summarize
from serving.security import SecurityConfig


def _search_deadline(backend: Backend) -> float | None:
    """The backend's app config's `search_deadline_s` (`AppBackend`); none for other backends."""
    found = getattr(getattr(backend, "config", None), "search_deadline_s", None)
    return float(found) if isinstance(found, int | float) else None


def _admission(backend: Backend) -> AdmissionConfig:
    """The backend's app config's `search_admission` (`AppBackend`), else the defaults."""
    found = getattr(getattr(backend, "config", None), "search_admission", None)
    return found if isinstance(found, AdmissionConfig) else AdmissionConfig()


def _ingress_threads(backend: Backend) -> int | None:
    """The backend's app config's `ingress_threads` (`AppBackend`); none (asyncio's default pool) otherwise."""
    found = getattr(getattr(backend, "config", None), "ingress_threads", None)
    return found if isinstance(found, int) else None


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
    api.state.search_deadline_s = _search_deadline(backend)
    api.state.search_admission = Admission(_admission(backend), lambda o: metrics.admission.labels(outcome=o).inc())
    api.add_middleware(BodyCapMiddleware, cap=security.max_body_bytes)  # innermost: a 413 still gets CORS
    if cors_origins:
        api.add_middleware(
            CORSMiddleware, allow_origins=cors_origins, allow_methods=["GET", "POST"], allow_headers=["*"]
        )
    api.add_middleware(ObserveMiddleware, metrics=metrics)
    threads = _ingress_threads(backend)
    if threads is not None:
        api.add_middleware(WorkerPoolMiddleware, threads=threads)

    install_error_handlers(api)

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
