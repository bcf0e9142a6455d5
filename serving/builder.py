"""The one place deployments are declared: `build_app(AppConfig, Settings)` → a Ray Serve application.

Ingress (FastAPI) → query-encoder, reranker and suggestion-LM deployments (all `@serve.batch`) and the
summarizer deployment (streaming), with fractional CPUs so everything fits a 2-CPU machine, and GPUs only where
the resolver finds one. One small builder per deployment; each returns None when the config turns it off.
The config and settings reach the ingress as bind arguments.
"""

from __future__ import annotations

from typing import Any

from ray import serve
from ray.serve.deployment import Application

from models.device import accelerator_available
from search.settings import Settings
from serving.config import AppConfig, Resources
from serving.deployments import (
    QueryEncoderServer,
    RerankerServer,
    SearchIngress,
    SuggestLMServer,
    SummarizerServer,
)

THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "TOKENIZERS_PARALLELISM")


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
        "health_check_period_s": res.health_check_period_s,
        # Serve's default waits 30 s for a health check's answer: a replica that hangs (not one that dies, whose
        # check fails at once) would keep its traffic that long. 5 s: replaced within period + 5 s.
        "health_check_timeout_s": 5.0,
        # Serve's default is 20 s: a replica being stopped (scale-down, redeploy) no longer gets requests, and its
        # in-flight searches end within their 10 s deadline; 12 s frees its CPU sooner on a small machine.
        "graceful_shutdown_timeout_s": 12.0,
        "ray_actor_options": {"num_cpus": res.num_cpus, "num_gpus": gpus, "runtime_env": {"env_vars": env}},
        "logging_config": serve_logging(config),
    }


def query_encoder(config: AppConfig) -> Application | None:
    if config.search.retrieval.mode == "bm25" or config.encoder_placement != "deployment":
        return None
    res = config.encoder_resources
    return serve.deployment(**_options(res, "query_encoder", config))(QueryEncoderServer).bind(config.embedder, res)


def reranker(config: AppConfig, settings: Settings) -> Application | None:
    if not config.reranker.model:
        return None
    res = config.reranker_resources
    root = str(settings.registry_root().resolve())
    return serve.deployment(**_options(res, "reranker", config))(RerankerServer).bind(config.reranker, res, root)


def suggest_lm(config: AppConfig, settings: Settings) -> Application | None:
    if not (config.suggest.enabled and config.suggest.lm.enabled):
        return None
    res = config.suggest_lm_resources
    root = str(settings.registry_root().resolve())
    return serve.deployment(**_options(res, "suggest_lm", config))(SuggestLMServer).bind(config.suggest.lm, res, root)


def summarizer(config: AppConfig, settings: Settings) -> Application | None:
    if config.summarizer is None:
        return None
    res = config.summarizer_resources
    return serve.deployment(**_options(res, "summarizer", config))(SummarizerServer).bind(
        config.summarizer, config.embedder, res.torch_threads, settings.cache_dir
    )


def build_app(config: AppConfig, settings: Settings) -> Application:
    """The Serve application for `config` (pass it to `serve.run`); `settings` are the process settings."""
    config, _ = config.pin_encoder(settings.registry_root())
    ingress_cls = serve.ingress()(SearchIngress)
    return serve.deployment(**_options(config.ingress, "ingress", config))(ingress_cls).bind(
        config,
        settings,
        query_encoder(config),
        reranker(config, settings),
        suggest_lm(config, settings),
        summarizer(config, settings),
    )
