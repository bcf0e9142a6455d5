"""POST /v1/search: the search service's answer, a summary URL when asked, and the query-log hook."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel

from search.service import SearchRequest, SearchResponse
from serving.dependencies import BackendDep
from serving.routers.summarize import summary_stream_url

log = logging.getLogger("sift.api")

router = APIRouter()


class ErrorBody(BaseModel):
    detail: Any


@router.post(
    "/v1/search",
    response_model=SearchResponse,
    responses={
        404: {"model": ErrorBody, "description": "Unknown index"},
        503: {"model": ErrorBody, "description": "Store unreachable (see Retry-After)"},
    },
)
async def search(body: SearchRequest, backend: BackendDep) -> SearchResponse:
    resp = await backend.service.search(body)
    if body.summarize and backend.summary_client is not None:
        resp.summary_url = summary_stream_url(resp, k=backend.summary_top_k)
    runtime = backend.suggest
    if runtime is not None:
        try:
            runtime.record_search(body, resp)
        except Exception as exc:  # logging must never fail a search that succeeded
            log.warning("recording the search failed: %s", exc)
    return resp
