"""POST /v1/search: the search service's answer, a summary URL when asked, and the impression it logs."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel

from search.service import SearchRequest, SearchResponse
from serving.admission import Overloaded
from serving.auth import SearchAuth
from serving.backend import logged_search
from serving.dependencies import BackendDep
from serving.errors import OVERLOADED, note_query, retry_later
from serving.inputs import check_filter_values
from serving.routers.summarize import can_link_summaries, summary_stream_url

log = logging.getLogger("sift.api")

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
        503: {
            "model": ErrorBody,
            "description": "Store unreachable, the search deadline passed or the replica is full (Retry-After)",
        },
    },
)
async def search(body: SearchRequest, request: Request, backend: BackendDep, principal: SearchAuth) -> Any:
    note_query(request, body.query)
    index = body.index or backend.service.config.default_index
    principal.check_index(index)
    try:
        async with request.app.state.search_admission.slot() as lighter:
            await check_filter_values(backend.service.store, index, body.filters)
            found = logged_search(backend, body, lighter=lighter, client=principal.identity)
            resp = await asyncio.wait_for(found, request.app.state.search_deadline_s)
    except Overloaded:
        return retry_later(OVERLOADED)
    except TimeoutError:
        deadline = request.app.state.search_deadline_s
        log.warning("a search passed the %s s deadline", deadline)
        return retry_later(f"the search passed its {deadline} s deadline; retry later")
    if body.summarize and can_link_summaries(backend):
        resp.summary_url = summary_stream_url(resp, k=backend.summary_top_k)
    return resp
