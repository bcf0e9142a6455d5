"""doc2query from the click log: does expanding documents with LM-written queries help BM25 on SciFact test?

Reuses `bench/lm_train.py`'s work folder (its BM25 index and simulated click log of SciFact's *train* queries):
(clicked document, query) pairs → `sift train lm --task doc2query`'s path (LoRA on Ray Train) → the expansion
stage of `sift index` (indexing/doc2query.py) over the whole corpus → BM25 Recall@100 and nDCG@10 on the test
split, plain against expanded. The test split is read once, for the reported figures.

The served filter is on (`Doc2QueryConfig.filter_model`, `min_relevance`: written queries whose cosine to their
document is under T are dropped, as Doc2Query-- does); `--filter-model none` keeps every query.
`--validate --min-relevance T1 T2 ...` chooses T without the test split: every figure is on SciFact's *train*
queries and qrels (the log the LM learnt from, so expansion itself looks better there than it is; the comparison
between thresholds is what it is for).

Run: `make bench-doc2query` (after `make bench-lm`), or
`.venv/bin/python bench/doc2query.py --work /tmp/lmb-scifact`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from indexing.doc2query import Doc2QueryConfig  # noqa: E402
from indexing.pipeline import IndexingConfig, IndexingPipeline  # noqa: E402
from models.registry import Registry  # noqa: E402
from search.stores.embedded import EmbeddedStore  # noqa: E402
from serving.config import AppConfig  # noqa: E402
from training.beir import load_beir  # noqa: E402
from training.lm_data import LMDataConfig  # noqa: E402
from training.lm_run import doc_fetch, lm_examples, run_lm_training  # noqa: E402
from training.lm_train import LMTrainConfig  # noqa: E402
from training.metrics import mean_metrics, per_query_metrics, ranking_to_run  # noqa: E402

INDEX = "lm-bench"  # bench/lm_train.py's BM25 index of the corpus


def bm25_figures(store: EmbeddedStore, index: str, queries: dict[str, str], qrels: dict) -> dict[str, float]:
    run = {q: ranking_to_run([h.id for h in store.bm25_search(index, queries[q], 100, with_docs=False)]) for q in qrels}
    return {k: round(v, 4) for k, v in mean_metrics(per_query_metrics(qrels, run, ("ndcg@10", "recall@100"))).items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", type=Path, default=REPO.parent / "shared" / "datasets" / "scifact")
    ap.add_argument("--work", type=Path, required=True, help="bench/lm_train.py's work folder.")
    ap.add_argument("--max-steps", type=int, default=150)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--doc-chars", type=int, default=400)
    ap.add_argument("--num-queries", type=int, default=3)
    ap.add_argument("--doc-part", choices=("head", "title_tail"), default="head",
                    help="What of each document the LM sees (trained and indexed alike).")  # fmt: skip
    ap.add_argument("--dtype", choices=("auto", "float32", "bfloat16"), default="auto",
                    help="The LM's weights while writing queries (bfloat16: faster on AVX512-BF16 CPUs).")  # fmt: skip
    ap.add_argument("--threads", type=int, default=2)
    served = Doc2QueryConfig(model="-")
    ap.add_argument("--filter-model", default=served.filter_model,
                    help="Embedder scoring each query against its document; `none`: keep all.")  # fmt: skip
    ap.add_argument("--min-relevance", type=float, nargs="+", default=[served.min_relevance],
                    help="Cosine under which a query is dropped (several with --validate).")  # fmt: skip
    ap.add_argument("--validate", action="store_true", help="Train queries and qrels only; never reads test.")
    args = ap.parse_args()
    if str(args.filter_model).lower() == "none":
        args.filter_model = None
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    from search.settings import Settings
    from serving.local import local_backend  # the logs bench/lm_train.py left, read as `sift train lm` reads them

    cfg = AppConfig.model_validate({"data_dir": str(args.work), "search": {"default_index": INDEX,
                                    "retrieval": {"mode": "bm25"}}, "reranker": {"model": None},
                                    "suggest": {"enabled": False}, "summarizer": None})  # fmt: skip
    backend = local_backend(cfg, Settings())
    assert backend.events is not None
    imps = [e for e in backend.suggest.query_log.read() if e.type == "search"]
    clicks = list(backend.events.clicks.read())
    backend.suggest.close()
    backend.store.close()
    if not imps:
        raise SystemExit(f"no query log in {args.work}: run bench/lm_train.py --work {args.work} first")
    store = EmbeddedStore(args.work / "indices")
    data_cfg = LMDataConfig(task="doc2query", doc_chars=args.doc_chars, doc_part=args.doc_part, heldout_fraction=0.1)
    data = lm_examples(imps, clicks, data_cfg, cfg.suggest, doc_fetch(store, INDEX, data_cfg))
    print(f"doc2query examples: {json.dumps(data.stats)}")
    part = "" if args.doc_part == "head" else f"-{args.doc_part}"  # a model per prompt shape
    registry = Registry(args.work / f"registry-d2q{part}")
    versions = registry.versions("lm")
    if versions:
        version, metrics = versions[-1].version, versions[-1].metrics
    else:
        tcfg = LMTrainConfig(max_steps=args.max_steps, batch_size=args.batch_size, threads_per_worker=args.threads,
                             storage_path=str(args.work / f"d2q-train{part}"), checkpoint_every=100)  # fmt: skip
        trained = run_lm_training(data, tcfg, registry)
        version, metrics = trained.version, trained.metrics
    print(f"trained {version}: " + ", ".join(f"{k} {v:.4g}" for k, v in sorted(metrics.items())
                                               if not k.startswith("examples_")))  # fmt: skip
    split = "train" if args.validate else "test"
    test = load_beir(args.dataset, split)
    if not args.validate and len(args.min_relevance) > 1:
        raise SystemExit("several --min-relevance values only with --validate: the test split is read once")
    plain = bm25_figures(store, INDEX, test.queries, test.qrels)
    base = Doc2QueryConfig(model=str(registry.path("lm", version)), num_queries=args.num_queries, filter_model=None,
                           doc_chars=args.doc_chars, doc_part=args.doc_part, dtype=args.dtype,
                           cache=args.work / "doc2query.sqlite")  # fmt: skip
    runs = [("all queries", base)] if args.filter_model is None or args.validate else []
    if args.filter_model is not None:
        runs += [(f"cosine >= {t}", base.model_copy(update={"filter_model": args.filter_model, "min_relevance": t}))
                 for t in args.min_relevance]  # fmt: skip
    ids = [json.loads(line)["_id"] for line in (args.dataset / "corpus.jsonl").open()]
    rows: dict[str, dict[str, float]] = {}
    for name, d2q in runs:
        t = time.perf_counter()
        icfg = IndexingConfig(embed=False, progress=True, dead_letter_dir=args.work / "dead", format="beir",
                              doc2query=d2q)  # fmt: skip
        report = IndexingPipeline(store, None, icfg).build(args.dataset, INDEX + "-d2q")
        kept = sum(len(d.fields.get("doc2query", [])) for d in store.get_many(INDEX + "-d2q", ids).values())
        rows[name] = {**bm25_figures(store, INDEX + "-d2q", test.queries, test.qrels), "queries_kept": kept,
                      "build_s": round(time.perf_counter() - t, 1)}  # fmt: skip
        print(f"{name}: {report.indexed} documents, {json.dumps(rows[name])}", flush=True)
    sample = store.get_many(INDEX + "-d2q", [next(iter(test.qrels[q])) for q in list(test.qrels)[:3]])
    store.close()
    print(f"| BM25 on SciFact {split} | nDCG@10 | Recall@100 | queries kept |\n|---|---|---|---|")
    print(f"| plain | {plain['ndcg@10']} | {plain['recall@100']} | 0 |")
    for name, r in rows.items():
        label = f"+ doc2query ({args.num_queries}/doc, {args.doc_part} {args.doc_chars} chars, {name})"
        print(f"| {label} | {r['ndcg@10']} | {r['recall@100']} | {r['queries_kept']} |")
    for d in sample.values():
        print(f"  {d.id}: {d.title[:60]!r} → {d.fields.get('doc2query')}")
    out = REPO / "bench" / "results" / f"doc2query{part}{'-validate' if args.validate else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"version": version, "training": metrics, "examples": data.stats, "split": split,
                               "num_queries": args.num_queries, "doc_part": args.doc_part,
                               "doc_chars": args.doc_chars, "dtype": args.dtype, "filter_model": args.filter_model,
                               "plain": plain,
                               "expanded": rows}, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
