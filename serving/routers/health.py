"""Liveness (/healthz), readiness (/readyz: the backend's named checks) and Prometheus metrics (/metrics)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel

from serving.auth import AdminAuth
from serving.dependencies import BackendDep, MetricsDep

READINESS_TIMEOUT_S = 5

router = APIRouter()


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    ready: bool
    checks: dict[str, bool]


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    return Health(status="ok")


@router.get("/readyz", response_model=Readiness, responses={503: {"model": Readiness}})
async def readyz(backend: BackendDep) -> JSONResponse:
    try:
        checks = await asyncio.wait_for(backend.readiness(), timeout=READINESS_TIMEOUT_S)
    except TimeoutError:
        checks = {"checks_completed": False}
    ok = all(checks.values())
    return JSONResponse(status_code=200 if ok else 503, content=Readiness(ready=ok, checks=checks).model_dump())


@router.get("/metrics", response_class=Response)
async def prometheus(metrics: MetricsDep, _: AdminAuth) -> Response:
    """Prometheus metrics: an admin key where keys are configured (open without keys, on loopback only)."""
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)
