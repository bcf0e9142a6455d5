"""Rank fusion of lexical and dense result lists (Elasticsearch's RRF retriever is not in every
distribution, so Sift fuses in Python, the same way for both stores)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal, Protocol


class Hit(Protocol):
    """Anything with an id and a score (a store's hit): fusion needs nothing else, so it imports no store."""

    @property
    def id(self) -> str: ...

    @property
    def score(self) -> float: ...


def rrf(lists: Sequence[Sequence[Hit]], k: int = 60) -> dict[str, float]:
    """Reciprocal rank fusion: score(d) = sum over lists of 1 / (k + rank), ranks from 1."""
    scores: dict[str, float] = {}
    for hits in lists:
        for rank, h in enumerate(hits, start=1):
            scores[h.id] = scores.get(h.id, 0.0) + 1.0 / (k + rank)
    return scores


def minmax(hits: Sequence[Hit]) -> dict[str, float]:
    """Scores scaled to [0, 1] within one query's list; a list of equal scores maps to 1."""
    if not hits:
        return {}
    lo = min(h.score for h in hits)
    hi = max(h.score for h in hits)
    if hi == lo:
        return {h.id: 1.0 for h in hits}
    return {h.id: (h.score - lo) / (hi - lo) for h in hits}


def zscore(hits: Sequence[Hit]) -> dict[str, float]:
    """Scores as standard deviations from the list's mean; a list of equal scores maps to 0.

    Unlike min-max, one outlying top score does not squash the rest of the list towards 0."""
    if not hits:
        return {}
    n = len(hits)
    mean = sum(h.score for h in hits) / n
    sd = math.sqrt(sum((h.score - mean) ** 2 for h in hits) / n)
    if sd == 0:
        return {h.id: 0.0 for h in hits}
    return {h.id: (h.score - mean) / sd for h in hits}


def linear(
    lexical: Sequence[Hit],
    dense: Sequence[Hit],
    alpha: float = 0.5,
    normalization: Literal["minmax", "zscore"] = "minmax",
) -> dict[str, float]:
    """alpha * norm(dense) + (1 - alpha) * norm(lexical). A document missing from a list gets that list's floor:
    0 under min-max (its minimum), and under z-score the list's lowest z (it ranked below everything listed)."""
    if normalization == "zscore":
        lex, den = zscore(lexical), zscore(dense)
    else:
        lex, den = minmax(lexical), minmax(dense)
    lex_floor = min(lex.values(), default=0.0) if normalization == "zscore" else 0.0
    den_floor = min(den.values(), default=0.0) if normalization == "zscore" else 0.0
    return {d: alpha * den.get(d, den_floor) + (1 - alpha) * lex.get(d, lex_floor) for d in {*lex, *den}}


def ranked(scores: dict[str, float]) -> list[tuple[str, float]]:
    """Highest first; ties broken by id so results are deterministic."""
    return sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))
