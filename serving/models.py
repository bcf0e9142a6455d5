"""Model servers: plain classes holding a model, with `@serve.batch` methods so concurrent requests share
one forward pass. `build_app` turns them into deployments; tests call them without Ray's HTTP layer."""

from __future__ import annotations

import asyncio

from ray import serve

from indexing.embedding import EmbedderConfig, SentenceTransformerEmbedder
from ranking.reranker import CrossEncoderReranker, RerankerConfig
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
