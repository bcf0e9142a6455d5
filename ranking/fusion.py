"""Rank fusion of lexical and dense result lists (Elasticsearch's RRF retriever is not in every
distribution, so Sift fuses in Python, the same way for both stores)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol


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


def linear(lexical: Sequence[Hit], dense: Sequence[Hit], alpha: float = 0.5) -> dict[str, float]:
    """alpha * minmax(dense) + (1 - alpha) * minmax(lexical); a document missing from a list gets 0 there."""
    lex, den = minmax(lexical), minmax(dense)
    return {d: alpha * den.get(d, 0.0) + (1 - alpha) * lex.get(d, 0.0) for d in {*lex, *den}}


def ranked(scores: dict[str, float]) -> list[tuple[str, float]]:
    """Highest first; ties broken by id so results are deterministic."""
    return sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))
