"""GET/PUT/DELETE /v1/indexes/{index}/synonyms: an index's synonym sets (admin keys only).

The sets are stored per index alias (search/synonyms.py), so they apply to every version the alias points at.
A change is read by this replica's next search at once, by other replicas within the store's cache TTL (the
embedded store's files: at once too; Elasticsearch's `sift-synonyms`: 2 s).
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, HTTPException
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field

from search.naming import validate_index_name
from search.synonyms import CachedSynonyms, StoredSynonyms, SynonymSets
from serving.auth import AdminAuth, Principal
from serving.backend import Backend
from serving.dependencies import BackendDep

router = APIRouter(tags=["synonyms"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "No or unknown API key"},
    403: {"description": "The key lacks the admin scope or this index"},
    404: {"description": "The server does not serve this index"},
    422: {"description": "Invalid index name or synonym sets (bounds: search/synonyms.py)"},
    501: {"description": "This server's store keeps no synonyms"},
}


class SynonymsDeleted(BaseModel):
    index: str
    deleted: bool = Field(description="Whether the index had synonym sets.")


def _synonyms(backend: Backend, principal: Principal, index: str) -> CachedSynonyms:
    principal.check_index(index, loc=("path", "index"))
    try:
        validate_index_name(index)
    except ValueError as exc:
        raise RequestValidationError([{"loc": ("path", "index"), "msg": str(exc), "type": "value_error"}]) from exc
    syn = getattr(backend.service.retriever, "synonyms", None)
    if not isinstance(syn, CachedSynonyms):
        raise HTTPException(501, "this server's store keeps no synonym sets")
    return syn


@router.get("/v1/indexes/{index}/synonyms", response_model=StoredSynonyms, responses=_ERRORS)
async def get_synonyms(index: str, backend: BackendDep, principal: AdminAuth) -> Any:
    """The index's synonym sets, their version (grows on every change) and when they last changed."""
    syn = _synonyms(backend, principal, index)
    return await asyncio.to_thread(syn.get, index)


@router.put("/v1/indexes/{index}/synonyms", response_model=StoredSynonyms, responses=_ERRORS)
async def put_synonyms(index: str, body: SynonymSets, backend: BackendDep, principal: AdminAuth) -> Any:
    """Replace the index's synonym sets (all of them); the next search uses them, no restart."""
    syn = _synonyms(backend, principal, index)
    return await asyncio.to_thread(syn.put, index, body)


@router.delete("/v1/indexes/{index}/synonyms", response_model=SynonymsDeleted, responses=_ERRORS)
async def delete_synonyms(index: str, backend: BackendDep, principal: AdminAuth) -> Any:
    """Remove the index's synonym sets."""
    syn = _synonyms(backend, principal, index)
    return SynonymsDeleted(index=index, deleted=await asyncio.to_thread(syn.delete, index))
