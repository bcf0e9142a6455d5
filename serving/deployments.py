"""Model servers: plain classes holding a model, with `@serve.batch` methods so concurrent requests share
one forward pass. `build_app` turns them into deployments; tests call them without Ray's HTTP layer."""

from __future__ import annotations

import asyncio

from ray import serve

from models.embedder import EmbedderConfig, SentenceTransformerEmbedder
from ranking.rerank import CrossEncoderReranker, RerankerConfig
from search.suggest.lm_completer import LMCompleter, LMCompleterConfig
from serving.config import Resources


def limit_threads(n: int) -> None:
    """torch and BLAS default to every core; with several replicas per machine that oversubscribes."""
    import torch

    torch.set_num_threads(n)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(n)
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn / sentence-transformers
        pass


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
    def __init__(self, config: RerankerConfig, resources: Resources) -> None:
        limit_threads(resources.torch_threads)
        self.reranker = CrossEncoderReranker(config)
        self.reranker.warm_up()
        self.reranker.rerank("warm up", ["warm up"])
        self.rerank.set_max_batch_size(resources.max_batch_size)  # type: ignore[attr-defined]
        self.rerank.set_batch_wait_timeout_s(resources.batch_wait_timeout_s)  # type: ignore[attr-defined]

    @serve.batch(max_batch_size=4, batch_wait_timeout_s=0.002)
    async def rerank(self, requests: list[tuple[str, list[str]]]) -> list[list[float]]:
        pairs = [(q, t) for q, texts in requests for t in texts]
        scores = await asyncio.to_thread(self.reranker.rerank_many, pairs)
        out, i = [], 0
        for _, texts in requests:
            out.append(scores[i : i + len(texts)])
            i += len(texts)
        return out

    async def ready(self) -> bool:
        return True


class SuggestLMServer:
    """Causal-LM completions (and related-query rewrites) for suggestions, batched across requests.

    Requests are `(task, text)`; one batch is split by task so each `generate` call shares one prompt style.
    Returns plain dicts (`text`, `score`) so nothing model-specific crosses the process boundary.
    """

    def __init__(self, config: LMCompleterConfig, resources: Resources) -> None:
        limit_threads(resources.torch_threads)
        self.completer = LMCompleter(config)
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
