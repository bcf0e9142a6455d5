"""The rerank stage: a cross-encoder rescores the fused head within a deadline; past it the fused order stays.

`RerankerConfig` is the one reranker config (`reranker:` in the app YAML): the model settings plus the stage's
`top_n` and `deadline_ms`, both read here.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol, TypeVar, runtime_checkable

from pydantic import Field

from models.cross_encoder import CrossEncoderConfig, CrossEncoderModel
from models.live import LiveModel
from ranking.fusion import Hit

log = logging.getLogger("sift.rerank")


@dataclass(frozen=True)
class RerankScores:
    """Scores with the model version that computed them (None: no live version, so no scores)."""

    scores: list[float]
    version: str | None


RerankFn = Callable[[str, list[str]], Awaitable["list[float] | RerankScores"]]
H = TypeVar("H", bound=Hit)


class RerankerConfig(CrossEncoderConfig):
    """The served reranker's defaults fit a 2-CPU machine: a 128-token window and int8 linear layers rerank 20
    SciFact abstracts with a MiniLM-L6 cross-encoder in about 200 ms on one thread (fp32 at 256: about 1.4 s)."""

    max_length: int | None = Field(
        default=128, ge=16, le=4096, description="Token window of one (query, doc) pair; None: the model's own."
    )
    quantize: Literal["none", "int8"] = Field(
        default="int8", description="int8: dynamic int8 linear layers on CPU (ignored on accelerators)."
    )
    top_n: int = Field(default=20, ge=1, le=200, description="How many fused results get rescored.")
    deadline_ms: int = Field(default=500, ge=1, description="Past this, results keep the fused order.")
    watch_s: float = Field(
        default=2.0,
        ge=0,
        description="With `model: registry:reranker`, how often the registry's live pointer is checked; a newly "
        "promoted version is loaded and swapped in without a restart (0: load at start only).",
    )


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


class LiveReranker:
    """The reranker of a server: a fixed model, or the registry's live version followed (`registry:reranker`).

    `score_many` reads the (version, model) pair once per call, so a batch is scored by one version and says
    which."""

    def __init__(self, config: RerankerConfig, registry_root: Path | str | None = None) -> None:
        if not config.model:
            raise ValueError("a reranker needs config.model")
        self.config = config
        self.live: LiveModel[CrossEncoderReranker] = LiveModel(config.model, self._load, registry_root, config.watch_s)

    def _load(self, path: str) -> CrossEncoderReranker:
        model = CrossEncoderReranker(self.config.model_copy(update={"model": path}))
        model.warm_up()
        model.rerank("warm up", ["warm up"])
        return model

    def warm_up(self) -> None:
        self.live.warm_up()

    def score_many(self, pairs: Sequence[tuple[str, str]]) -> RerankScores:
        self.warm_up()
        version, model = self.live.current
        if model is None:
            return RerankScores([], None)
        return RerankScores(model.rerank_many(pairs), version)

    def rerank_versioned(self, query: str, texts: Sequence[str]) -> RerankScores:
        return self.score_many([(query, t) for t in texts])

    def close(self) -> None:
        self.live.close()


@dataclass(frozen=True)
class RerankOutcome:
    scores: dict[str, float]
    note: str | None
    version: str | None = None


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
            got = await asyncio.wait_for(self.score(query, list(texts)), timeout=self.deadline_ms / 1000)
        except TimeoutError:
            return RerankOutcome({}, f"reranker passed its {self.deadline_ms} ms deadline; fused order kept")
        except Exception as exc:  # a replica that died or a model that raised: the fused order still answers
            log.warning("the reranker failed (%s: %s); fused order kept", type(exc).__name__, exc)
            return RerankOutcome({}, f"reranker failed ({type(exc).__name__}); fused order kept")
        scores, version = (got.scores, got.version) if isinstance(got, RerankScores) else (got, None)
        if isinstance(got, RerankScores) and got.version is None:
            return RerankOutcome({}, "no live reranker version in the model registry; fused order kept")
        if len(scores) != len(head):
            log.warning("the reranker returned %d scores for %d results; fused order kept", len(scores), len(head))
            return RerankOutcome({}, "reranker returned a wrong number of scores; fused order kept")
        return RerankOutcome({h.id: s for h, s in zip(head, scores, strict=True)}, None, version)


def apply_rerank(fused: list[H], scores: dict[str, float]) -> list[H]:
    """Reranked head by rerank score, then the rest in fused order."""
    if not scores:
        return fused
    head = [r for r in fused if r.id in scores]
    tail = [r for r in fused if r.id not in scores]
    head.sort(key=lambda r: (-scores[r.id], -r.score, r.id))
    return head + tail
