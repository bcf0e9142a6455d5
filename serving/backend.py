"""What the HTTP API calls: the `Backend` protocol (which features a server has) and `AppBackend`, the one
implementation, whose models are either Serve deployment handles (`serving.deployments.handle_models`) or
objects in this process (`serving.local.local_models`), both as a `Models` bundle of async calls."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Protocol

from logs.clicklog import make_click_log
from logs.events import EventRecorder, impression_for
from logs.querylog import NullQueryLog
from models.live import LiveModel
from ranking.ltr import LTRRanker, load_ranker
from ranking.rerank import RerankFn
from search.service import EncodeFn, SearchRequest, SearchResponse, SearchService
from search.settings import Settings
from search.stores.factory import make_store
from search.suggest.schemas import CompleteFn
from search.wiring import build_service
from serving.config import AppConfig
from serving.metrics import Metrics
from serving.runtime import SuggestRuntime
from serving.summary_clients import SummaryClient

log = logging.getLogger("sift.api")

ReadyCheck = Callable[[], Awaitable[bool]]
READY_TIMEOUT_S = 2.0


class Backend(Protocol):
    """What the routes use. `service` answers searches; the optional features are None where a server has
    none: `suggest` (query log + suggester) and `summary_client` (summaries of the top `summary_top_k`)."""

    @property
    def service(self) -> SearchService: ...

    @property
    def suggest(self) -> SuggestRuntime | None: ...

    @property
    def summary_client(self) -> SummaryClient | None: ...

    @property
    def summary_top_k(self) -> int: ...

    @property
    def events(self) -> EventRecorder | None:
        """Checks and stores click / conversion / view events; None where events are off."""
        ...

    @property
    def versions(self) -> dict[str, str]:
        """The ranker/model versions this server answers with (logged with every impression)."""
        ...

    async def readiness(self) -> dict[str, bool]:
        """Named checks (store reachable, models warm); ready when all are true."""
        ...


@dataclass
class Models:
    """The models of one API process as async calls (None: that stage is off) plus their readiness checks."""

    encoder: EncodeFn | None = None
    reranker: RerankFn | None = None
    complete: CompleteFn | None = None
    summary_client: SummaryClient | None = None
    ready_checks: dict[str, ReadyCheck] = field(default_factory=dict)


class AppBackend:
    """The store (warmed up), the search service, the suggest runtime and the summary client of one process."""

    def __init__(self, config: AppConfig, settings: Settings, models: Models) -> None:
        self.config = config
        self.metrics = Metrics()
        limit_blas(config.ingress.torch_threads)
        if config.elasticsearch_url:
            settings = settings.model_copy(update={"elasticsearch_url": config.elasticsearch_url})
        self.store = make_store(
            config.store,
            settings,
            data_dir=config.data_dir,
            request_timeout=config.es_request_timeout_s,
            retry_busy=config.es_retry_busy,
        )
        self.store.warm_up()
        self.summary_client = models.summary_client
        self.summary_top_k = config.summarizer.top_k if config.summarizer else 5
        data_dir = config.data_dir or settings.data_dir
        self.suggest = SuggestRuntime(config, self.store, models.complete, data_dir)
        self.events = _event_recorder(config, self.store, self.suggest, data_dir)
        self.ranker: LiveModel[LTRRanker] | None = None
        ltr = None
        if config.ranker.model:
            load = partial(load_ranker, config.ranker)
            self.ranker = LiveModel(config.ranker.model, load, settings.registry_root(), config.ranker.watch_s)
            self.ranker.warm_up()  # a missing or mismatched ranker fails the start, not the first search
            ltr = self.ranker.current[1]
        self.versions = serving_versions(config, ltr)
        self.service = build_service(
            self.store,
            config.search,
            encoder=models.encoder,
            reranker=models.reranker,
            rerank_config=config.reranker,
            timer=self.metrics.observe_stage,
            ltr=ltr,
            encoder_version=config.embedder.model if config.search.retrieval.mode != "bm25" else None,
        )
        self.service.typos.popularity = self.suggest.typo_popularity  # searched words win near-ties
        if self.ranker is not None:
            self.ranker.add_listener(self._ranker_swapped)
        self._ready_checks = models.ready_checks

    def _ranker_swapped(self, version: str | None, ranker: LTRRanker | None) -> None:
        """A promoted (or rolled back) ranker: the next search uses it; searches in flight keep theirs."""
        self.service.ltr = ranker
        self.versions = serving_versions(self.config, ranker)

    async def readiness(self) -> dict[str, bool]:
        checks = {"store": await asyncio.to_thread(self.store.ping)}
        for name, check in self._ready_checks.items():
            try:
                checks[name] = bool(await asyncio.wait_for(check(), timeout=READY_TIMEOUT_S))
            except Exception:
                checks[name] = False
        return checks


async def logged_search(
    backend: Backend, req: SearchRequest, lighter: bool = False, client: str | None = None
) -> SearchResponse:
    """A search and its impression in the query log: /v1/search and the in-process click simulator. `client`:
    who sent it as the server knows it (`Principal.identity`), what the k-sessions rule counts; None in-process."""
    resp = await backend.service.search(req, lighter=lighter)
    runtime = backend.suggest
    if runtime is not None:
        versions = {**backend.versions, **resp.model_versions}
        if lighter:  # only what ran: a degraded search's impression names no encoder, reranker or interleaving
            for k in ("embedder", "reranker", "interleave"):
                if k not in resp.model_versions:
                    versions.pop(k, None)
        try:
            runtime.record(impression_for(req, resp, versions, client=client))
        except Exception as exc:  # logging must never fail a search that succeeded
            log.warning("recording the search failed (%s)", type(exc).__name__)  # its text may quote the query
    return resp


def limit_blas(n: int) -> None:
    """BLAS pools of this process to `n` threads. Concurrent searches are the parallelism here; a BLAS pool per
    call on top of them spins: the embedded store's kNN matrix-vector product (3,810 x 384) cost 3.9 ms of CPU
    and 15 ms of wall time with OpenBLAS's 2 threads on a busy 2-CPU machine, 0.4 and 2 ms with one, and a
    `sift serve --no-ray` search runs it twice (py-spy: a quarter of the process's samples)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # then BLAS keeps its default
        return
    threadpool_limits(n, user_api="blas")


def serving_versions(config: AppConfig, ltr: LTRRanker | None = None) -> dict[str, str]:
    """What produced a ranking, as the impression log records it (the model registry will add versions)."""
    retrieval = config.search.retrieval
    versions = {"retrieval": retrieval.mode if retrieval.mode != "hybrid" else f"hybrid-{retrieval.fusion}"}
    if retrieval.mode != "bm25":
        versions["embedder"] = config.embedder.model
    if config.reranker.model:
        versions["reranker"] = config.reranker.model
    if ltr is not None:
        versions["ranker"] = ltr.version
        if ltr.config.interleave:
            versions["interleave"] = f"a={versions['retrieval']},b={ltr.version}"
    return versions


def _event_recorder(config: AppConfig, store: object, runtime: SuggestRuntime, data_dir: Path) -> EventRecorder | None:
    """Events need impressions to be checked against: none without a query log or with the click log off."""
    if isinstance(runtime.query_log, NullQueryLog):
        return None
    es_client = getattr(store, "client", None) if config.store == "es" else None
    click_log = make_click_log(config.click_log, config.store, data_dir, es_client)
    return EventRecorder(runtime.query_log, click_log, config.click_log) if click_log is not None else None
