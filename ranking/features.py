"""Learning-to-rank features of (query, candidate) pairs: one piece of code for serving and for training.

Why one function: a learnt ranker is only as good as the agreement between the features it was trained on and
the ones it sees when it serves. `SearchService` computes them for the candidates it ranks and logs those of
the page with the impression, so training reads what was actually served; offline evaluation runs the same
service. Missing evidence (a document the dense retriever did not return, no reranker, no date) is NaN, which
LightGBM treats as missing rather than as a value.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Mapping, Sequence
from collections.abc import Set as AbstractSet
from datetime import UTC, datetime
from typing import Protocol

import numpy as np
import Stemmer  # PyStemmer: Snowball in C, fast enough to stem candidate bodies per search

FEATURES: tuple[str, ...] = (
    "bm25_score",
    "bm25_rank",
    "dense_score",
    "dense_rank",
    "fused_score",
    "fused_rank",
    "title_coverage",
    "body_coverage",
    "doc_length",
    "age_days",
    "click_prior",
    "rerank_score",
)

_WORD = re.compile(r"\w+", re.UNICODE)
_stemmer = Stemmer.Stemmer("english")


class Candidate(Protocol):
    """What retrieval knows of a candidate (search.retrieval.Retrieved has these)."""

    @property
    def id(self) -> str: ...

    @property
    def score(self) -> float: ...

    @property
    def bm25_rank(self) -> int | None: ...

    @property
    def bm25_score(self) -> float | None: ...

    @property
    def dense_rank(self) -> int | None: ...

    @property
    def dense_score(self) -> float | None: ...


class CandidateDoc(Protocol):
    """What the text features read of a document (search.documents.Document has these)."""

    @property
    def title(self) -> str: ...

    @property
    def body(self) -> str: ...

    @property
    def published_at(self) -> datetime | None: ...


@functools.lru_cache(maxsize=8192)
def stems(text: str) -> frozenset[str]:
    """Distinct Snowball stems of the lower-cased words of `text` (cached: popular documents come back often,
    and stemming a body is most of a row's cost)."""
    return frozenset(_stemmer.stemWords(list(set(_WORD.findall(text.lower())))))


def _opt(x: float | int | None) -> float:
    return math.nan if x is None else float(x)


def _coverage(query: AbstractSet[str], text: AbstractSet[str]) -> float:
    return len(query & text) / len(query) if query else math.nan


def feature_matrix(
    query_terms: Sequence[str],
    candidates: Sequence[Candidate],
    docs: Mapping[str, CandidateDoc | None],
    *,
    priors: Mapping[str, float] | None = None,
    rerank: Mapping[str, float] | None = None,
    ranks: Sequence[int] | None = None,
    now: datetime | None = None,
) -> np.ndarray:
    """Rows in `candidates` order, columns in `FEATURES` order (float64, NaN where unknown).

    `query_terms` are the query's words without stop words (search.text.query_terms); `priors` a click-model
    prior per document id; `rerank` cross-encoder scores of the candidates it rescored; `ranks` the fused rank of
    each candidate when they are not the fused list's head in order (a page)."""
    q = set(_stemmer.stemWords(list(query_terms)))
    now = now or datetime.now(UTC)
    out = np.full((len(candidates), len(FEATURES)), np.nan)
    for i, c in enumerate(candidates):
        doc = docs.get(c.id)
        row = [
            _opt(c.bm25_score),
            _opt(c.bm25_rank),
            _opt(c.dense_score),
            _opt(c.dense_rank),
            float(c.score),
            float(ranks[i] if ranks is not None else i + 1),
        ]
        if doc is not None:
            body = stems(doc.body)
            published = doc.published_at
            age = (now - published).total_seconds() / 86400 if published and published.tzinfo else math.nan
            row += [_coverage(q, stems(doc.title)), _coverage(q, body), float(len(doc.body.split())), age]
        else:
            row += [math.nan] * 4
        prior = priors.get(c.id) if priors is not None else None
        score = rerank.get(c.id) if rerank is not None else None
        row += [_opt(prior), _opt(score)]
        out[i] = row
    return out
