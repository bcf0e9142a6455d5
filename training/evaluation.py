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
from search.service import MAX_LIMIT, MAX_QUERY_CHARS, SearchConfig, SearchRequest, SearchService
from search.settings import Settings
from search.stores.base import IndexStore
from search.stores.factory import make_store
from search.wiring import build_service
from training.beir import load_beir
from training.eval_types import (
    BASELINE,
    NO_ENCODER,
    NO_RANKER,
    NO_RERANKER,
    SYSTEMS,
    BuildStats,
    EvalConfig,
    EvalResult,
    QueryEncodingStats,
    SystemResult,
    SystemSpec,
)
from training.metrics import (
    fit_query,
    mean_metrics,
    per_query_deltas,
    per_query_metrics,
    ranking_to_run,
    summarize_deltas,
)
from training.reference import ReferenceBM25, baseline_fuse

__all__ = [
    "BASELINE", "NO_RANKER", "NO_RERANKER", "SYSTEMS", "BuildStats", "EvalConfig", "EvalResult", "Evaluator",
    "QueryEncodingStats", "SystemResult", "SystemSpec", "default_index_name", "default_out_dir", "run_evaluation",
]  # fmt: skip

log = logging.getLogger("sift.eval")


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
        self._reranker: CrossEncoderReranker | None = None

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
            trained = None
            if cfg.encoder and any(SYSTEMS[s].encoder for s in cfg.systems):
                trained = await asyncio.to_thread(self._trained_encoder, store, cache, index, list(queries.values()))
            full = {q: data.queries[q] for q in qids}  # the collection's own text, for the reference
            embedders = {False: cached if need_dense else None, True: trained}
            results = await self._run_systems(store, embedders, index, queries, full, qrels)
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

    def _build(
        self,
        store: IndexStore,
        cached: CachedEmbedder,
        timed: TimedEmbedder,
        index: str,
        embedder: EmbedderConfig | None = None,
    ) -> BuildStats:
        cfg = self.config
        store.warm_up()
        if not cfg.rebuild and store.current_version(index) is not None:
            log.info("reusing index %s (%s)", index, store.current_version(index))
            return BuildStats(rebuilt=False, seconds=0.0, encode_seconds=0.0, max_chunks=cfg.max_chunks)
        icfg = IndexingConfig(
            embedder=embedder or cfg.embedder,
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

    async def _run_systems(
        self,
        store: IndexStore,
        embedders: Mapping[bool, Embedder | None],
        index: str,
        queries: Mapping[str, str],
        full: Mapping[str, str],
        qrels: Mapping[str, Mapping[str, int]],
    ) -> list[SystemResult]:
        """Every configured system in order; one service per (trained encoder?, learnt ranker?) pair."""
        services: dict[tuple[bool, bool], SearchService] = {}
        results: list[SystemResult] = []
        try:
            for name in self.config.systems:
                spec = SYSTEMS[name]
                if spec.reference:  # the collection's own query text, not cut to the API's limit
                    knn = (store, index, embedders[False]) if spec.mode == "hybrid" else None
                    results.append(await self._run_reference(name, full, qrels, spec, knn))
                    continue
                if spec.optional:
                    cfg = self.config
                    given = {"encoder": bool(cfg.encoder), "rerank": bool(cfg.reranker), "ltr": cfg.ranker is not None}
                    if any(given.values()):
                        spec = spec.model_copy(update={k: getattr(spec, k) and v for k, v in given.items()})
                missing = self._missing(spec)
                key = (spec.encoder, spec.ltr)
                if not missing and key not in services:
                    services[key] = self._service(store, embedders[spec.encoder], ltr=spec.ltr)
                target = f"{index}-encoder" if spec.encoder else index
                svc = None if missing else services[key]
                results.append(await self._run_system(svc, name, target, queries, qrels, missing, spec))
        finally:
            for svc in services.values():
                svc.retriever.close()
        return results

    def _missing(self, spec: SystemSpec) -> str | None:
        """Why a system cannot run with this config (a model it needs was not given), else None."""
        cfg = self.config
        if spec.ltr and cfg.ranker is None:
            return NO_RANKER
        if spec.encoder and not cfg.encoder:
            return NO_ENCODER
        if spec.rerank and not cfg.reranker:
            return NO_RERANKER
        return None

    def _trained_encoder(self, store: IndexStore, cache: EmbeddingCache, index: str, queries: list[str]) -> Embedder:
        """The corpus indexed again with the trained encoder (`<index>-encoder`): a new encoder means a new index."""
        cfg = self.config
        enc_cfg = cfg.embedder.model_copy(update={"model": str(cfg.encoder)})
        timed = TimedEmbedder(SentenceTransformerEmbedder(enc_cfg))
        cached = CachedEmbedder(timed, cache)
        self._build(store, cached, timed, f"{index}-encoder", enc_cfg)
        cached.embed(queries)
        return cached

    def _service(self, store: IndexStore, embedder: Embedder | None, ltr: bool = False) -> SearchService:
        """The service wired like `serving/local.py`: local models called in a thread; with `ltr`, the learnt
        ranker of `EvalConfig.ranker` re-orders the head as the ingress does."""
        cfg = self.config
        # Offline we measure quality, not latency: a deadline long enough that the reranker always finishes.
        rerank_cfg = RerankerConfig(model=cfg.reranker, top_n=cfg.rerank_top_n, deadline_ms=3_600_000)
        if cfg.reranker and self._reranker is None:
            self._reranker = CrossEncoderReranker(rerank_cfg)
            self._reranker.warm_up()
        reranker = self._reranker
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
        missing: str | None = None,
        spec: SystemSpec | None = None,
    ) -> SystemResult:
        spec = spec or SYSTEMS[name]
        fusion = spec.fusion or (self.config.retrieval.fusion if spec.mode == "hybrid" else None)
        res = SystemResult(name=name, mode=spec.mode, fusion=fusion, rerank=spec.rerank, status="ok")
        if service is None or missing:
            res.status, res.reason = "not run", missing or "no service"
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
        self,
        name: str,
        queries: Mapping[str, str],
        qrels: Mapping[str, Mapping[str, int]],
        spec: SystemSpec | None = None,
        knn: tuple[IndexStore, str, Embedder | None] | None = None,
    ) -> SystemResult:
        """bm25s over the corpus as read from corpus.jsonl, on the queries as the collection states them (the
        issue's figures); search time excludes building its index. A hybrid reference is the plain baseline:
        bm25s's top 100 fused with the index's kNN top 100 of the query's MiniLM vector (`baseline_fuse`)."""
        spec = spec or SYSTEMS[name]
        res = SystemResult(name=name, mode=spec.mode, fusion=spec.fusion, rerank=False, status="ok")
        reference = await asyncio.to_thread(ReferenceBM25.from_beir, self.config.dataset)
        t = time.perf_counter()
        if spec.mode != "hybrid":
            rankings = await asyncio.to_thread(reference.search, queries, MAX_LIMIT)
        elif knn is None or knn[2] is None:
            res.status, res.reason = "not run", "no query encoder"
            return res
        else:
            rankings = await asyncio.to_thread(self._baseline, reference, queries, knn, spec.fusion or "rrf")
        res.search_seconds = round(time.perf_counter() - t, 3)
        return _scored(res, rankings, qrels)

    @staticmethod
    def _baseline(
        reference: ReferenceBM25,
        queries: Mapping[str, str],
        knn: tuple[IndexStore, str, Embedder | None],
        fusion: Literal["rrf", "linear"],
    ) -> dict[str, list[str]]:
        store, index, embedder = knn
        assert embedder is not None
        lexical = reference.search_scored(queries, MAX_LIMIT)
        qids = list(queries)
        vectors = embedder.embed([fit_query(queries[q]) for q in qids])
        return {
            q: baseline_fuse(
                lexical.get(q, []), store.knn_search(index, [float(x) for x in v], MAX_LIMIT, with_docs=False), fusion
            )
            for q, v in zip(qids, vectors, strict=True)
        }


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
