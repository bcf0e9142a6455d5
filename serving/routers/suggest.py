"""Autocomplete (/v1/suggest) and related searches (/v1/related), from the backend's suggester if it has one."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from search.suggest.schemas import MAX_K, MAX_PREFIX_CHARS, RelatedResponse, SuggestResponse
from serving.dependencies import BackendDep

router = APIRouter()


@router.get("/v1/suggest", response_model=SuggestResponse)
async def suggest(
    backend: BackendDep,
    q: Annotated[str, Query(max_length=MAX_PREFIX_CHARS, description="What the user typed so far.")] = "",
    k: Annotated[int, Query(ge=1, le=MAX_K, description="Suggestions wanted.")] = 8,
    session_id: Annotated[str | None, Query(max_length=200, description="Opaque session id.")] = None,
) -> SuggestResponse:
    """Query completions from past searches and the language model; blank `q` gives none. Served within
    the LM deadline: `partial` says LM candidates were still being generated."""
    runtime = backend.suggest
    if runtime is None or runtime.suggester is None or not q.strip():
        return SuggestResponse(query=q, suggestions=[], partial=False, took_ms=0.0)
    return await runtime.suggester.suggest(q, k)


@router.get("/v1/related", response_model=RelatedResponse)
async def related(
    backend: BackendDep,
    q: Annotated[str, Query(max_length=MAX_PREFIX_CHARS, description="A complete query.")] = "",
    k: Annotated[int, Query(ge=1, le=MAX_K, description="Related searches wanted.")] = 8,
) -> RelatedResponse:
    """Searches that co-occur with `q` in sessions, and LM rewrites that return results."""
    runtime = backend.suggest
    if runtime is None or runtime.suggester is None or not q.strip():
        return RelatedResponse(query=q, related=[])
    return await runtime.suggester.related(q, k)
