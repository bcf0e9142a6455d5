"""In-process backend: the same API with models in this process, for tests and `sift serve --no-ray`."""

from __future__ import annotations

import asyncio

from models.embedder import SentenceTransformerEmbedder
from ranking.rerank import CrossEncoderReranker
from search.suggest.lm_completer import Completion, LMCompleter, Task
from search.summarize.summarizer import Summarizer
from search.wiring import build_service
from serving.api import Metrics
from serving.app import SuggestRuntime, build_store
from serving.config import AppConfig
from serving.summaries import LocalSummaryClient


class LocalBackend:
    def __init__(self, config: AppConfig) -> None:
        self.config = config
        self.metrics = Metrics()
        self.store = build_store(config)
        self.embedder = None
        self.reranker = None
        if config.search.retrieval.mode != "bm25":
            self.embedder = SentenceTransformerEmbedder(config.embedder)
            self.embedder.warm_up()
        if config.reranker.model:
            self.reranker = CrossEncoderReranker(config.reranker)
            self.reranker.warm_up()
        self.service = build_service(
            self.store,
            config.search,
            encoder=self.embedder,
            reranker=self.reranker,
            rerank_config=config.reranker,
            timer=self.metrics.observe_stage,
        )
        # The LM loads on first use, on a suggester worker thread: requests never wait for it (deadline).
        self.completer = LMCompleter(config.suggest.lm) if config.suggest.lm.enabled else None
        lm = self.completer

        def complete(text: str, task: Task) -> list[Completion]:
            assert lm is not None
            return lm.complete([text], task)[0]

        self.suggest = SuggestRuntime(config, self.store, complete if lm is not None else None)
        # Summaries: the LM loads on the first stream, on the stream's worker thread.
        self.summary_client: LocalSummaryClient | None = None
        self.summary_top_k = config.summarizer.top_k if config.summarizer else 5
        if config.summarizer is not None:
            sentence_encoder = self.embedder or SentenceTransformerEmbedder(config.embedder)
            self.summary_client = LocalSummaryClient(Summarizer(config.summarizer, sentence_encoder))

    async def readiness(self) -> dict[str, bool]:
        return {"store": await asyncio.to_thread(self.store.ping)}
