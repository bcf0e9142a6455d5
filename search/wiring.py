"""`build_service`: the one place a `SearchService` is wired, for the Serve ingress, the in-process backend,
the CLI and offline evaluation, so what is measured offline is what is served.

Models come either as objects (called in a worker thread, off the event loop) or as async callables
(Ray Serve deployment handles).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from ranking.ltr import LTRRanker
from ranking.rerank import LiveReranker, RerankerConfig, RerankFn, RerankScores, RerankStage
from search.service import EncodeFn, SearchConfig, SearchService, StageTimer
from search.stores.base import IndexStore


class _Embeds(Protocol):
    def embed(self, texts: Sequence[str]) -> np.ndarray: ...


class _Reranks(Protocol):
    def rerank(self, query: str, texts: Sequence[str]) -> list[float]: ...


def thread_encoder(embedder: _Embeds) -> EncodeFn:
    """A local embedder as the service's async encode call (runs in a thread)."""

    async def encode(q: str) -> list[float]:
        vec = await asyncio.to_thread(embedder.embed, [q])
        return [float(x) for x in vec[0]]

    return encode


def thread_reranker(reranker: _Reranks | LiveReranker) -> RerankFn:
    """A local cross-encoder as the rerank stage's async score call (runs in a thread); a `LiveReranker` also
    says which version scored."""

    if isinstance(reranker, LiveReranker):
        live = reranker

        async def versioned(q: str, texts: list[str]) -> list[float] | RerankScores:
            return await asyncio.to_thread(live.rerank_versioned, q, texts)

        return versioned

    async def rerank(q: str, texts: list[str]) -> list[float] | RerankScores:
        return await asyncio.to_thread(reranker.rerank, q, texts)

    return rerank


def build_service(
    store: IndexStore,
    config: SearchConfig,
    *,
    encoder: _Embeds | EncodeFn | None = None,
    reranker: _Reranks | RerankFn | None = None,
    rerank_config: RerankerConfig | None = None,
    timer: StageTimer | None = None,
    ltr: LTRRanker | None = None,
    encoder_version: str | None = None,
) -> SearchService:
    """The service over `store`: `encoder`/`reranker` as model objects or async callables (None: stage off).

    `rerank_config` gives the stage's `top_n` and `deadline_ms` (the app YAML's `reranker:`); `ltr` a learnt
    ranker (warmed up by the caller) that re-orders the head after fusion and rerank; `encoder_version` the
    embedder's name or registry version, which responses report."""
    encode: EncodeFn | None = None
    if encoder is not None:
        encode = thread_encoder(encoder) if hasattr(encoder, "embed") else encoder  # type: ignore[assignment, arg-type]
    stage: RerankStage | None = None
    if reranker is not None:
        local = hasattr(reranker, "rerank") or isinstance(reranker, LiveReranker)
        score: RerankFn = thread_reranker(reranker) if local else reranker  # type: ignore[assignment, arg-type]
        stage = RerankStage.from_config(score, rerank_config or RerankerConfig())
    return SearchService(store, encode, stage, config, timer=timer, ltr=ltr, encoder_version=encoder_version)
