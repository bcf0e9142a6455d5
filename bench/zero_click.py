"""Zero-click relevance: Sift's first stage (BM25 ± RM3, dense ± Rocchio feedback, fused) against the plain
baseline (bm25s defaults + all-MiniLM-L6-v2, RRF k=60 or min-max linear α=0.5), per collection.

    .venv/bin/python bench/zero_click.py [--datasets scifact,cranfield,cisi] [--split test] [--store embedded]

Each collection's index is the one `sift eval` builds (`eval-<name>`, built here when missing; vectors come from
the shared embedding cache). Systems run through `HybridRetriever` with the query vectors already encoded, so the
latency column is retrieval alone (p50 over the queries, one at a time); nDCG@10 is over the split's judged
queries. The baseline's BM25 is bm25s itself (`training.reference`), its dense list the index's kNN (the same
MiniLM vectors: a document truncated to the model's window, as plain sentence-transformers does). Writes
bench/results/zero_click/<dataset>-<split>-<store>.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.embedder import CachedEmbedder, EmbeddingCache, SentenceTransformerEmbedder
from search.retrieval import HybridRetriever, RetrievalConfig
from search.settings import Settings
from search.stores.base import IndexStore
from search.stores.factory import make_store
from training.beir import load_beir
from training.eval_types import EvalConfig
from training.evaluation import default_index_name, run_evaluation
from training.metrics import fit_query, mean_metrics, per_query_metrics, ranking_to_run
from training.reference import ReferenceBM25, baseline_fuse

DATASETS = Path("/work/shared/datasets")
OUT = Path("bench/results/zero_click")


def systems(default: RetrievalConfig) -> dict[str, RetrievalConfig]:
    """The ablation: each stage with and without feedback, and the fused default."""
    off = default.model_copy(
        update={
            "rm3": default.rm3.model_copy(update={"enabled": False}),
            "dense_prf": default.dense_prf.model_copy(update={"enabled": False}),
        }
    )
    on = default.model_copy(
        update={
            "rm3": default.rm3.model_copy(update={"enabled": True}),
            "dense_prf": default.dense_prf.model_copy(update={"enabled": True}),
        }
    )
    return {
        "bm25": off.model_copy(update={"mode": "bm25"}),
        "bm25+rm3": on.model_copy(update={"mode": "bm25"}),
        "dense": off.model_copy(update={"mode": "dense"}),
        "dense+prf": on.model_copy(update={"mode": "dense"}),
        "hybrid-rrf (no feedback)": off.model_copy(update={"fusion": "rrf"}),
        "hybrid-linear (no feedback)": off.model_copy(update={"fusion": "linear", "normalization": "minmax"}),
        "hybrid (default)": default,
    }


def grid() -> dict[str, RetrievalConfig]:
    """The choices, run on SciFact's train queries only (`--grid --split train --datasets scifact`): fusion without
    feedback, then RM3 (Anserini's defaults) + Rocchio from each list or from the fused first pass, then small
    moves around those."""
    base = RetrievalConfig()
    rm3 = base.rm3.model_copy(update={"enabled": True})
    prf = base.dense_prf.model_copy(update={"enabled": True})
    out: dict[str, RetrievalConfig] = {}
    for src in ("none", "own", "fused"):
        for fusion, norm in (("rrf", "minmax"), ("linear", "minmax"), ("linear", "zscore")):
            upd: dict[str, object] = {"fusion": fusion, "normalization": norm}
            if src != "none":
                upd |= {"feedback_from": src, "rm3": rm3, "dense_prf": prf}
            out[f"{src} {fusion} {norm if fusion == 'linear' else ''}".strip()] = base.model_copy(update=upd)
    return out


def ensure_index(store_kind: str, dataset: Path, settings: Settings) -> str:
    index = default_index_name(dataset)
    store = make_store(store_kind, settings)  # type: ignore[arg-type]
    try:
        store.warm_up()
        missing = store.current_version(index) is None
    finally:
        store.close()
    if missing:
        run_evaluation(EvalConfig(dataset=dataset, store=store_kind, systems=["bm25"], rebuild=True))  # type: ignore[arg-type]
    return index


def run_dataset(name: str, split: str, store_kind: str, configs: dict[str, RetrievalConfig]) -> dict[str, object]:
    dataset = DATASETS / name
    settings = Settings()
    index = ensure_index(store_kind, dataset, settings)
    data = load_beir(dataset, split)
    qids = list(data.qrels)
    queries = {q: fit_query(data.queries[q]) for q in qids}
    embedder = CachedEmbedder(
        SentenceTransformerEmbedder(EvalConfig(dataset=dataset).embedder),
        EmbeddingCache(settings.cache_dir / "embeddings.sqlite"),
    )
    vectors = dict(zip(qids, embedder.embed([queries[q] for q in qids]), strict=True))
    store: IndexStore = make_store(store_kind, settings)  # type: ignore[arg-type]
    retriever = HybridRetriever(store, None, threads=2)
    rows: dict[str, dict[str, float]] = {}
    try:
        for label, cfg in configs.items():
            rankings: dict[str, list[str]] = {}
            took: list[float] = []
            for q in qids:
                t = time.perf_counter()
                hits = retriever.run(index, queries[q], 100, config=cfg, vector=vectors[q], with_docs=False)
                took.append(1000 * (time.perf_counter() - t))
                rankings[q] = [h.id for h in hits]
            rows[label] = _score(data.qrels, rankings) | {"p50_ms": round(statistics.median(took), 2)}
            print(label, rows[label], flush=True)
        reference = ReferenceBM25.from_beir(dataset)
        scored = reference.search_scored(dict(data.queries), 100)
        knn = {q: store.knn_search(index, [float(x) for x in vectors[q]], 100, with_docs=False) for q in qids}
        for fusion in ("rrf", "linear"):
            fused = {q: baseline_fuse(scored.get(q, []), knn[q], fusion) for q in qids}  # type: ignore[arg-type]
            rows[f"baseline {fusion}"] = _score(data.qrels, fused)
    finally:
        retriever.close()
        store.close()
    return {"dataset": name, "split": split, "store": store_kind, "queries": len(qids), "systems": rows}


def _score(qrels: dict[str, dict[str, int]], rankings: dict[str, list[str]]) -> dict[str, float]:
    per_query = per_query_metrics(qrels, {q: ranking_to_run(ids) for q, ids in rankings.items()})
    return {m: round(v, 4) for m, v in mean_metrics(per_query).items()}


def markdown(result: dict[str, object]) -> str:
    rows = result["systems"]
    assert isinstance(rows, dict)
    lines = [
        f"## {result['dataset']} ({result['split']}, {result['queries']} queries, {result['store']} store)",
        "",
        "| system | nDCG@10 | Recall@100 | p50 ms (retrieval) |",
        "|---|---|---|---|",
    ]
    for label, r in rows.items():
        p50 = r.get("p50_ms")
        lines.append(f"| {label} | {r['ndcg@10']:.4f} | {r['recall@100']:.4f} | {p50 if p50 is not None else '—'} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--datasets", default="scifact,cranfield,cisi")
    ap.add_argument("--split", default="test")
    ap.add_argument("--store", default="embedded", choices=["embedded", "es"])
    ap.add_argument("--config", help="JSON of a RetrievalConfig to run as the default (else RetrievalConfig()).")
    ap.add_argument("--grid", action="store_true", help="Run the choice grid instead of the ablation (train only).")
    ap.add_argument("--extra", help="JSON object: label → RetrievalConfig (partial JSON), run instead.")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    default = RetrievalConfig.model_validate_json(args.config) if args.config else RetrievalConfig()
    OUT.mkdir(parents=True, exist_ok=True)
    for name in [d.strip() for d in args.datasets.split(",") if d.strip()]:
        configs = grid() if args.grid else systems(default)
        if args.extra:
            extra = json.loads(args.extra)
            configs = {label: RetrievalConfig.model_validate(c) for label, c in extra.items()}
        result = run_dataset(name, args.split, args.store, configs)
        md = markdown(result)
        print(md, flush=True)
        stem = OUT / f"{name}-{args.split}-{args.store}{'-grid' if args.grid or args.extra else ''}"
        stem.with_suffix(".json").write_text(json.dumps(result, indent=2))
        stem.with_suffix(".md").write_text(md)


if __name__ == "__main__":
    main()
