"""The one place deployments are declared: `build_app(AppConfig)` → a Ray Serve application.

Ingress (FastAPI) → query-encoder deployment and reranker deployment (both `@serve.batch`), with
fractional CPUs so everything fits a 2-CPU machine, and GPUs only where the resolver finds one.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ray import serve
from ray.serve.handle import DeploymentHandle

from search.device import accelerator_available
from search.service import SearchService
from search.settings import Settings
from search.stores.base import IndexStore
from search.stores.factory import make_store
from serving.api import Metrics, create_api
from serving.config import AppConfig, Resources
from serving.models import QueryEncoderServer, RerankerServer

THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "TOKENIZERS_PARALLELISM")


def build_store(config: AppConfig) -> IndexStore:
    settings = Settings()
    if config.elasticsearch_url:
        settings = settings.model_copy(update={"elasticsearch_url": config.elasticsearch_url})
    store = make_store(config.store, settings, data_dir=config.data_dir, request_timeout=config.es_request_timeout_s)
    store.warm_up()
    return store


class ServeBackend:
    """Backend whose model calls go to deployment handles."""

    def __init__(self, config: AppConfig, encoder: DeploymentHandle | None, reranker: DeploymentHandle | None) -> None:
        self.config = config
        self.metrics = Metrics()
        self.store = build_store(config)
        self._encoder = encoder
        self._reranker = reranker

        async def encode(q: str) -> list[float]:
            assert self._encoder is not None
            return await self._encoder.embed.remote(q)  # type: ignore[no-any-return]

        async def rerank(q: str, texts: list[str]) -> list[float]:
            assert self._reranker is not None
            return await self._reranker.rerank.remote((q, texts))  # type: ignore[no-any-return]

        self.service = SearchService(
            self.store,
            encode if encoder is not None else None,
            rerank if reranker is not None else None,
            config.search,
            timer=self.metrics.observe_stage,
        )

    async def readiness(self) -> dict[str, bool]:
        checks = {"store": await asyncio.to_thread(self.store.ping)}
        for name, handle in (("query_encoder", self._encoder), ("reranker", self._reranker)):
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

    def __init__(self, config: AppConfig, encoder: DeploymentHandle | None, reranker: DeploymentHandle | None) -> None:
        self.config = config
        self.backend = ServeBackend(config, encoder, reranker)

    def __serve_build_asgi_app__(self) -> Any:
        return create_api(self.backend, self.backend.metrics, self.config.cors_origins)


def _options(res: Resources, name: str) -> dict[str, Any]:
    gpus = res.num_gpus if res.num_gpus and accelerator_available() else 0
    env = {k: ("false" if k == "TOKENIZERS_PARALLELISM" else str(res.torch_threads)) for k in THREAD_ENV}
    return {
        "name": name,
        "num_replicas": res.replicas,
        "max_ongoing_requests": res.max_ongoing_requests,
        "ray_actor_options": {"num_cpus": res.num_cpus, "num_gpus": gpus, "runtime_env": {"env_vars": env}},
    }


def build_app(config: AppConfig) -> Any:
    """The Serve application for `config` (pass it to `serve.run`)."""
    encoder = None
    if config.search.retrieval.mode != "bm25":
        encoder = serve.deployment(**_options(config.encoder_resources, "query_encoder"))(QueryEncoderServer).bind(
            config.embedder, config.encoder_resources
        )
    reranker = None
    if config.reranker.model:
        reranker = serve.deployment(**_options(config.reranker_resources, "reranker"))(RerankerServer).bind(
            config.reranker, config.reranker_resources
        )
    ingress_cls = serve.ingress()(SearchIngress)
    return serve.deployment(**_options(config.ingress, "ingress"))(ingress_cls).bind(config, encoder, reranker)


def run_local(config: AppConfig, *, blocking: bool = False) -> None:
    """Start (or join, with RAY_ADDRESS) Ray, start Serve's HTTP proxy on config.host:port, deploy."""
    import os

    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if not ray.is_initialized():
        if os.environ.get("RAY_ADDRESS"):
            ray.init(address=os.environ["RAY_ADDRESS"])
        else:
            ray.init(num_cpus=os.cpu_count() or 2, include_dashboard=False, object_store_memory=200 * 1024 * 1024)
    serve.start(http_options={"host": config.host, "port": config.port})
    serve.run(build_app(config), name=config.app_name, route_prefix="/", blocking=blocking)
