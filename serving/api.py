"""The HTTP API (FastAPI), independent of how models are hosted.

`create_api(backend)` assembles the same routes whether the backend calls Ray Serve deployment handles
(production) or in-process models (tests, `--no-ray`). Errors map to status codes callers can act on
(`serving/errors.py`); keys, scopes and quotas are `serving/auth.py`'s, the checks made before a body is read
(key, size, read timeout) `serving/gate.py`'s.
"""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar, cast

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from serving.admission import Admission, AdmissionConfig
from serving.auth import Guard
from serving.backend import Backend
from serving.errors import install_error_handlers
from serving.executor import WorkerPoolMiddleware
from serving.gate import BodyCapMiddleware, KeyGateMiddleware
from serving.metrics import Metrics, ObserveMiddleware, SummaryMetrics
from serving.routers import events, health, search, suggest, summarize, synonyms
from serving.security import SecurityConfig, identity_secret

T = TypeVar("T")


def _app_setting(backend: Backend, name: str, kind: type | tuple[type, ...], default: T) -> T:
    """A setting of the backend's app config (`AppBackend.config`) when it has the expected type, else `default`:
    other backends (tests, a bare service) have no app config."""
    found = getattr(getattr(backend, "config", None), name, None)
    return cast(T, found) if isinstance(found, kind) else default


def _identity_key(backend: Backend, security: SecurityConfig) -> bytes | None:
    """The secret client identities are keyed with: configured, or kept in the app's data dir (`AppConfig.data_dir`,
    else `SIFT_DATA_DIR`); None for a backend with no app config (a per-process key then)."""
    config = getattr(backend, "config", None)
    data_dir: Path | None = None
    if config is not None and hasattr(config, "data_dir"):
        from search.settings import Settings

        data_dir = config.data_dir if isinstance(config.data_dir, Path) else Settings().data_dir
    return identity_secret(security, data_dir)


def create_api(
    backend: Backend,
    metrics: Metrics | None = None,
    cors_origins: list[str] | None = None,
    security: SecurityConfig | None = None,
) -> FastAPI:
    """The app: routes, error mapping, metrics, CORS, the body cap, and keys and quotas (`security`, by
    default the backend's `AppConfig.security`)."""
    metrics = metrics or Metrics()
    if security is None:
        security = _app_setting(backend, "security", SecurityConfig, SecurityConfig())
    api = FastAPI(
        title="Sift search API",
        version="1.0",
        description="Hybrid (BM25 + dense) search with neural reranking and per-result explanations.",
    )
    api.state.backend = backend
    api.state.metrics = metrics
    api.state.summary_metrics = SummaryMetrics(metrics.registry)
    api.state.guard = Guard(security, _identity_key(backend, security))
    deadline = _app_setting(backend, "search_deadline_s", (int, float), None)
    api.state.search_deadline_s = float(deadline) if deadline is not None else None
    admission = _app_setting(backend, "search_admission", AdmissionConfig, AdmissionConfig())
    api.state.search_admission = Admission(admission, lambda o: metrics.admission.labels(outcome=o).inc())
    # innermost first: the body cap and read timeout (413/408), then the key check from the headers alone (401/403
    # before any body is read); both inside CORS, so a refusal still reaches a browser page
    api.add_middleware(BodyCapMiddleware, cap=security.max_body_bytes, timeout_s=security.body_read_timeout_s)
    api.add_middleware(KeyGateMiddleware)
    if cors_origins:
        api.add_middleware(
            CORSMiddleware, allow_origins=cors_origins, allow_methods=["GET", "POST"], allow_headers=["*"]
        )
    api.add_middleware(ObserveMiddleware, metrics=metrics)
    threads = _app_setting(backend, "ingress_threads", int, None)
    if threads is not None:
        api.add_middleware(WorkerPoolMiddleware, threads=threads)

    install_error_handlers(api)

    api.include_router(search.router)
    api.include_router(suggest.router)
    api.include_router(events.router)
    api.include_router(health.router)
    api.include_router(summarize.router)
    api.include_router(synonyms.router)

    try:  # the autocomplete widget and demo page, where that module is installed
        from serving.widget import mount_widget
    except ImportError:
        pass
    else:
        mount_widget(api)

    return api
