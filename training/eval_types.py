"""The evaluation's vocabulary: the systems it can run and its config and result models (`training.evaluation`
runs them; `training.report` writes them)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from models.embedder import EmbedderConfig
from search.retrieval import RetrievalConfig
from search.service import MAX_QUERY_CHARS
from training.metrics import DeltaSummary

BASELINE = "bm25"
NO_RERANKER = "no cross-encoder configured"


class SystemSpec(BaseModel):
    """How one evaluated system maps onto a search request."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: Literal["bm25", "dense", "hybrid"]
    fusion: Literal["rrf", "linear"] | None = Field(default=None, description="None: the RetrievalConfig default.")
    rerank: bool = False
    ltr: bool = Field(default=False, description="The learnt ranker (EvalConfig.ranker) re-orders the head.")
    encoder: bool = Field(default=False, description="Over the corpus indexed with EvalConfig.encoder (trained).")
    optional: bool = Field(
        default=False, description="Stages whose model was not given are skipped (not run only if none was)."
    )
    reference: bool = Field(
        default=False,
        description="Not the service: bm25s over the corpus (training.reference); hybrid: fused with the index's "
        "kNN as the plain baseline (bm25s + MiniLM, RRF k=60 or min-max linear alpha 0.5).",
    )


SYSTEMS: dict[str, SystemSpec] = {
    "bm25": SystemSpec(mode="bm25"),
    "bm25-reference": SystemSpec(mode="bm25", reference=True),
    "dense": SystemSpec(mode="dense"),
    "baseline-rrf": SystemSpec(mode="hybrid", fusion="rrf", reference=True),
    "baseline-linear": SystemSpec(mode="hybrid", fusion="linear", reference=True),
    "hybrid": SystemSpec(mode="hybrid"),  # the default pipeline (RetrievalConfig's fusion and feedback)
    "hybrid-rrf": SystemSpec(mode="hybrid", fusion="rrf"),
    "hybrid-linear": SystemSpec(mode="hybrid", fusion="linear"),
    "hybrid+rerank": SystemSpec(mode="hybrid", rerank=True),
    "hybrid-linear+ltr": SystemSpec(mode="hybrid", fusion="linear", ltr=True),
    "hybrid-linear+encoder": SystemSpec(mode="hybrid", fusion="linear", encoder=True),
    "hybrid-linear+rerank": SystemSpec(mode="hybrid", fusion="linear", rerank=True),
    # every trained stage that was given (a stage its gate refused is simply not served)
    "full": SystemSpec(mode="hybrid", fusion="linear", encoder=True, rerank=True, ltr=True, optional=True),
}
NO_RANKER = "no learnt ranker given (EvalConfig.ranker / sift eval --ranker)"
NO_ENCODER = "no trained encoder given (EvalConfig.encoder / sift eval --encoder)"


# -- configuration and results ------------------------------------------------------------------------------
class EvalConfig(BaseModel):
    """One evaluation run: a dataset, a store, the systems to compare and how the index is built."""

    model_config = ConfigDict(extra="forbid")

    dataset: Path = Field(description="BEIR folder (corpus.jsonl, queries.jsonl, qrels/<split>.tsv).")
    store: Literal["es", "embedded"] = Field(default="es", description="Index store backend.")
    systems: list[str] = Field(default_factory=lambda: list(SYSTEMS), description="Systems to run, by name.")
    split: str = Field(default="test", description="Qrels split (qrels/<split>.tsv).")
    qrels: Path | None = Field(default=None, description="Judgments to score against instead (e.g. from clicks).")
    index: str | None = Field(default=None, description="Index name; default eval-<dataset folder name>.")
    out: Path | None = Field(default=None, description="Output folder; default bench/results/eval/<dataset>-<store>.")
    limit_queries: int | None = Field(default=None, ge=1, description="Evaluate only the first N judged queries.")
    embedder: EmbedderConfig = Field(default_factory=EmbedderConfig, description="Document and query encoder.")
    max_chunks: int = Field(
        default=1,
        ge=1,
        description="Chunks embedded per document. 1 = truncation to the model window, as the BEIR/MTEB figures do.",
    )
    chunk_overlap: int = Field(default=32, ge=0, description="Tokens shared by consecutive chunks.")
    retrieval: RetrievalConfig = Field(default_factory=RetrievalConfig, description="rrf_k, alpha, depth.")
    reranker: str | None = Field(default=None, description="CrossEncoder id/path for hybrid+rerank; None: not run.")
    rerank_top_n: int = Field(default=20, ge=1, le=200, description="Fused results the reranker rescores.")
    ranker: Path | None = Field(default=None, description="`sift train ranker` folder for the +ltr system.")
    encoder: str | None = Field(
        default=None, description="Trained encoder (folder) for the +encoder and full systems, on its own index."
    )
    concurrency: int = Field(default=4, ge=1, le=64, description="Search requests in flight at once.")
    batch_size: int = Field(default=256, ge=1, description="Documents per indexing batch.")
    cache_path: Path | None = Field(default=None, description="Embedding cache; default <cache_dir>/embeddings.sqlite.")
    data_dir: Path | None = Field(default=None, description="Embedded store data dir; default SIFT_DATA_DIR.")
    rebuild: bool = Field(default=True, description="Build a fresh index version (vectors come from the cache).")


class BuildStats(BaseModel):
    rebuilt: bool
    seconds: float = Field(description="Wall time of the whole build (read, chunk, encode, write, swap).")
    encode_seconds: float = Field(description="Of which spent inside the model encoding chunks.")
    read: int = 0
    indexed: int = 0
    chunks: int = 0
    encoded: int = Field(default=0, description="Chunks encoded by the model (the rest came from the cache).")
    cache_hits: int = 0
    max_chunks: int


class QueryEncodingStats(BaseModel):
    seconds: float = Field(description="Model time encoding queries (0 when all came from the cache).")
    encoded: int
    cache_hits: int


class SystemResult(BaseModel):
    name: str
    mode: str
    fusion: str | None
    rerank: bool
    status: Literal["ok", "not run"]
    reason: str | None = None
    n_queries: int = 0
    metrics: dict[str, float] = Field(default_factory=dict)
    search_seconds: float = 0.0
    ms_per_query: float = 0.0
    reranked_queries: int = Field(default=0, description="Queries whose response says the reranker ran.")
    per_query: dict[str, dict[str, float]] = Field(default_factory=dict, description="metric → query id → value.")
    delta_vs_bm25: dict[str, float] = Field(default_factory=dict, description="Per-query nDCG@10 minus BM25's.")
    delta_summary: DeltaSummary | None = None


class EvalResult(BaseModel):
    dataset: str
    dataset_path: str
    split: str
    store: str
    index: str
    model: str
    started_at: str
    seconds: float = Field(description="Wall time of the whole evaluation.")
    n_queries: int
    queries_without_qrels: int
    truncated_queries: int = Field(description=f"Queries cut to the API's {MAX_QUERY_CHARS}-character limit.")
    retrieval: RetrievalConfig
    rerank_top_n: int
    build: BuildStats
    query_encoding: QueryEncodingStats
    systems: list[SystemResult]

    def system(self, name: str) -> SystemResult:
        for s in self.systems:
            if s.name == name:
                return s
        raise KeyError(name)
