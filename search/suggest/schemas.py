"""The suggestion API's request limits, response models and configuration, and the callables a `Suggester`
is given (LM completion, store check): what the API layer and the CLI need without the machinery."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from search.suggest.corpus import CorpusSuggestConfig
from search.suggest.lm_completer import Completion, LMCompleterConfig, Task
from search.suggest.safety import DEFAULT_BLOCKLIST

MAX_PREFIX_CHARS = 200
MAX_K = 20
DAY_S = 86_400.0

CompleteFn = Callable[[str, Task], list[Completion]]
CoverageOf = Literal["candidate", "added"]
Source = Literal["log", "lm", "log+lm", "corpus", "log+corpus", "lm+corpus", "log+lm+corpus"]


class HasResultsFn(Protocol):
    """The result check of an LM candidate; `given`: what the user typed (the words that are not the LM's);
    `completes`: the candidate completes `given` (a suggestion, not a related search), so the drift guard applies."""

    def __call__(self, text: str, given: str = "", completes: bool = False, /) -> bool: ...


class Suggestion(BaseModel):
    text: str = Field(description="The suggested query (normalised: lower case, single spaces).")
    source: Source = Field(
        description="Where it came from: past queries (log), the language model (lm), the indexed documents' titles "
        "and frequent phrases (corpus), or several of them."
    )
    score: float = Field(description="Blended score; suggestions are ordered by it.")


class SuggestResponse(BaseModel):
    query: str = Field(description="The prefix as sent.")
    query_id: str | None = Field(
        default=None, description="Names this response in the impression log: send it with a suggestion click."
    )
    suggestions: list[Suggestion]
    partial: bool = Field(description="True when the LM deadline (or load) left LM candidates out.")
    took_ms: float


class RelatedQuery(BaseModel):
    text: str
    source: Literal["session", "lm"] = Field(description="Co-occurs in sessions, or an LM rewrite with results.")
    score: float


class RelatedResponse(BaseModel):
    query: str
    related: list[RelatedQuery]


class SuggestConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(default=True, description="Serve /v1/suggest and /v1/related from the query log.")
    lm: LMCompleterConfig = Field(default_factory=LMCompleterConfig, description="LM completions and rewrites.")
    corpus: CorpusSuggestConfig = Field(
        default_factory=CorpusSuggestConfig, description="Titles and frequent phrases of the served index (cold start)."
    )
    precomputed_lm: bool = Field(
        default=True,
        description="Serve LM completions computed ahead of time for the index version (`sift suggest precompute`) "
        "before asking the online LM.",
    )
    deadline_ms: float = Field(default=30.0, gt=0, le=10_000, description="Longest a request waits for the LM.")
    half_life_days: float = Field(default=7.0, gt=0, description="A past search counts half after this long.")
    min_result_count: int = Field(default=1, ge=0, description="Only searches with this many results are learnt.")
    min_sessions: int = Field(
        default=1,
        ge=1,
        le=1000,
        description="A past query is suggested (or shown as related) only once this many distinct issuers issued "
        "it on the served index: clients (API key and address) for what the API logged, session ids or user tokens "
        "for in-process impressions. 1 here (offline evaluation); the API's default is 3.",
    )
    blocklist: list[str] = Field(
        default_factory=lambda: list(DEFAULT_BLOCKLIST), description="Words/phrases never suggested (`word*`)."
    )
    blocklist_file: Path | None = Field(default=None, description="More blocklist entries, one per line.")
    pii_filter: bool = Field(default=True, description="Drop candidates with e-mails, phone or card-like numbers.")
    check_results: bool = Field(default=True, description="LM candidates must return a result from the store.")
    check_index: str | None = Field(default=None, description="Index the result check searches (default: search's).")
    min_term_coverage: float = Field(
        default=1.0,
        ge=0,
        le=1,
        description="Share of an LM candidate's words one of its top results must contain (0: any result will do).",
    )
    term_coverage_of: CoverageOf = Field(
        default="added",
        description="Which words `min_term_coverage` counts: all the candidate's, or only those the LM added to "
        "what the user typed (the user's own words are theirs to search for, not the LM's invention).",
    )
    lm_min_shared_results: int = Field(
        default=5,
        ge=0,
        le=10,
        description="An LM candidate's top 10 BM25 results must share at least this many documents with those of "
        "what the user typed, or all of them when it finds fewer (a drift guard for completions, not related "
        "searches: a fluent completion may search for something else; 5 chosen on validation, "
        "`bench/lm_train.py --validate`); 0: off.",
    )
    lm_backoff_words: int = Field(
        default=8,
        ge=0,
        le=32,
        description="An LM candidate failing the result check is cut back word by word (at most this many words, "
        "never into the typed text, never to a trailing stop word) to its longest form that passes; 0: dropped.",
    )
    lm_min_chars: int = Field(default=2, ge=1, description="Shorter prefixes get log suggestions only.")
    results_cache_size: int = Field(default=50_000, ge=1, description="Cached store checks.")
    results_cache_ttl_s: float = Field(default=600.0, gt=0, description="Store checks are redone after this.")
    completion_cache_size: int = Field(default=50_000, ge=1, description="Cached LM candidate lists.")
    completion_cache_ttl_s: float = Field(default=3600.0, gt=0, description="LM candidates are redone after this.")
    workers: int = Field(default=4, ge=1, le=64, description="Background threads waiting on the LM.")
    max_pending: int = Field(default=32, ge=1, description="Queued LM jobs beyond this drop the oldest.")
    prefetch_top: int = Field(default=100, ge=0, description="Frequent prefixes completed ahead of requests.")
    prefetch_interval_s: float = Field(default=900.0, ge=0, description="Re-prefetch period; 0: at startup only.")
    log_weight: float = Field(default=1.0, ge=0, description="Weight of past-query evidence in the blend.")
    lm_weight: float = Field(default=0.5, ge=0, description="Weight of LM confidence in the blend.")
    session_window_s: float = Field(default=1800.0, gt=0, description="Queries this close in a session co-occur.")
    precompute_chars: int = Field(default=6, ge=1, le=32, description="Prefixes up to this long keep top lists.")
