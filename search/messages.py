"""What a search request and its response look like on the wire (HTTP, CLI, offline evaluation all share them).

Kept apart from the service so the models (validated at the edge) and the use case (search/service.py) each stay
small; `search.service` re-exports them, so `from search.service import SearchRequest` keeps working.
"""

from __future__ import annotations

import uuid
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from search.facets import FacetParams, FacetResults
from search.filters import MAX_FILTER_VALUES, MAX_FILTERS, FilterList

MAX_QUERY_CHARS = 1000
MAX_LIMIT = 100


class RequestError(ValueError):
    """Input that is well-formed JSON but cannot be served (e.g. an unknown filter field): a 422."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


class SearchRequest(FacetParams):  # facets, facet_ranges, max_facet_values, count: search/facets.py
    model_config = ConfigDict(extra="forbid")

    query: str = Field(description="Free-text query, 1 to 1,000 characters.", max_length=MAX_QUERY_CHARS)
    index: str | None = Field(default=None, description="Index (alias) to search; the server's default if omitted.")
    limit: int = Field(default=10, ge=1, le=MAX_LIMIT, description="Results per page (at most 100).")
    offset: int = Field(default=0, ge=0, le=1000, description="Results to skip, for pagination.")
    filters: FilterList = Field(
        default_factory=list,
        description=f"term / terms / range filters: at most {MAX_FILTERS}, holding at most {MAX_FILTER_VALUES} values.",
    )
    mode: Literal["bm25", "dense", "hybrid"] | None = Field(default=None, description="Override retrieval mode.")
    fusion: Literal["rrf", "linear"] | None = Field(default=None, description="Override hybrid fusion.")
    rerank: bool = Field(default=True, description="Rerank the top N with the cross-encoder, if one is configured.")
    highlight: bool = Field(default=True, description="Return highlighted snippets.")
    session_id: str | None = Field(default=None, max_length=200, description="Opaque session id, for query logs.")
    user_token: str | None = Field(default=None, max_length=200, description="Opaque user id, for click analytics.")
    summarize: bool = Field(
        default=False,
        description="Also return `summary_url`: a Server-Sent Events stream of a cited summary of the top results.",
    )
    typo_tolerance: bool | None = Field(
        default=None, description="Correct misspelt query words (None: the server's default, on); false: only suggest."
    )

    @field_validator("query")
    @classmethod
    def _not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("query must not be empty")
        return v


class Explanation(BaseModel):
    """Why a result is where it is: each stage's rank and score."""

    bm25_rank: int | None = None
    bm25_score: float | None = None
    dense_rank: int | None = None
    dense_score: float | None = None
    fused_score: float
    rerank_score: float | None = None
    ltr_score: float | None = None
    expansion_terms: list[str] | None = Field(
        default=None, description="The terms pseudo-relevance feedback (RM3) added to the BM25 query, when it ran."
    )
    contributions: list[tuple[str, float]] | None = Field(
        default=None, description="The learnt ranker's largest per-feature contributions to ltr_score (TreeSHAP)."
    )
    synonyms: list[str] | None = Field(
        default=None, description="The synonyms (as the index's sets spell them) this result matched through."
    )
    stages: list[str]


class SearchResult(BaseModel):
    id: str
    title: str
    url: str | None = None
    score: float = Field(description="The score the result is ordered by (ltr, else rerank, else fused).")
    highlights: dict[str, list[str]] = Field(default_factory=dict)
    fields: dict[str, object] = Field(default_factory=dict)
    explanation: Explanation


class SearchResponse(FacetResults):  # facets, total_hits
    request_id: str
    query_id: str = Field(
        default_factory=lambda: uuid.uuid4().hex,
        description="Names this result page in the impression log: send it with click / conversion events.",
    )
    query: str
    index: str
    offset: int
    limit: int
    results: list[SearchResult]
    stages: list[str] = Field(description="Stages that ran, in order.")
    reranked: bool
    rerank_note: str | None = Field(default=None, description="Why reranking did not run, when it did not.")
    retrieval_note: str | None = Field(
        default=None, description="Why retrieval fell back to BM25 only (the query encoder failed), when it did."
    )
    took_ms: float
    explored: bool = Field(default=False, description="The top results were shuffled (position-bias estimation).")
    swapped: list[int] | None = Field(
        default=None, exclude=True, description="Adjacent-swap exploration: the two ranks swapped (logged, never sent)."
    )
    features: dict[str, list[float | None]] | None = Field(
        default=None, exclude=True, description="Ranking features of the shown results (logged, never sent)."
    )
    teams: list[str] | None = Field(
        default=None, exclude=True, description="Interleaving team of each shown result (logged, never sent)."
    )
    model_versions: dict[str, str] = Field(
        default_factory=dict,
        description="What served this response: `retrieval` (the mode that ran), the embedder, and the reranker "
        "/ ranker when they ran; during a hot reload two responses may name different versions.",
    )
    summary_url: str | None = Field(
        default=None,
        description="GET this (e.g. with EventSource) to stream the summary; set when `summarize` was asked and "
        "the server has a summarizer.",
    )
    corrected_query: str | None = Field(default=None, description="The query searched, when typos were corrected.")
    did_you_mean: str | None = Field(default=None, description="A corrected query offered to the user, not applied.")
