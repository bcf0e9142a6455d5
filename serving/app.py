"""The one place deployments are declared: `build_app(AppConfig)` → a Ray Serve application.

Ingress (FastAPI) → query-encoder, reranker and suggestion-LM deployments (all `@serve.batch`) and the
summarizer deployment (streaming), with
fractional CPUs so everything fits a 2-CPU machine, and GPUs only where the resolver finds one.
The ingress also holds the query log and the suggester (prefix index, caches, filters, deadline).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

from ray import serve
from ray.serve.handle import DeploymentHandle

from models.device import accelerator_available
from models.embedder import SentenceTransformerEmbedder
from search.querylog import QueryEvent, QueryLog, make_query_log
from search.service import EncodeFn, SearchRequest, SearchResponse
from search.settings import Settings
from search.stores.base import IndexStore
from search.stores.factory import make_store
from search.suggest.lm_completer import Completion, Task
from search.suggest.schemas import CompleteFn
from search.suggest.suggester import Suggester, store_has_results
from search.wiring import build_service
from serving.api import Metrics, create_api
from serving.config import AppConfig, Resources
from serving.deployments import QueryEncoderServer, RerankerServer, SuggestLMServer, limit_threads
from serving.summaries import ServeSummaryClient, SummarizerServer

log = logging.getLogger("sift.serving")

THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "TOKENIZERS_PARALLELISM")


def build_store(config: AppConfig) -> IndexStore:
    settings = Settings()
    if config.elasticsearch_url:
        settings = settings.model_copy(update={"elasticsearch_url": config.elasticsearch_url})
    store = make_store(config.store, settings, data_dir=config.data_dir, request_timeout=config.es_request_timeout_s)
    store.warm_up()
    return store


class SuggestRuntime:
    """The query log and the suggester of one API process; `record_search` is the /v1/search hook."""

    def __init__(self, config: AppConfig, store: IndexStore, complete: CompleteFn | None) -> None:
        es_client = getattr(store, "client", None) if config.store == "es" else None
        self.query_log: QueryLog = make_query_log(config.query_log, config.store, config.data_dir, es_client)
        self.suggester: Suggester | None = None
        if not config.suggest.enabled:
            return
        index = config.suggest.check_index or config.search.default_index
        check = store_has_results(store, index, config.suggest.min_term_coverage)
        self.suggester = Suggester(config.suggest, complete=complete, has_results=check)
        since = datetime.now(UTC) - timedelta(days=config.query_log.replay_days)
        try:
            n = self.suggester.load(self.query_log.read(since))
            log.info("suggester learnt %d searches from the query log", n)
        except Exception as exc:  # a log that cannot be read now must not keep the API down
            log.warning("query log replay failed, suggestions start empty: %s", exc)
        self.suggester.start_prefetch()

    def record_search(self, req: SearchRequest, resp: SearchResponse) -> None:
        event = QueryEvent(
            query=req.query,
            result_count=len(resp.results),
            request_id=resp.request_id,
            session_id=req.session_id,
            index=resp.index,
        )
        try:
            self.query_log.append(event)
        except Exception as exc:  # the search already succeeded; a lost log line must not fail it
            log.warning("query log append failed: %s", exc)
        if self.suggester is not None:
            self.suggester.record(event)

    def close(self, wait_s: float = 30.0) -> None:
        if self.suggester is not None:
            self.suggester.close(wait_s)
        self.query_log.close()


def handle_completer(handle: DeploymentHandle, timeout_s: float = 120.0) -> CompleteFn:
    """A blocking LM call through a deployment handle, for the suggester's worker threads (not the event loop)."""

    def complete(text: str, task: Task) -> list[Completion]:
        rows = handle.complete.remote((task, text)).result(timeout_s=timeout_s)
        return [Completion.model_validate(r) for r in rows]

    return complete


class ServeBackend:
    """Backend whose model calls go to deployment handles."""

    def __init__(
        self,
        config: AppConfig,
        encoder: DeploymentHandle | None,
        reranker: DeploymentHandle | None,
        suggest_lm: DeploymentHandle | None = None,
        summarizer: DeploymentHandle | None = None,
    ) -> None:
        self.config = config
        self.metrics = Metrics()
        self._summarizer = summarizer
        self.summary_client = ServeSummaryClient(summarizer) if summarizer is not None else None
        self.summary_top_k = config.summarizer.top_k if config.summarizer else 5
        self.store = build_store(config)
        self._encoder = encoder
        self._reranker = reranker
        self.suggest = SuggestRuntime(config, self.store, handle_completer(suggest_lm) if suggest_lm else None)
        self._local_encoder: SentenceTransformerEmbedder | None = None
        encode_fn: EncodeFn | None = None
        if encoder is not None:

            async def encode(q: str) -> list[float]:
                assert self._encoder is not None
                return await self._encoder.embed.remote(q)  # type: ignore[no-any-return]

            encode_fn = encode
        elif config.search.retrieval.mode != "bm25" and config.encoder_placement == "ingress":
            limit_threads(config.ingress.torch_threads)
            local = SentenceTransformerEmbedder(config.embedder)
            local.warm_up()
            local.embed(["warm up"])
            self._local_encoder = local

            async def encode_here(q: str) -> list[float]:
                vec = await asyncio.to_thread(local.embed, [q])
                return vec[0].tolist()  # type: ignore[no-any-return]

            encode_fn = encode_here

        async def rerank(q: str, texts: list[str]) -> list[float]:
            assert self._reranker is not None
            return await self._reranker.rerank.remote((q, texts))  # type: ignore[no-any-return]

        self.service = build_service(
            self.store,
            config.search,
            encoder=encode_fn,
            reranker=rerank if reranker is not None else None,
            rerank_config=config.reranker,
            timer=self.metrics.observe_stage,
        )

    async def readiness(self) -> dict[str, bool]:
        checks = {"store": await asyncio.to_thread(self.store.ping)}
        if self._local_encoder is not None:
            checks["query_encoder"] = True  # loaded and warmed in __init__
        models = (("query_encoder", self._encoder), ("reranker", self._reranker), ("summarizer", self._summarizer))
        for name, handle in models:
            if handle is not None:
                try:
                    checks[name] = bool(await asyncio.wait_for(_call_ready(handle), timeout=2))
                except Exception:
                    checks[name] = False
        return checks


async def _call_ready(handle: DeploymentHandle) -> Any:
    return await handle.ready.remote()


class SearchIngress:
    """Ingress replica: builds the backend, then hands Serve the FastAPI app (`__serve_build_asgi_app__`)."""

    def __init__(
        self,
        config: AppConfig,
        encoder: DeploymentHandle | None,
        reranker: DeploymentHandle | None,
        suggest_lm: DeploymentHandle | None = None,
        summarizer: DeploymentHandle | None = None,
    ) -> None:
        self.config = config
        # Background threads here (suggestion prefetch, LM candidate checks, the query log) hold the GIL in
        # turns; at Python's default 5 ms switch interval a request waiting on them gains up to 5 ms per turn.
        sys.setswitchinterval(config.ingress_switch_interval_ms / 1000)
        self.backend = ServeBackend(config, encoder, reranker, suggest_lm, summarizer)

    def __del__(self) -> None:
        backend = getattr(self, "backend", None)
        if backend is not None:
            backend.suggest.close(wait_s=5.0)

    def __serve_build_asgi_app__(self) -> Any:
        return create_api(self.backend, self.backend.metrics, self.config.cors_origins)


def serve_logging(config: AppConfig) -> dict[str, Any]:
    """Serve's logging options for the proxy (`serve.start`) and every deployment."""
    return {"enable_access_log": config.access_log}


def _options(res: Resources, name: str, config: AppConfig) -> dict[str, Any]:
    gpus = res.num_gpus if res.num_gpus and accelerator_available() else 0
    env = {k: ("false" if k == "TOKENIZERS_PARALLELISM" else str(res.torch_threads)) for k in THREAD_ENV}
    if config.handlers_on_replica_loop:
        env["RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD"] = "0"
    return {
        "name": name,
        "num_replicas": res.replicas,
        "max_ongoing_requests": res.max_ongoing_requests,
        "ray_actor_options": {"num_cpus": res.num_cpus, "num_gpus": gpus, "runtime_env": {"env_vars": env}},
        "logging_config": serve_logging(config),
    }


def build_app(config: AppConfig) -> Any:
    """The Serve application for `config` (pass it to `serve.run`)."""
    encoder = None
    if config.search.retrieval.mode != "bm25" and config.encoder_placement == "deployment":
        encoder = serve.deployment(**_options(config.encoder_resources, "query_encoder", config))(
            QueryEncoderServer
        ).bind(config.embedder, config.encoder_resources)
    reranker = None
    if config.reranker.model:
        reranker = serve.deployment(**_options(config.reranker_resources, "reranker", config))(RerankerServer).bind(
            config.reranker, config.reranker_resources
        )
    suggest_lm = None
    if config.suggest.enabled and config.suggest.lm.enabled:
        suggest_lm = serve.deployment(**_options(config.suggest_lm_resources, "suggest_lm", config))(
            SuggestLMServer
        ).bind(config.suggest.lm, config.suggest_lm_resources)
    summarizer = None
    if config.summarizer is not None:
        res = config.summarizer_resources
        summarizer = serve.deployment(**_options(res, "summarizer", config))(SummarizerServer).bind(
            config.summarizer, config.embedder, res.torch_threads
        )
    ingress_cls = serve.ingress()(SearchIngress)
    return serve.deployment(**_options(config.ingress, "ingress", config))(ingress_cls).bind(
        config, encoder, reranker, suggest_lm, summarizer
    )


# Process environment for the Ray processes Sift starts (the Serve proxy reads it at start): the proxy talks
# to the ingress over gRPC instead of Ray actor calls (suggestions at 50 req/s: p50 9.7 → 7.3 ms, p99 20 →
# 17.6 ms on 2 CPUs). Values already in the environment win; clusters set these in their own env (k8s/).
RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_SERVE_PROXY_USE_GRPC": "1"}


def prepare_ray_env() -> None:
    """Call before `ray.init` starts a local Ray."""
    for key, value in RAY_ENV.items():
        os.environ.setdefault(key, value)


def run_local(config: AppConfig, *, blocking: bool = False) -> None:
    """Start (or join, with RAY_ADDRESS) Ray, start Serve's HTTP proxy on config.host:port, deploy."""
    import ray

    prepare_ray_env()
    if not ray.is_initialized():
        if os.environ.get("RAY_ADDRESS"):
            ray.init(address=os.environ["RAY_ADDRESS"])
        else:
            ray.init(num_cpus=os.cpu_count() or 2, include_dashboard=False, object_store_memory=200 * 1024 * 1024)
    serve.start(http_options={"host": config.host, "port": config.port}, logging_config=serve_logging(config))
    serve.run(build_app(config), name=config.app_name, route_prefix="/", blocking=blocking)
