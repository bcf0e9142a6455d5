"""Prometheus metrics of one API instance: request counts and latency (an ASGI middleware), search stages and
summary streams, all on the instance's own registry so several apps can live in one process."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0)
_TTFT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
_TOTAL_BUCKETS = (0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 60.0)


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

        self.admission = Counter(
            "sift_search_admission_total",
            "Searches run lighter or shed (503) by admission control",
            ["outcome"],
            registry=self.registry,
        )

    def observe_stage(self, stage: str, seconds: float) -> None:
        self.stage.labels(stage=stage).observe(seconds)


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


class ObserveMiddleware:
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
