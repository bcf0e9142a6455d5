"""Typed FastAPI dependencies: what `create_api` put on the app's state, for the routers to declare."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from serving.backend import Backend
from serving.metrics import Metrics, SummaryMetrics


def get_backend(request: Request) -> Backend:
    return request.app.state.backend  # type: ignore[no-any-return]


def get_metrics(request: Request) -> Metrics:
    return request.app.state.metrics  # type: ignore[no-any-return]


def get_summary_metrics(request: Request) -> SummaryMetrics:
    return request.app.state.summary_metrics  # type: ignore[no-any-return]


BackendDep = Annotated[Backend, Depends(get_backend)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
SummaryMetricsDep = Annotated[SummaryMetrics, Depends(get_summary_metrics)]
