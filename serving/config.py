"""AppConfig: everything `build_app` needs, loadable from YAML (`sift serve --config FILE`)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from logs.clicklog import ClickLogConfig
from logs.querylog import QueryLogConfig
from models.embedder import EmbedderConfig
from models.registry import REF_PREFIX, Registry
from ranking.ltr import LTRConfig
from ranking.rerank import RerankerConfig
from search.configfile import load_config
from search.service import SearchConfig
from search.suggest.schemas import SuggestConfig
from search.summarize.config import SummarizerConfig
from serving.admission import AdmissionConfig
from serving.security import SecurityConfig


class Resources(BaseModel):
    """Per-deployment placement. Fractional CPUs keep 2-CPU machines from deadlocking."""

    model_config = ConfigDict(extra="forbid")

    num_cpus: float = Field(default=0.5, gt=0, description="Ray CPUs per replica (fractional is fine).")
    num_gpus: float = Field(default=0.0, ge=0, description="GPUs per replica; applied only where one exists.")
    replicas: int = Field(default=1, ge=1, le=64, description="Replicas of this deployment.")
    torch_threads: int = Field(
        default=1, ge=1, le=64, description="Intra-op threads per replica (no oversubscription)."
    )
    max_batch_size: int = Field(default=16, ge=1, le=1024, description="@serve.batch size.")
    batch_wait_timeout_s: float = Field(default=0.002, ge=0, le=1, description="@serve.batch wait for a fuller batch.")
    max_ongoing_requests: int = Field(default=64, ge=1, description="Concurrent requests per replica.")
    health_check_period_s: float = Field(
        default=2.0,
        ge=0.5,
        le=60,
        description="How often Serve checks each replica (its default is 10 s): a crashed replica is noticed, "
        "dropped from routing and replaced within about this long (bench/chaos.py).",
    )


class ServedSuggestConfig(SuggestConfig):
    """The API's suggestions: a past query is shown to others only after 3 distinct sessions issued it."""

    min_sessions: int = Field(
        default=3,
        ge=1,
        le=1000,
        description="Distinct clients (API key and client address, as the server sees them) that must have issued "
        "a query on the served index before it is suggested or shown as related to anyone; 1 shows every logged "
        "query (a privacy risk).",
    )


class AppConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    app_name: str = Field(default="sift", description="Ray Serve application name.")
    host: str = Field(default="127.0.0.1", description="HTTP bind address.")
    port: int = Field(default=8000, ge=1, le=65535, description="HTTP port.")
    store: Literal["embedded", "es"] = Field(default="embedded", description="Index store backend.")
    data_dir: Path | None = Field(default=None, description="Embedded store data dir (default: SIFT_DATA_DIR).")
    elasticsearch_url: str | None = Field(
        default=None, description="Cluster URL (default: ELASTICSEARCH_URL / local node)."
    )
    es_request_timeout_s: float = Field(default=10.0, gt=0, description="Per-request Elasticsearch timeout.")
    es_retry_busy: bool = Field(
        default=False,
        description="Retry an Elasticsearch call that timed out or found the node busy (429, 502-504) on the "
        "serving path. Off: a retry holds a worker thread past the search deadline and adds load to a recovering "
        "node; the client gets 503 with Retry-After (batch jobs, which have no deadline, keep retrying).",
    )
    ingress_threads: int = Field(
        default=32,
        ge=1,
        le=512,
        description="Worker threads per ingress replica for blocking calls (store requests, highlighting); "
        "asyncio's default is CPUs + 4, which a few calls stuck on a slow node fill.",
    )
    search: SearchConfig = Field(default_factory=SearchConfig)
    embedder: EmbedderConfig = Field(
        default_factory=EmbedderConfig, description="Query encoder (same model as the index)."
    )
    reranker: RerankerConfig = Field(default_factory=RerankerConfig, description="Cross-encoder; model None disables.")
    ranker: LTRConfig = Field(
        default_factory=LTRConfig, description="Learnt LambdaMART ranker (runs in the ingress); model None disables."
    )
    # CPU shares: ingress 0.1 + encoder 0.4 + reranker 0.4 + suggest LM 0.4 (+ a 0.4 summarizer) fit 2 CPUs.
    ingress: Resources = Field(default_factory=lambda: Resources(num_cpus=0.1, max_ongoing_requests=256))
    encoder_resources: Resources = Field(default_factory=lambda: Resources(num_cpus=0.4))
    encoder_placement: Literal["deployment", "ingress"] = Field(
        default="deployment",
        description="Where queries are encoded: the query-encoder deployment (batched across requests, its own "
        "replicas and GPUs), or inside the ingress as Vespa's container embedders do: one Serve hop fewer "
        "(about 9 ms of CPU and 7 ms of latency per search on 2 CPUs), for CPU-only machines.",
    )
    reranker_resources: Resources = Field(default_factory=lambda: Resources(num_cpus=0.4, max_batch_size=4))
    suggest: ServedSuggestConfig = Field(
        default_factory=ServedSuggestConfig, description="Autocomplete and related searches."
    )
    query_log: QueryLogConfig = Field(default_factory=QueryLogConfig, description="Where searches are logged.")
    click_log: ClickLogConfig = Field(
        default_factory=ClickLogConfig, description="Where POST /v1/events stores clicks, conversions and views."
    )
    suggest_lm_resources: Resources = Field(
        default_factory=lambda: Resources(num_cpus=0.4, max_batch_size=8, batch_wait_timeout_s=0.01),
        description="The suggestion LM deployment.",
    )
    summarizer: SummarizerConfig | None = Field(
        default_factory=SummarizerConfig, description="Cited, checked summaries of results; null disables."
    )
    summarizer_resources: Resources = Field(
        default_factory=lambda: Resources(num_cpus=0.4, max_ongoing_requests=8),
        description="The summarizer deployment (one generation per token step; few concurrent streams).",
    )
    ingress_switch_interval_ms: float = Field(
        default=1.0,
        gt=0,
        le=100,
        description="Python's GIL switch interval in the ingress (default 5 ms there): how long a request can "
        "wait on a background thread (suggestion prefetch, candidate checks) before the interpreter switches.",
    )
    handlers_on_replica_loop: bool = Field(
        default=True,
        description="Run every deployment's handlers on the Serve replica's own event loop instead of a second "
        "loop in another thread (Serve's default): two thread handoffs fewer per call. Safe because no handler "
        "blocks its loop (store calls and forward passes run in worker threads).",
    )
    access_log: bool = Field(
        default=False,
        description="Per-request access log lines: Ray Serve's (proxy and every replica) or, under `sift serve "
        "--no-ray`, uvicorn's; method, path and status, never the query string. Off by default: each line costs CPU "
        "in three processes, and /metrics plus the query log already record every search.",
    )
    cors_origins: list[str] = Field(default_factory=list, description="Origins allowed to call the API from a browser.")
    search_deadline_s: float | None = Field(
        default=10.0,
        gt=0,
        description="End-to-end deadline of POST /v1/search: past it the client gets 503 with Retry-After instead "
        "of waiting on a stuck store or replica; null: none.",
    )
    search_admission: AdmissionConfig = Field(
        default_factory=AdmissionConfig,
        description="Searches each ingress replica runs at once, and how long one waits for a slot before 503.",
    )
    security: SecurityConfig = Field(
        default_factory=SecurityConfig,
        description="API keys (scopes, indices), quotas and the body cap; without keys the API binds to loopback only.",
    )

    @classmethod
    def load(cls, path: Path | str) -> AppConfig:
        return load_config(path, cls)

    def pin_encoder(self, registry_root: Path) -> tuple[AppConfig, str]:
        """This config with a `registry:encoder[@V]` embedder pinned to that version's folder, and the name
        responses report. The encoder is read at start and never followed: its vectors must match the index's,
        so a new encoder arrives with a reindex (new version, alias swap) and a restart, not a hot swap."""
        model = self.embedder.model
        if not model.startswith(REF_PREFIX):
            return self, model
        path = Registry(registry_root).resolve(model)
        return self.model_copy(update={"embedder": self.embedder.model_copy(update={"model": str(path)})}), path.name
