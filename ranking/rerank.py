"""The rerank stage: a cross-encoder rescores the fused head within a deadline; past it the fused order stays.

`RerankerConfig` is the one reranker config (`reranker:` in the app YAML): the model settings plus the stage's
`top_n` and `deadline_ms`, both read here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar, runtime_checkable

from pydantic import Field

from models.cross_encoder import CrossEncoderConfig, CrossEncoderModel
from ranking.fusion import Hit

RerankFn = Callable[[str, list[str]], Awaitable[list[float]]]
H = TypeVar("H", bound=Hit)


class RerankerConfig(CrossEncoderConfig):
    top_n: int = Field(default=20, ge=1, le=200, description="How many fused results get rescored.")
    deadline_ms: int = Field(default=500, ge=1, description="Past this, results keep the fused order.")


@runtime_checkable
class Reranker(Protocol):
    model_id: str

    def warm_up(self) -> None: ...

    def rerank(self, query: str, texts: Sequence[str]) -> list[float]:
        """One relevance score per text, higher is better, aligned with `texts`."""
        ...


class CrossEncoderReranker(CrossEncoderModel):
    """The reranker model: a cross-encoder configured by `RerankerConfig`."""

    def __init__(self, config: RerankerConfig | CrossEncoderConfig) -> None:
        super().__init__(config)


@dataclass(frozen=True)
class RerankOutcome:
    scores: dict[str, float]
    note: str | None


class RerankStage:
    """Rescoring the top `top_n` with an async scorer (a local model in a thread, or a Serve handle)."""

    def __init__(self, score: RerankFn, top_n: int = 20, deadline_ms: int = 500) -> None:
        self.score = score
        self.top_n = top_n
        self.deadline_ms = deadline_ms

    @classmethod
    def from_config(cls, score: RerankFn, config: RerankerConfig) -> RerankStage:
        return cls(score, top_n=config.top_n, deadline_ms=config.deadline_ms)

    async def run(self, query: str, head: Sequence[H], texts: Sequence[str]) -> RerankOutcome:
        """Scores of `head` (ids → score), or none and the reason when the deadline passed."""
        try:
            scores = await asyncio.wait_for(self.score(query, list(texts)), timeout=self.deadline_ms / 1000)
        except TimeoutError:
            return RerankOutcome({}, f"reranker passed its {self.deadline_ms} ms deadline; fused order kept")
        return RerankOutcome({h.id: s for h, s in zip(head, scores, strict=True)}, None)


def apply_rerank(fused: list[H], scores: dict[str, float]) -> list[H]:
    """Reranked head by rerank score, then the rest in fused order."""
    if not scores:
        return fused
    head = [r for r in fused if r.id in scores]
    tail = [r for r in fused if r.id not in scores]
    head.sort(key=lambda r: (-scores[r.id], -r.score, r.id))
    return head + tail
