"""In-process models: the same API with every model in this process, for tests and `sift serve --no-ray`, and
the uvicorn settings of `--no-ray` (access lines as in Serve mode: off unless `access_log`, never a query string).

Nothing here (or below it) imports Ray."""

from __future__ import annotations

import copy
import logging
from typing import Any

import uvicorn.config

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


class PathOnlyAccessLog(logging.Filter):
    """uvicorn's access lines without the query string: `GET /v1/suggest?q=...` carries what a user typed, and
    Serve's own access lines name the route alone."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):  # (client, method, path?query, http version, status)
            record.args = tuple(a.partition("?")[0] if isinstance(a, str) else a for a in record.args)
        return True


def uvicorn_options(config: AppConfig) -> dict[str, Any]:
    """`uvicorn.run` keywords for `sift serve --no-ray`: the access log follows `access_log` (off by default, as
    in Serve mode) and, when on, drops query strings; proxy headers off (`security.trusted_proxies` alone decides
    whose X-Forwarded-For counts, serving/auth.py)."""
    log_config = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
    log_config.setdefault("filters", {})["path_only"] = {"()": PathOnlyAccessLog}
    log_config["loggers"]["uvicorn.access"]["filters"] = ["path_only"]
    return {
        "host": config.host,
        "port": config.port,
        "proxy_headers": False,
        "access_log": config.access_log,
        "log_config": log_config,
    }
