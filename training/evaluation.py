"""Offline evaluation on BEIR-layout test collections, through the same `SearchService` the API serves.

A ranking change is only real if it shows on collections that others judged, and only if the measured path
is the served path. So the index is built by `IndexingPipeline`, every system runs as a `SearchRequest`
through `SearchService.search` (retriever, fusion, reranker and all), and only the scoring of the returned
rankings is done apart, in `training.metrics` (ranx); BEIR reading is in `training.beir`, the written
outputs in `training.report`. Embeddings of documents and queries go through the persistent `EmbeddingCache`, so a
second run encodes nothing; encoding time is measured apart from search time. One system stands outside the
service on purpose: `bm25-reference`, plain bm25s over the corpus (`training.reference`), the yardstick each
store's BM25 is held to, on each query's full text (the service cuts queries to the API's limit; the reference
does not: it is what a plain BM25 does with the collection's queries).
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from indexing.pipeline import IndexingConfig, IndexingPipeline, IndexReport
from models.embedder import (
    CachedEmbedder,
    Embedder,
    EmbedderConfig,
    EmbedderWrapper,
    EmbeddingCache,
    SentenceTransformerEmbedder,
)
from ranking.ltr import LTRConfig, LTRRanker
from ranking.rerank import CrossEncoderReranker, RerankerConfig
from search.retrieval import RetrievalConfig
from search.service import MAX_LIMIT, MAX_QUERY_CHARS, SearchConfig, SearchRequest, SearchService
from search.settings import Settings
from search.stores.base import IndexStore
from search.stores.factory import make_store
from search.wiring import build_service
from training.beir import load_beir
from training.metrics import (
    DeltaSummary,
    fit_query,
    mean_metrics,
    per_query_deltas,
    per_query_metrics,
    ranking_to_run,
    summarize_deltas,
)
from training.reference import ReferenceBM25

log = logging.getLogger("sift.eval")

BASELINE = "bm25"
NO_RERANKER = "no cross-encoder configured"


class SystemSpec(BaseModel):
    """How one evaluated system maps onto a search request."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: Literal["bm25", "dense", "hybrid"]
    fusion: Literal["rrf", "linear"] | None = Field(default=None, description="None: the RetrievalConfig default.")
    rerank: bool = False
    ltr: bool = Field(default=False, description="The learnt ranker (EvalConfig.ranker) re-orders the head.")
    reference: bool = Field(default=False, description="Not the service: bm25s over the corpus (training.reference).")


SYSTEMS: dict[str, SystemSpec] = {
    "bm25": SystemSpec(mode="bm25"),
    "bm25-reference": SystemSpec(mode="bm25", reference=True),
    "dense": SystemSpec(mode="dense"),
    "hybrid-rrf": SystemSpec(mode="hybrid", fusion="rrf"),
    "hybrid-linear": SystemSpec(mode="hybrid", fusion="linear"),
    "hybrid+rerank": SystemSpec(mode="hybrid", rerank=True),
    "hybrid-linear+ltr": SystemSpec(mode="hybrid", fusion="linear", ltr=True),
}
NO_RANKER = "no learnt ranker given (EvalConfig.ranker / sift eval --ranker)"


# -- timing wrapper -----------------------------------------------------------------------------------------
class TimedEmbedder(EmbedderWrapper):
    """Counts model time only (not cache look-ups), so encoding is reported apart from everything else."""

    def __init__(self, inner: Embedder) -> None:
        super().__init__(inner)
        self.seconds = 0.0
        self.texts = 0
        self._lock = threading.Lock()

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        t = time.perf_counter()
        out = self.inner.embed(texts)
        with self._lock:
            self.seconds += time.perf_counter() - t
            self.texts += len(texts)
        return out


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


def default_index_name(dataset: Path) -> str:
    slug = re.sub(r"[^a-z0-9_-]+", "-", dataset.resolve().name.lower()).strip("-_") or "dataset"
    return f"eval-{slug}"[:100]


def default_out_dir(dataset: Path, store: str) -> Path:
    return Path("bench") / "results" / "eval" / f"{dataset.resolve().name}-{store}"


# -- the run ------------------------------------------------------------------------------------------------
class Evaluator:
    """Builds the index, runs every system through `SearchService`, scores the rankings with ranx."""

    def __init__(
        self,
        config: EvalConfig,
        store: IndexStore | None = None,
        settings: Settings | None = None,
        embedder: Embedder | None = None,
    ) -> None:
        unknown = [s for s in config.systems if s not in SYSTEMS]
        if unknown:
            raise ValueError(f"unknown system(s) {unknown}: choose from {', '.join(SYSTEMS)}")
        if not config.systems:
            raise ValueError("no systems to evaluate")
        self.config = config
        self.settings = settings or Settings()
        self._store = store
        self._own_store = store is None
        self._embedder = embedder

    def _make_store(self) -> IndexStore:
        if self._store is None:
            self._store = make_store(self.config.store, self.settings, data_dir=self.config.data_dir)
        return self._store

    def run(self) -> EvalResult:
        return asyncio.run(self.arun())

    async def arun(self) -> EvalResult:
        cfg = self.config
        started = time.perf_counter()
        started_at = datetime.now(UTC).isoformat(timespec="seconds")
        data = load_beir(cfg.dataset, cfg.split, cfg.qrels)
        qids = list(data.qrels)[: cfg.limit_queries] if cfg.limit_queries else list(data.qrels)
        qrels = {q: data.qrels[q] for q in qids}
        queries = {q: fit_query(data.queries[q]) for q in qids}
        truncated = sum(len(" ".join(data.queries[q].split())) > MAX_QUERY_CHARS for q in qids)
        index = cfg.index or default_index_name(cfg.dataset)
        need_dense = any(SYSTEMS[s].mode != "bm25" for s in cfg.systems)

        store = self._make_store()
        cache = EmbeddingCache(cfg.cache_path or self.settings.cache_dir / "embeddings.sqlite")
        timed = TimedEmbedder(self._embedder or SentenceTransformerEmbedder(cfg.embedder))
        cached = CachedEmbedder(timed, cache)
        try:
            build = await asyncio.to_thread(self._build, store, cached, timed, index)
            q_before, hits_before, misses_before = timed.seconds, cached.hits, cached.misses
            if need_dense:
                # Encode every query once up front (or read it from the cache); the service's encode call
                # below then finds each vector in the cache.
                await asyncio.to_thread(cached.embed, list(queries.values()))
            qenc = QueryEncodingStats(
                seconds=round(timed.seconds - q_before, 3),
                encoded=cached.misses - misses_before,
                cache_hits=cached.hits - hits_before,
            )
            service = self._service(store, cached if need_dense else None)
            learnt = self._service(store, cached if need_dense else None, ltr=True) if cfg.ranker else None
            results: list[SystemResult] = []
            try:
                for name in cfg.systems:
                    if SYSTEMS[name].reference:  # the collection's own query text, not cut to the API's limit
                        full = {q: data.queries[q] for q in qids}
                        results.append(await self._run_reference(name, full, qrels))
                    elif SYSTEMS[name].ltr:
                        results.append(await self._run_system(learnt, name, index, queries, qrels))
                    else:
                        results.append(await self._run_system(service, name, index, queries, qrels))
            finally:
                service.retriever.close()
                if learnt is not None:
                    learnt.retriever.close()
        finally:
            if self._own_store:
                store.close()

        base = next((r for r in results if r.name == BASELINE and r.status == "ok"), None)
        if base is not None:
            for r in results:
                if r.status == "ok" and r.name != BASELINE:
                    r.delta_vs_bm25 = per_query_deltas(r.per_query["ndcg@10"], base.per_query["ndcg@10"])
                    r.delta_summary = summarize_deltas(r.delta_vs_bm25)
        return EvalResult(
            dataset=data.name,
            dataset_path=str(cfg.dataset),
            split=cfg.split,
            store=cfg.store,
            index=index,
            model=cfg.embedder.model,
            started_at=started_at,
            seconds=round(time.perf_counter() - started, 3),
            n_queries=len(qids),
            queries_without_qrels=data.queries_without_qrels,
            truncated_queries=truncated,
            retrieval=cfg.retrieval,
            rerank_top_n=cfg.rerank_top_n,
            build=build,
            query_encoding=qenc,
            systems=results,
        )

    def _build(self, store: IndexStore, cached: CachedEmbedder, timed: TimedEmbedder, index: str) -> BuildStats:
        cfg = self.config
        store.warm_up()
        if not cfg.rebuild and store.current_version(index) is not None:
            log.info("reusing index %s (%s)", index, store.current_version(index))
            return BuildStats(rebuilt=False, seconds=0.0, encode_seconds=0.0, max_chunks=cfg.max_chunks)
        icfg = IndexingConfig(
            embedder=cfg.embedder,
            max_chunks=cfg.max_chunks,
            chunk_overlap=cfg.chunk_overlap,
            batch_size=cfg.batch_size,
            format="beir",
            keep_versions=1,
            dead_letter_dir=self.settings.data_dir / "dead-letter",
            progress=False,
        )
        t_enc = timed.seconds
        report: IndexReport = IndexingPipeline(store, cached, icfg).build(cfg.dataset, index)
        log.info(
            "built %s: %d docs, %d chunks, %d encoded, %.1f s",
            index,
            report.indexed,
            report.chunks,
            report.encoded,
            report.seconds,
        )
        return BuildStats(
            rebuilt=True,
            seconds=report.seconds,
            encode_seconds=round(timed.seconds - t_enc, 3),
            read=report.read,
            indexed=report.indexed,
            chunks=report.chunks,
            encoded=report.encoded,
            cache_hits=report.cache_hits,
            max_chunks=cfg.max_chunks,
        )

    def _service(self, store: IndexStore, embedder: CachedEmbedder | None, ltr: bool = False) -> SearchService:
        """The service wired like `serving/local.py`: local models called in a thread; with `ltr`, the learnt
        ranker of `EvalConfig.ranker` re-orders the head as the ingress does."""
        cfg = self.config
        reranker = None
        # Offline we measure quality, not latency: a deadline long enough that the reranker always finishes.
        rerank_cfg = RerankerConfig(model=cfg.reranker, top_n=cfg.rerank_top_n, deadline_ms=3_600_000)
        if cfg.reranker:
            reranker = CrossEncoderReranker(rerank_cfg)
            reranker.warm_up()
        search_cfg = SearchConfig(retrieval=cfg.retrieval, default_index="docs", log_features=False)
        ranker = None
        if ltr and cfg.ranker is not None:
            ranker = LTRRanker(LTRConfig(model=str(cfg.ranker)))
            ranker.warm_up()
        return build_service(
            store, search_cfg, encoder=embedder, reranker=reranker, rerank_config=rerank_cfg, ltr=ranker
        )

    async def _run_system(
        self,
        service: SearchService | None,
        name: str,
        index: str,
        queries: Mapping[str, str],
        qrels: Mapping[str, Mapping[str, int]],
    ) -> SystemResult:
        spec = SYSTEMS[name]
        fusion = spec.fusion or (self.config.retrieval.fusion if spec.mode == "hybrid" else None)
        res = SystemResult(name=name, mode=spec.mode, fusion=fusion, rerank=spec.rerank, status="ok")
        if service is None:
            res.status, res.reason = "not run", NO_RANKER
            return res
        if spec.rerank and service.rerank is None:
            res.status, res.reason = "not run", NO_RERANKER
            return res
        if spec.mode != "bm25" and service.encode is None:
            res.status, res.reason = "not run", "no query encoder"
            return res
        sem = asyncio.Semaphore(self.config.concurrency)

        async def one(qid: str, text: str) -> tuple[str, list[str], bool]:
            async with sem:
                resp = await service.search(
                    SearchRequest(
                        query=text,
                        index=index,
                        limit=MAX_LIMIT,
                        mode=spec.mode,
                        fusion=spec.fusion,
                        rerank=spec.rerank,
                        highlight=False,
                    )
                )
            return qid, [r.id for r in resp.results], resp.reranked

        t = time.perf_counter()
        answers = await asyncio.gather(*(one(q, text) for q, text in queries.items()))
        res.search_seconds = round(time.perf_counter() - t, 3)
        res.reranked_queries = sum(rr for _, _, rr in answers)
        return _scored(res, {qid: ids for qid, ids, _ in answers}, qrels)

    async def _run_reference(
        self, name: str, queries: Mapping[str, str], qrels: Mapping[str, Mapping[str, int]]
    ) -> SystemResult:
        """bm25s over the corpus as read from corpus.jsonl, on the queries as the collection states them (the
        issue's figures); search time excludes building its index."""
        res = SystemResult(name=name, mode="bm25", fusion=None, rerank=False, status="ok")
        reference = await asyncio.to_thread(ReferenceBM25.from_beir, self.config.dataset)
        t = time.perf_counter()
        rankings = await asyncio.to_thread(reference.search, queries, MAX_LIMIT)
        res.search_seconds = round(time.perf_counter() - t, 3)
        return _scored(res, rankings, qrels)


def _scored(
    res: SystemResult, rankings: Mapping[str, list[str]], qrels: Mapping[str, Mapping[str, int]]
) -> SystemResult:
    """The system's metrics from its rankings (query id → ids, best first)."""
    res.ms_per_query = round(1000 * res.search_seconds / max(1, len(rankings)), 2)
    res.per_query = per_query_metrics(qrels, {qid: ranking_to_run(ids) for qid, ids in rankings.items()})
    res.metrics = mean_metrics(res.per_query)
    res.n_queries = len(rankings)
    log.info("%s: %s", res.name, {m: round(v, 4) for m, v in res.metrics.items()})
    return res


def run_evaluation(config: EvalConfig, store: IndexStore | None = None, settings: Settings | None = None) -> EvalResult:
    return Evaluator(config, store, settings).run()
