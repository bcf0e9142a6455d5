"""Pseudo-relevance feedback: the top documents of a first pass, taken as relevant, reshape the query.

Two kinds, both without any click or label:

- **RM3** for BM25 (Lavrenko & Croft's relevance model, interpolated with the query as Anserini/Pyserini ship
  it): each feedback document's term distribution (tf / length), weighted by its first-pass score, summed; the
  `fb_terms` heaviest terms, L1-normalised, are mixed with the query's own (tf / |q|) by `orig_weight`. The
  expanded query scores a document as the weighted sum of its per-term BM25 (Lucene's boosted `should`), so a
  store needs two capabilities: the feedback documents' term counts (with document frequencies, for Anserini's
  filter of terms in more than `max_df_ratio` of the collection) and a weighted BM25 search.
- **Rocchio** for the dense side: the query vector moved towards the mean of the feedback documents' vectors,
  renormalised (`q' = q + beta * mean(d)`), then searched again.

Stores that cannot do one of these (a wrapper, a legacy embedded file) are searched without it, and the
retriever says so in its notes; nothing here fails a search.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Protocol, runtime_checkable

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from search.documents import Hit
from search.filters import Filter


class RM3Config(BaseModel):
    """RM3 on the BM25 side; the defaults are Anserini's (fbDocs 10, fbTerms 10, originalQueryWeight 0.5)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(default=False, description="Expand the BM25 query with RM3 (one more BM25 search).")
    fb_docs: int = Field(default=10, ge=1, le=100, description="Top first-pass documents taken as relevant.")
    fb_terms: int = Field(default=10, ge=1, le=100, description="Expansion terms kept (heaviest first).")
    orig_weight: float = Field(
        default=0.5, ge=0.0, le=1.0, description="Weight of the original query in the interpolation (1: no change)."
    )
    max_df_ratio: float = Field(
        default=0.1,
        gt=0.0,
        le=1.0,
        description="Terms found in more than this share of the collection's documents are never expansion terms "
        "(Anserini's filter: they say nothing about the topic).",
    )


class DensePRFConfig(BaseModel):
    """Rocchio feedback on the query vector."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(default=True, description="Move the query vector towards the top documents' (one more kNN).")
    fb_docs: int = Field(default=3, ge=1, le=100, description="Top first-pass documents whose vectors are averaged.")
    beta: float = Field(
        default=0.25, ge=0.0, le=10.0, description="Weight of the documents' mean against the query's own vector (1)."
    )


class TermStats(BaseModel):
    """What RM3 reads from a store about the feedback documents: their terms and those terms' document counts."""

    docs: dict[str, dict[str, int]] = Field(description="Document id → term → frequency in the document.")
    df: dict[str, int] = Field(description="Term → number of documents of the collection that contain it.")
    n_docs: int = Field(description="Documents in the collection.")


@runtime_checkable
class LexicalFeedbackStore(Protocol):
    """A store that can run RM3: term statistics of given documents, and BM25 with a weight per term."""

    def term_stats(self, target: str, ids: Sequence[str]) -> TermStats: ...

    def bm25_weighted_search(
        self, target: str, weights: Mapping[str, float], k: int, filters: Sequence[Filter] = ()
    ) -> list[Hit]: ...


@runtime_checkable
class DenseFeedbackStore(Protocol):
    """A store that can give documents' vectors back (the mean of each document's chunk vectors, unit length)."""

    def doc_vectors(self, target: str, ids: Sequence[str]) -> dict[str, np.ndarray]: ...


def rm3_weights(
    query_terms: Sequence[str],
    feedback: Sequence[tuple[Mapping[str, int], float]],
    config: RM3Config,
    df: Mapping[str, int] | None = None,
    n_docs: int = 0,
) -> dict[str, float]:
    """Term → weight of the expanded query. `feedback` is (term counts, first-pass score) per document.

    Each document's counts are L1-normalised (P(w|d)) and weighted by its score (a stand-in for P(Q|d), as in
    Anserini); the summed model is cut to the `fb_terms` heaviest terms (ties by term, for determinism), L1-
    normalised and interpolated with the query's own distribution. Without feedback, the query alone."""
    q = Counter(query_terms)
    total_q = sum(q.values())
    if total_q == 0:
        return {}
    q_weights = {t: c / total_q for t, c in q.items()}
    limit = config.max_df_ratio * n_docs if df is not None and n_docs > 0 else None
    model: dict[str, float] = {}
    for counts, score in feedback:
        length = sum(counts.values())
        if length == 0 or score <= 0:
            continue
        for term, tf in counts.items():
            if limit is not None and df is not None and df.get(term, 0) > limit:
                continue
            model[term] = model.get(term, 0.0) + score * tf / length
    top = sorted(model.items(), key=lambda kv: (-kv[1], kv[0]))[: config.fb_terms]
    mass = sum(w for _, w in top)
    if mass <= 0:
        return q_weights
    a = config.orig_weight
    out = {t: a * w for t, w in q_weights.items()}
    for t, w in top:
        out[t] = out.get(t, 0.0) + (1 - a) * w / mass
    return {t: w for t, w in out.items() if w > 0}


def rocchio(query: np.ndarray, doc_vectors: Sequence[np.ndarray], config: DensePRFConfig) -> np.ndarray:
    """The query vector moved towards the feedback documents: unit(unit(q) + beta * mean(unit(d))).

    Without documents, or if the sum vanishes, the query's own unit vector."""
    q = np.asarray(query, dtype=np.float32)
    qn = float(np.linalg.norm(q))
    if qn == 0:
        return q
    q = q / qn
    if not doc_vectors:
        return q
    mat = np.vstack([np.asarray(v, dtype=np.float32) for v in doc_vectors])
    norms = np.linalg.norm(mat, axis=1, keepdims=True)
    mat = (mat / np.where(norms == 0, 1.0, norms)).astype(np.float32)
    moved = q + config.beta * mat.mean(axis=0)
    n = float(np.linalg.norm(moved))
    return q if n == 0 else (moved / n).astype(np.float32)


def expansion_terms(weights: Mapping[str, float], query_terms: Sequence[str], n: int = 10) -> list[str]:
    """The expansion terms RM3 added (not in the query), heaviest first: what an explanation lists."""
    own = set(query_terms)
    added = [(t, w) for t, w in weights.items() if t not in own]
    return [t for t, _ in sorted(added, key=lambda kv: (-kv[1], kv[0]))[:n]]
