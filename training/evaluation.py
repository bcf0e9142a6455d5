"""Offline evaluation on BEIR-layout test collections, through the same `SearchService` the API serves.

Why it lives in `search/`: a ranking change is only real if it shows on collections that others judged, and
only if the measured path is the served path. So the index is built by `IndexingPipeline`, every system
runs as a `SearchRequest` through `SearchService.search` (retriever, fusion, reranker and all), and only
the scoring of the returned rankings is done here, with ranx (trec_eval's definitions: nDCG with linear
gains, MRR, recall). Embeddings of documents and queries go through the persistent `EmbeddingCache`, so a
second run encodes nothing; encoding time is measured apart from search time.
"""

from __future__ import annotations

import asyncio
import json
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
from ranking.rerank import CrossEncoderReranker, RerankerConfig
from search.retrieval import RetrievalConfig
from search.service import MAX_LIMIT, MAX_QUERY_CHARS, SearchConfig, SearchRequest, SearchService
from search.settings import Settings
from search.stores.base import IndexStore
from search.wiring import build_service

log = logging.getLogger("sift.eval")

METRICS: tuple[str, ...] = ("ndcg@10", "mrr@10", "recall@100")
METRIC_LABELS = {"ndcg@10": "nDCG@10", "mrr@10": "MRR@10", "recall@100": "Recall@100"}
BASELINE = "bm25"
NO_RERANKER = "no cross-encoder configured"


class SystemSpec(BaseModel):
    """How one evaluated system maps onto a search request."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: Literal["bm25", "dense", "hybrid"]
    fusion: Literal["rrf", "linear"] | None = Field(default=None, description="None: the RetrievalConfig default.")
    rerank: bool = False


SYSTEMS: dict[str, SystemSpec] = {
    "bm25": SystemSpec(mode="bm25"),
    "dense": SystemSpec(mode="dense"),
    "hybrid-rrf": SystemSpec(mode="hybrid", fusion="rrf"),
    "hybrid-linear": SystemSpec(mode="hybrid", fusion="linear"),
    "hybrid+rerank": SystemSpec(mode="hybrid", rerank=True),
}


# -- data ---------------------------------------------------------------------------------------------------
class BeirData(BaseModel):
    """Queries and graded judgments of one split; only queries with at least one relevant document."""

    name: str
    root: Path
    split: str
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]] = Field(description="query id → doc id → grade (> 0 only).")
    queries_without_qrels: int = Field(default=0, description="Queries in queries.jsonl left out: nothing relevant.")
    judged_missing_query: int = Field(default=0, description="Judged query ids absent from queries.jsonl.")


def read_qrels(path: Path) -> dict[str, dict[str, int]]:
    """BEIR qrels TSV (`query-id corpus-id score`, header optional), all grades kept as written."""
    out: dict[str, dict[str, int]] = {}
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            parts = line.rstrip("\r\n").split("\t")
            if not line.strip():
                continue
            if n == 1 and parts[0].strip().lower() in ("query-id", "query_id", "qid"):
                continue
            if len(parts) < 3:
                raise ValueError(f"{path}:{n}: expected 'query-id<TAB>corpus-id<TAB>score', got {line!r}")
            qid, did, score = parts[0].strip(), parts[1].strip(), parts[2].strip()
            out.setdefault(qid, {})[did] = int(float(score))
    return out


def relevant_only(qrels: Mapping[str, Mapping[str, int]]) -> dict[str, dict[str, int]]:
    """BEIR convention: a grade > 0 is relevant; 0 and negative grades are dropped (as is a query left empty)."""
    out = {q: {d: g for d, g in docs.items() if g > 0} for q, docs in qrels.items()}
    return {q: docs for q, docs in out.items() if docs}


def load_beir(root: Path, split: str = "test") -> BeirData:
    """A BEIR folder: corpus.jsonl (indexed elsewhere), queries.jsonl and qrels/<split>.tsv."""
    qrels_path = root / "qrels" / f"{split}.tsv"
    queries_path = root / "queries.jsonl"
    for p in (root / "corpus.jsonl", queries_path, qrels_path):
        if not p.is_file():
            raise FileNotFoundError(f"{p} is missing: {root} is not a BEIR folder for split {split!r}")
    queries: dict[str, str] = {}
    with open(queries_path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                rec = json.loads(line)
                queries[str(rec["_id"])] = str(rec.get("text", ""))
    qrels = relevant_only(read_qrels(qrels_path))
    missing = [q for q in qrels if q not in queries]
    qrels = {q: d for q, d in qrels.items() if q in queries and queries[q].strip()}
    return BeirData(
        name=root.resolve().name,
        root=root,
        split=split,
        queries={q: queries[q] for q in qrels},
        qrels=qrels,
        queries_without_qrels=len([q for q in queries if q not in qrels]),
        judged_missing_query=len(missing),
    )


def fit_query(text: str, limit: int = MAX_QUERY_CHARS) -> str:
    """The API takes at most `limit` characters: longer queries are cut at a word boundary (and counted)."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text[:limit]
    space = cut.rfind(" ")
    return cut[:space] if space > limit // 2 else cut


# -- metrics ------------------------------------------------------------------------------------------------
def ranking_to_run(ranked_ids: Sequence[str]) -> dict[str, float]:
    """Scores that reproduce the service's order exactly (ranx sorts by score; ties would reorder)."""
    n = len(ranked_ids)
    return {d: float(n - i) for i, d in enumerate(ranked_ids)}


def per_query_metrics(
    qrels: Mapping[str, Mapping[str, int]],
    run: Mapping[str, Mapping[str, float]],
    metrics: Sequence[str] = METRICS,
) -> dict[str, dict[str, float]]:
    """metric → query id → value, for every judged query (a query missing from the run scores 0)."""
    from ranx import Qrels, Run, evaluate

    rel = relevant_only(qrels)
    if not rel:
        raise ValueError("no query has a relevant document (grade > 0)")
    r = Run({q: dict(docs) for q, docs in run.items() if q in rel and docs})
    q = Qrels({k: dict(v) for k, v in rel.items()})
    evaluate(q, r, list(metrics), return_mean=False, make_comparable=True, threads=1)
    return {m: {qid: float(r.scores[m].get(qid, 0.0)) for qid in rel} for m in metrics}


def mean_metrics(per_query: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    return {m: float(np.mean(list(v.values()))) if v else 0.0 for m, v in per_query.items()}


def per_query_deltas(system: Mapping[str, float], baseline: Mapping[str, float]) -> dict[str, float]:
    """system − baseline per query, over the queries both have."""
    return {q: system[q] - baseline[q] for q in system if q in baseline}


class DeltaSummary(BaseModel):
    mean: float
    wins: int = Field(description="Queries where the system beats the baseline by more than 1e-9.")
    losses: int
    ties: int


def summarize_deltas(deltas: Mapping[str, float], eps: float = 1e-9) -> DeltaSummary:
    vals = list(deltas.values())
    return DeltaSummary(
        mean=float(np.mean(vals)) if vals else 0.0,
        wins=sum(v > eps for v in vals),
        losses=sum(v < -eps for v in vals),
        ties=sum(abs(v) <= eps for v in vals),
    )


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
            from search.stores.factory import make_store

            self._store = make_store(self.config.store, self.settings, data_dir=self.config.data_dir)
        return self._store

    def run(self) -> EvalResult:
        return asyncio.run(self.arun())

    async def arun(self) -> EvalResult:
        cfg = self.config
        started = time.perf_counter()
        started_at = datetime.now(UTC).isoformat(timespec="seconds")
        data = load_beir(cfg.dataset, cfg.split)
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
            results: list[SystemResult] = []
            try:
                for name in cfg.systems:
                    results.append(await self._run_system(service, name, index, queries, qrels))
            finally:
                service.retriever.close()
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

    def _service(self, store: IndexStore, embedder: CachedEmbedder | None) -> SearchService:
        """The service wired like `serving/local.py`: local models called in a thread."""
        cfg = self.config
        reranker = None
        # Offline we measure quality, not latency: a deadline long enough that the reranker always finishes.
        rerank_cfg = RerankerConfig(model=cfg.reranker, top_n=cfg.rerank_top_n, deadline_ms=3_600_000)
        if cfg.reranker:
            reranker = CrossEncoderReranker(rerank_cfg)
            reranker.warm_up()
        search_cfg = SearchConfig(retrieval=cfg.retrieval, default_index="docs")
        return build_service(store, search_cfg, encoder=embedder, reranker=reranker, rerank_config=rerank_cfg)

    async def _run_system(
        self,
        service: SearchService,
        name: str,
        index: str,
        queries: Mapping[str, str],
        qrels: Mapping[str, Mapping[str, int]],
    ) -> SystemResult:
        spec = SYSTEMS[name]
        fusion = spec.fusion or (self.config.retrieval.fusion if spec.mode == "hybrid" else None)
        res = SystemResult(name=name, mode=spec.mode, fusion=fusion, rerank=spec.rerank, status="ok")
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
        res.ms_per_query = round(1000 * res.search_seconds / max(1, len(queries)), 2)
        res.reranked_queries = sum(rr for _, _, rr in answers)
        run = {qid: ranking_to_run(ids) for qid, ids, _ in answers}
        res.per_query = per_query_metrics(qrels, run)
        res.metrics = mean_metrics(res.per_query)
        res.n_queries = len(queries)
        log.info("%s: %s", name, {m: round(v, 4) for m, v in res.metrics.items()})
        return res


def run_evaluation(config: EvalConfig, store: IndexStore | None = None, settings: Settings | None = None) -> EvalResult:
    return Evaluator(config, store, settings).run()


# -- outputs ------------------------------------------------------------------------------------------------
def markdown_table(result: EvalResult) -> str:
    """One row per system: the three metrics, nDCG@10 change vs BM25 (mean, wins/losses), search speed."""
    head = (
        "| system | " + " | ".join(METRIC_LABELS[m] for m in METRICS) + " | ΔnDCG@10 vs BM25 | W / L / T | ms/query |"
    )
    lines = [head, "|" + "---|" * (len(METRICS) + 4)]
    for s in result.systems:
        if s.status != "ok":
            lines.append(f"| {s.name} | " + " | ".join("—" for _ in METRICS) + f" | not run: {s.reason} | | |")
            continue
        d = s.delta_summary
        delta = f"{d.mean:+.4f}" if d else "—"
        wlt = f"{d.wins} / {d.losses} / {d.ties}" if d else "—"
        vals = " | ".join(f"{s.metrics[m]:.4f}" for m in METRICS)
        lines.append(f"| {s.name} | {vals} | {delta} | {wlt} | {s.ms_per_query:.1f} |")
    return "\n".join(lines)


def render_markdown(result: EvalResult) -> str:
    b, q = result.build, result.query_encoding
    r = result.retrieval
    parts = [
        f"# {result.dataset} ({result.split}) on {result.store}",
        "",
        f"{result.n_queries} judged queries ({result.queries_without_qrels} without relevant documents skipped"
        + (f"; {result.truncated_queries} cut to {MAX_QUERY_CHARS} characters" if result.truncated_queries else "")
        + f"), model `{result.model}`, index `{result.index}`, RRF k={r.rrf_k}, linear α={r.alpha}, "
        f"depth {r.depth}. Ranking via `SearchService.search` (limit {MAX_LIMIT}, no highlights).",
        "",
        markdown_table(result),
        "",
        "W / L / T: queries where nDCG@10 is above / below / equal to BM25's.",
        "",
        "## Timings",
        "",
        f"- index build: {b.seconds:.1f} s ({b.indexed} docs, {b.chunks} chunks, max_chunks={b.max_chunks}; "
        f"{b.encoded} chunks encoded in {b.encode_seconds:.1f} s, {b.cache_hits} from the cache)"
        if b.rebuilt
        else "- index build: reused the existing index",
        f"- query encoding: {q.seconds:.1f} s ({q.encoded} encoded, {q.cache_hits} from the cache)",
        *(
            f"- {s.name}: {s.search_seconds:.1f} s searching ({s.ms_per_query:.1f} ms/query)"
            for s in result.systems
            if s.status == "ok"
        ),
        f"- total: {result.seconds:.1f} s",
        "",
        "![metrics](metrics.png)",
        "",
        "![per-query nDCG@10 deltas vs BM25](deltas.png)",
        "",
    ]
    return "\n".join(parts)


def plot_metrics(result: EvalResult, path: Path) -> None:
    """Grouped bars: one group per metric, one bar per system."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [s for s in result.systems if s.status == "ok"]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    width = 0.8 / max(1, len(ok))
    x = np.arange(len(METRICS))
    for i, s in enumerate(ok):
        vals = [s.metrics[m] for m in METRICS]
        bars = ax.bar(x + (i - (len(ok) - 1) / 2) * width, vals, width, label=s.name)
        ax.bar_label(bars, fmt="%.3f", fontsize=7, rotation=90, padding=2)
    ax.set_xticks(x, [METRIC_LABELS[m] for m in METRICS])
    ax.set_ylim(0, 1.1)
    ax.set_ylabel("score")
    ax.set_title(f"{result.dataset} ({result.store}, {result.n_queries} queries)")
    ax.legend(fontsize=8, loc="upper left", ncols=min(3, max(1, len(ok))))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_deltas(result: EvalResult, path: Path) -> None:
    """Histogram of per-query nDCG@10 minus BM25's, one panel per system."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    systems = [s for s in result.systems if s.status == "ok" and s.delta_vs_bm25]
    n = max(1, len(systems))
    fig, axes = plt.subplots(1, n, figsize=(3.6 * n, 3.4), sharey=True, squeeze=False)
    bins = np.linspace(-1.025, 1.025, 42)  # width 0.05, centred on 0 so ties sit on the axis line
    for ax, s in zip(axes[0], systems, strict=False):
        vals = list(s.delta_vs_bm25.values())
        ax.hist(vals, bins=bins, color="tab:blue", edgecolor="white")
        ax.axvline(0, color="black", linewidth=0.8)
        d = s.delta_summary
        ax.set_title(f"{s.name}\nmean {d.mean:+.3f}, W/L {d.wins}/{d.losses}" if d else s.name, fontsize=9)
        ax.set_xlabel("ΔnDCG@10 vs BM25")
    if not systems:
        axes[0][0].text(0.5, 0.5, "no system to compare with BM25", ha="center", va="center")
    axes[0][0].set_ylabel("queries")
    fig.suptitle(f"{result.dataset} ({result.store})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_outputs(result: EvalResult, out: Path) -> dict[str, Path]:
    """results.json, results.md, metrics.png and deltas.png under `out`."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": out / "results.json",
        "md": out / "results.md",
        "metrics_png": out / "metrics.png",
        "deltas_png": out / "deltas.png",
    }
    paths["json"].write_text(result.model_dump_json(indent=2))
    paths["md"].write_text(render_markdown(result))
    plot_metrics(result, paths["metrics_png"])
    plot_deltas(result, paths["deltas_png"])
    return paths


def load_result(path: Path) -> EvalResult:
    return EvalResult.model_validate_json(Path(path).read_text())
