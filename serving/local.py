"""In-process models: the same API with every model in this process, for tests and `sift serve --no-ray`.

Nothing here (or below it) imports Ray."""

from __future__ import annotations

from models.embedder import SentenceTransformerEmbedder
from ranking.rerank import LiveReranker
from search.settings import Settings
from search.suggest.live_lm import make_completer
from search.suggest.lm_completer import Completer, Completion, Task
from search.suggest.schemas import CompleteFn
from search.summarize.summarizer import Summarizer
from search.wiring import thread_encoder, thread_reranker
from serving.backend import AppBackend, Models
from serving.config import AppConfig
from serving.security import check_bind
from serving.summary_clients import LocalSummaryClient


def local_models(config: AppConfig, settings: Settings | None = None) -> Models:
    """Encoder and reranker loaded and warmed now; the suggestion LM and the summarizer's LM load on first use
    (on a suggester worker thread, on the stream's worker thread): requests never wait for them."""
    models = Models()
    embedder = None
    if config.search.retrieval.mode != "bm25":
        embedder = SentenceTransformerEmbedder(config.embedder)
        embedder.warm_up()
        models.encoder = thread_encoder(embedder)
    if config.reranker.model:
        reranker = LiveReranker(config.reranker, (settings or Settings()).registry_root())
        reranker.warm_up()
        models.reranker = thread_reranker(reranker)
    if config.suggest.lm.enabled:
        models.complete = _completer(make_completer(config.suggest.lm, (settings or Settings()).registry_root()))
    if config.summarizer is not None:
        sentence_encoder = embedder or SentenceTransformerEmbedder(config.embedder)
        models.summary_client = LocalSummaryClient(Summarizer(config.summarizer, sentence_encoder))
    return models


def _completer(lm: Completer) -> CompleteFn:
    def complete(text: str, task: Task) -> list[Completion]:
        return lm.complete([text], task)[0]

    return complete


def local_backend(config: AppConfig, settings: Settings) -> AppBackend:
    """The backend of `sift serve --no-ray` and the in-process tests; refuses an open API off loopback."""
    check_bind(config.host, config.security)
    config, _ = config.pin_encoder(settings.registry_root())
    return AppBackend(config, settings, local_models(config, settings))
