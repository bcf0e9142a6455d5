"""Every Ray Serve deployment class: the model servers (plain classes holding a model, with `@serve.batch`
methods so concurrent requests share one forward pass), the streaming summarizer, and the ingress, whose
backend calls them through handles (`handle_models`). `serving.builder` turns them into deployments; tests
call them without Ray's HTTP layer. Only the Ray path imports this module."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from ray import serve
from ray.serve.handle import DeploymentHandle

from models.device import limit_threads
from models.embedder import (
    CachedEmbedder,
    Embedder,
    EmbedderConfig,
    EmbeddingCache,
    SentenceTransformerEmbedder,
)
from ranking.rerank import LiveReranker, RerankerConfig, RerankScores
from search.documents import Document
from search.settings import Settings
from search.suggest.live_lm import make_completer
from search.suggest.lm_completer import Completion, LMCompleterConfig, Task
from search.suggest.schemas import CompleteFn
from search.summarize.config import SummarizerConfig
from search.summarize.summarizer import Summarizer
from search.wiring import thread_encoder
from serving.api import create_api
from serving.backend import AppBackend, Models, ReadyCheck
from serving.config import AppConfig, Resources
from serving.summary_clients import LocalSummaryClient, ServeSummaryClient, WireEvent


class QueryEncoderServer:
    def __init__(self, config: EmbedderConfig, resources: Resources) -> None:
        limit_threads(resources.torch_threads)
        self.embedder = SentenceTransformerEmbedder(config)
        self.embedder.warm_up()
        self.embedder.embed(["warm up"])
        self.embed.set_max_batch_size(resources.max_batch_size)  # type: ignore[attr-defined]
        self.embed.set_batch_wait_timeout_s(resources.batch_wait_timeout_s)  # type: ignore[attr-defined]

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.002)
    async def embed(self, texts: list[str]) -> list[list[float]]:
        vecs = await asyncio.to_thread(self.embedder.embed, texts)
        return [v.tolist() for v in vecs]

    async def ready(self) -> bool:
        return True


class RerankerServer:
    """The cross-encoder; with `model: registry:reranker` it follows the registry's live version (hot reload),
    and every answer names the version that scored it."""

    def __init__(self, config: RerankerConfig, resources: Resources, registry_root: str | None = None) -> None:
        limit_threads(resources.torch_threads)
        self.reranker = LiveReranker(config, registry_root)
        self.reranker.warm_up()
        self.rerank.set_max_batch_size(resources.max_batch_size)  # type: ignore[attr-defined]
        self.rerank.set_batch_wait_timeout_s(resources.batch_wait_timeout_s)  # type: ignore[attr-defined]

    @serve.batch(max_batch_size=4, batch_wait_timeout_s=0.002)
    async def rerank(self, requests: list[tuple[str, list[str]]]) -> list[RerankScores]:
        pairs = [(q, t) for q, texts in requests for t in texts]
        scored = await asyncio.to_thread(self.reranker.score_many, pairs)
        if scored.version is None:
            return [scored for _ in requests]
        out, i = [], 0
        for _, texts in requests:
            out.append(RerankScores(scored.scores[i : i + len(texts)], scored.version))
            i += len(texts)
        return out

    async def live_version(self) -> str | None:
        return self.reranker.live.current[0]

    async def ready(self) -> bool:
        return True


class SuggestLMServer:
    """Causal-LM completions (and related-query rewrites) for suggestions, batched across requests.

    Requests are `(task, text)`; one batch is split by task so each `generate` call shares one prompt style.
    Returns plain dicts (`text`, `score`) so nothing model-specific crosses the process boundary.
    """

    def __init__(self, config: LMCompleterConfig, resources: Resources, registry_root: str | None = None) -> None:
        limit_threads(resources.torch_threads)
        self.completer = make_completer(config, registry_root)  # registry:lm → follows promotions (hot reload)
        self.completer.warm_up()
        self.completer.complete(["warm up"])
        self.complete.set_max_batch_size(resources.max_batch_size)  # type: ignore[attr-defined]
        self.complete.set_batch_wait_timeout_s(resources.batch_wait_timeout_s)  # type: ignore[attr-defined]

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.01)
    async def complete(self, requests: list[tuple[str, str]]) -> list[list[dict[str, float | str]]]:
        out: list[list[dict[str, float | str]]] = [[] for _ in requests]
        for task in ("complete", "related"):
            idx = [i for i, (t, _) in enumerate(requests) if t == task]
            if not idx:
                continue
            texts = [requests[i][1] for i in idx]
            results = await asyncio.to_thread(self.completer.complete, texts, task)  # type: ignore[arg-type]
            for i, cands in zip(idx, results, strict=True):
                out[i] = [c.model_dump() for c in cands]
        return out

    async def ready(self) -> bool:
        return True


class SummarizerServer:
    """Model server for summaries; `build_app` makes it a deployment (fractional CPU, streaming method).

    `cache_dir` holds the sentence-vector cache (the process settings' `cache_dir`, passed down)."""

    def __init__(self, config: SummarizerConfig, embedder: EmbedderConfig, torch_threads: int, cache_dir: Path) -> None:
        limit_threads(torch_threads)
        encoder: Embedder = SentenceTransformerEmbedder(embedder)
        if config.cache_sentence_vectors:
            encoder = CachedEmbedder(encoder, EmbeddingCache(cache_dir / "embeddings.sqlite"))
        self.summarizer = Summarizer(config, encoder)
        self.summarizer.warm_up()
        self.summarizer.embedder.embed(["warm up"])
        self.client = LocalSummaryClient(self.summarizer)

    async def stream(
        self, query: str, docs: list[dict[str, Any]], max_new_tokens: int | None
    ) -> AsyncIterator[WireEvent]:
        """Called with `handle.options(stream=True)`. Cancelling the call raises CancelledError here."""
        s = self.client.stream(query, [Document.model_validate(d) for d in docs], max_new_tokens)
        try:
            async for ev in s:
                yield ev
        finally:
            s.cancel()

    async def ready(self) -> bool:
        return True

    async def stats(self) -> list[dict[str, Any]]:
        """Recent generations (tokens, stop reason): lets operators and tests see cancellation take effect."""
        return [
            {
                "tokens": r.tokens,
                "max_new_tokens": r.max_new_tokens,
                "reason": r.reason,
                "finished": r.finished.is_set(),
            }
            for r in list(self.summarizer.generations)
        ]


# -- the ingress ---------------------------------------------------------------------------------------------
def handle_completer(handle: DeploymentHandle, timeout_s: float = 120.0) -> CompleteFn:
    """A blocking LM call through a deployment handle, for the suggester's worker threads (not the event loop)."""

    def complete(text: str, task: Task) -> list[Completion]:
        rows = handle.complete.remote((task, text)).result(timeout_s=timeout_s)
        return [Completion.model_validate(r) for r in rows]

    return complete


def _handle_ready(handle: DeploymentHandle) -> ReadyCheck:
    async def ready() -> bool:
        return bool(await handle.ready.remote())

    return ready


async def _loaded() -> bool:
    return True  # a model loaded and warmed while the ingress started


def handle_models(
    config: AppConfig,
    encoder: DeploymentHandle | None,
    reranker: DeploymentHandle | None,
    suggest_lm: DeploymentHandle | None = None,
    summarizer: DeploymentHandle | None = None,
) -> Models:
    """The ingress's models: deployment handles, or the query encoder in the ingress itself when the config
    places it there (`encoder_placement: ingress`)."""
    models = Models()
    if encoder is not None:

        async def encode(q: str) -> list[float]:
            return await encoder.embed.remote(q)  # type: ignore[no-any-return]

        models.encoder = encode
        models.ready_checks["query_encoder"] = _handle_ready(encoder)
    elif config.search.retrieval.mode != "bm25" and config.encoder_placement == "ingress":
        limit_threads(config.ingress.torch_threads)
        local = SentenceTransformerEmbedder(config.embedder)
        local.warm_up()
        local.embed(["warm up"])
        models.encoder = thread_encoder(local)
        models.ready_checks["query_encoder"] = _loaded
    if reranker is not None:

        async def rerank(q: str, texts: list[str]) -> list[float] | RerankScores:
            return await reranker.rerank.remote((q, texts))  # type: ignore[no-any-return]

        models.reranker = rerank
        models.ready_checks["reranker"] = _handle_ready(reranker)
    if suggest_lm is not None:
        models.complete = handle_completer(suggest_lm)
    if summarizer is not None:
        models.summary_client = ServeSummaryClient(summarizer)
        models.ready_checks["summarizer"] = _handle_ready(summarizer)
    return models


class SearchIngress:
    """Ingress replica: builds the backend, then hands Serve the FastAPI app (`__serve_build_asgi_app__`)."""

    def __init__(
        self,
        config: AppConfig,
        settings: Settings,
        encoder: DeploymentHandle | None,
        reranker: DeploymentHandle | None,
        suggest_lm: DeploymentHandle | None = None,
        summarizer: DeploymentHandle | None = None,
    ) -> None:
        self.config = config
        # Background threads here (suggestion prefetch, LM candidate checks, the query log) hold the GIL in
        # turns; at Python's default 5 ms switch interval a request waiting on them gains up to 5 ms per turn.
        sys.setswitchinterval(config.ingress_switch_interval_ms / 1000)
        self.backend = AppBackend(config, settings, handle_models(config, encoder, reranker, suggest_lm, summarizer))

    def __del__(self) -> None:
        backend = getattr(self, "backend", None)
        if backend is not None:
            backend.suggest.close(wait_s=5.0)

    def __serve_build_asgi_app__(self) -> Any:
        return create_api(self.backend, self.backend.metrics, self.config.cors_origins)
