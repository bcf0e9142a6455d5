"""Autocomplete (/v1/suggest) and related searches (/v1/related), from the backend's suggester if it has one."""

from __future__ import annotations

import hashlib
import logging
import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from logs.events import suggest_impression
from search.suggest.schemas import MAX_K, MAX_PREFIX_CHARS, RelatedResponse, SuggestResponse
from serving.auth import SuggestAuth
from serving.dependencies import BackendDep
from serving.errors import note_query

log = logging.getLogger("sift.api")

router = APIRouter()


# Browsers keep a prefix's answer this long (private: the body names this response's query_id); a partial answer
# (the LM still working) is never kept. Revalidation with If-None-Match costs a 304 and no body.
MAX_AGE_S = 30


def etag_of(resp: SuggestResponse, version: object) -> str:
    """The suggestions' identity, query_id aside: equal lists under the same served version match."""
    texts = "\x1f".join(f"{s.text}\x1e{s.source}\x1e{s.score}" for s in resp.suggestions)
    raw = f"{version}\x1d{resp.query}\x1d{texts}".encode()
    return '"' + hashlib.blake2b(raw, digest_size=12).hexdigest() + '"'


@router.get("/v1/suggest", response_model=SuggestResponse, responses={304: {"description": "Not modified."}})
async def suggest(
    request: Request,
    response: Response,
    backend: BackendDep,
    principal: SuggestAuth,
    q: Annotated[str, Query(max_length=MAX_PREFIX_CHARS, description="What the user typed so far.")] = "",
    k: Annotated[int, Query(ge=1, le=MAX_K, description="Suggestions wanted.")] = 8,
    session_id: Annotated[str | None, Query(max_length=200, description="Opaque session id.")] = None,
    user_token: Annotated[str | None, Query(max_length=200, description="Opaque user id.")] = None,
) -> SuggestResponse | Response:
    """Query completions from past searches and the language model; blank `q` gives none. Served within
    the LM deadline: `partial` says LM candidates were still being generated. The response's `query_id`
    names it in the impression log, for click events on a suggestion. Answers carry an ETag and
    `Cache-Control: private, max-age=30` (none when partial); a matching If-None-Match gets a 304."""
    note_query(request, q)
    index = backend.service.config.default_index
    principal.check_index(index)  # suggestions come from its searches
    runtime = backend.suggest
    query_id = uuid.uuid4().hex
    if runtime is None or runtime.suggester is None or not q.strip():
        resp = SuggestResponse(query=q, query_id=query_id, suggestions=[], partial=False, took_ms=0.0)
    else:
        resp = (await runtime.suggester.suggest(q, k)).model_copy(update={"query_id": query_id})
    tag = etag_of(resp, getattr(getattr(runtime, "artifacts", None), "version", None))
    response.headers["ETag"] = tag
    response.headers["Cache-Control"] = "no-store" if resp.partial else f"private, max-age={MAX_AGE_S}"
    if runtime is None or not q.strip():
        return resp
    if not resp.partial and request.headers.get("if-none-match") in (tag, f"W/{tag}"):
        return Response(status_code=304, headers={"ETag": tag, "Cache-Control": response.headers["Cache-Control"]})
    try:
        texts = [s.text for s in resp.suggestions]
        impression = suggest_impression(
            query_id, q, texts, session_id, user_token, backend.versions, client=principal.identity, index=index
        )
        runtime.record(impression)
    except Exception as exc:  # logging must never fail a response that succeeded
        log.warning("recording the suggest impression failed (%s)", type(exc).__name__)  # its text may quote q
    return resp


@router.get("/v1/related", response_model=RelatedResponse)
async def related(
    request: Request,
    backend: BackendDep,
    principal: SuggestAuth,
    q: Annotated[str, Query(max_length=MAX_PREFIX_CHARS, description="A complete query.")] = "",
    k: Annotated[int, Query(ge=1, le=MAX_K, description="Related searches wanted.")] = 8,
) -> RelatedResponse:
    """Searches that co-occur with `q` in sessions, and LM rewrites that return results."""
    note_query(request, q)
    principal.check_index(backend.service.config.default_index)
    runtime = backend.suggest
    if runtime is None or runtime.suggester is None or not q.strip():
        return RelatedResponse(query=q, related=[])
    return await runtime.suggester.related(q, k)
