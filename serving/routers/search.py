"""POST /v1/search: the search service's answer, a summary URL when asked, and the impression it logs."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel

from search.service import SearchRequest, SearchResponse
from serving.auth import SearchAuth
from serving.backend import logged_search
from serving.dependencies import BackendDep
from serving.routers.summarize import summary_stream_url

router = APIRouter()


class ErrorBody(BaseModel):
    detail: Any


@router.post(
    "/v1/search",
    response_model=SearchResponse,
    responses={
        401: {"model": ErrorBody, "description": "No or unknown API key"},
        403: {"model": ErrorBody, "description": "The key lacks the search scope or this index"},
        404: {"model": ErrorBody, "description": "Unknown index"},
        429: {"model": ErrorBody, "description": "Rate limit exceeded (see Retry-After)"},
        503: {"model": ErrorBody, "description": "Store unreachable (see Retry-After)"},
    },
)
async def search(body: SearchRequest, backend: BackendDep, principal: SearchAuth) -> SearchResponse:
    principal.check_index(body.index or backend.service.config.default_index)
    resp = await logged_search(backend, body)
    if body.summarize and backend.summary_client is not None:
        resp.summary_url = summary_stream_url(resp, k=backend.summary_top_k)
    return resp
