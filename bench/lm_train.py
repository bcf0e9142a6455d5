"""Fine-tuning the suggester's causal LM on a click log: does it complete queries better than the stock LM?

1. A BM25 index of the collection; simulated users search the log queries (SciFact: its train split; a
   collection without one: the half of its test queries whose id hashes to 0) and click from those queries'
   qrels only (`training.click_simulator`, in-process), so the logs are the ones production would leave.
2. `sift train lm`'s path: suggest examples from the logs (k-sessions and PII rules), a time split of the log
   for the held-out loss, LoRA on Ray Train (one CPU worker), registered as an `lm` version.
3. Held-out queries (SciFact: test claims without a near-twin in train; else the other half) are typed up to
   random cuts; QAC MRR@10, partial-match MRR@10 and success@5 on seen and unseen prefixes for the trie, the
   stock LM, the tuned LM and both blends (training/qac_eval.py).
4. `sift eval-suggest`'s measurement (first 1-3 words of each test query; nDCG@10 of searching the top
   suggestion, coverage) for the stock blend and the tuned blend, on all test queries and without near-twins.

Run: `make bench-lm` (SciFact) or `.venv/bin/python bench/lm_train.py --dataset ../shared/datasets/cranfield`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.ltr import half  # noqa: E402  (the same hash halves as the LTR bench)
from models.registry import Registry  # noqa: E402
from search.settings import Settings  # noqa: E402
from search.suggest.lm_completer import LMCompleterConfig  # noqa: E402
from search.suggest.schemas import SuggestConfig  # noqa: E402
from serving.config import AppConfig  # noqa: E402
from serving.local import local_backend  # noqa: E402
from sift.clicks_cli import _backend_search  # noqa: E402
from training.beir import BeirData, load_beir  # noqa: E402
from training.click_simulator import InProcessClient, SimulatorConfig, simulate  # noqa: E402
from training.click_users import UserConfig  # noqa: E402
from training.lm_data import LMDataConfig  # noqa: E402
from training.lm_run import lm_examples, run_lm_training  # noqa: E402
from training.lm_train import LMTrainConfig  # noqa: E402
from training.qac_eval import near_twins, qac_markdown  # noqa: E402
from training.suggest_eval import build_index, related_success, run_eval_suggest, run_qac  # noqa: E402

INDEX = "lm-bench"


def simulated_logs(work: Path, log: BeirData, sessions: int, seed: int) -> tuple[list[Any], list[Any], AppConfig]:
    """Impressions and clicks of `sessions` simulated searches of the log queries (cached in `work`)."""
    cfg = AppConfig.model_validate(
        {
            "data_dir": str(work),
            "search": {"default_index": INDEX, "retrieval": {"mode": "bm25"}},
            "reranker": {"model": None},
            "suggest": {"enabled": False},
            "summarizer": None,
        }
    )
    backend = local_backend(cfg, Settings())
    events = backend.events
    assert events is not None, "the bench's app records click events"
    try:
        if not (work / ".simulated").exists():
            user = UserConfig(kind="pbm", eta=0.8, attractiveness=(0.05, 0.9))
            sim = SimulatorConfig(sessions=sessions, seed=seed, user=user, concurrency=4, progress=True)

            async def go() -> Any:
                client = InProcessClient(_backend_search(backend), events)
                try:
                    return await simulate(client, log.queries, log.qrels, sim)
                finally:
                    await client.aclose()

            report = asyncio.run(go())
            print(f"simulated {report.sessions} sessions, {report.clicks} clicks in {report.seconds:.0f} s")
            (work / ".simulated").touch()
        imps = [e for e in backend.suggest.query_log.read() if e.type == "search"]
        clicks = list(events.clicks.read())
    finally:
        backend.suggest.close()
        backend.store.close()
    return imps, clicks, cfg


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", type=Path, default=REPO.parent / "shared" / "datasets" / "scifact")
    ap.add_argument("--sessions-per-query", type=int, default=8, help="Simulated searches per log query.")
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--max-steps", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2, help="Torch threads of the Ray Train worker.")
    ap.add_argument("--cuts", type=int, default=2, help="Random prefixes per held-out query.")
    ap.add_argument("--lm-batch", type=int, default=16, help="Prefixes per generate call.")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--heldout-max", type=int, default=300, help="Held-out examples the loss is measured on.")
    ap.add_argument("--limit", type=int, default=None, help="Only the first N test queries (all figures).")
    ap.add_argument("--work", type=Path, default=None, help="Reuse a work folder (index, logs, model, LM caches).")
    ap.add_argument("--skip-related", action="store_true",
                    help="No related figures (the LM's top rewrite; the suggester's checks do not apply).")  # fmt: skip
    ap.add_argument("--coverage-of", choices=("candidate", "added"), default=SuggestConfig().term_coverage_of,
                    help="The result check's `suggest.term_coverage_of` (default: the served default).")  # fmt: skip
    ap.add_argument("--min-shared", type=int, default=SuggestConfig().lm_min_shared_results,
                    help="The drift guard's `suggest.lm_min_shared_results`.")  # fmt: skip
    ap.add_argument(
        "--validate",
        action="store_true",
        help="Choose settings without the test split: the log queries are halved again, the LM learns from one "
        "half's log and every figure is measured on the other half (with its qrels).",
    )
    ap.add_argument(
        "--few-shot",
        action="store_true",
        help="Learn with the suggester's few-shot header in the prompt (training starts from the stock LM's "
        "behaviour; ~3x the tokens per example) instead of an empty one.",
    )
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    work = args.work or Path(tempfile.mkdtemp(prefix="sift-lm-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    has_train = (args.dataset / "qrels" / "train.tsv").exists()
    if has_train:
        log = load_beir(args.dataset, "train")
        test = log if args.validate else load_beir(args.dataset, "test")  # validation never loads the test split
    else:
        full = load_beir(args.dataset, "test")
        log, test = half(full, 0), half(full, 1)
    if args.validate:  # the log's queries, halved again: one half's log is learnt, the other half is scored
        log, test = half(log, 0, salt="validate:"), half(log, 1, salt="validate:")
    if args.limit:  # the first N judged test queries: every figure below is on the same ones
        test = test.model_copy(update={"qrels": {q: test.qrels[q] for q in list(test.qrels)[: args.limit]}})
    twins = near_twins({q: t for q, t in test.queries.items() if q in test.qrels}, log.queries.values())
    print(f"{args.dataset.name}: {len(log.queries)} log queries, {len(test.qrels)} test queries, {len(twins)} "
          f"near-twins of a log query (word Jaccard >= 0.5) left out of QAC; load {os.getloadavg()[0]:.2f}; "
          f"work {work}")  # fmt: skip
    store = build_index(args.dataset, work, INDEX, rebuild=False)

    t = time.perf_counter()
    imps, clicks, cfg = simulated_logs(work, log, args.sessions_per_query * len(log.queries), args.seed)
    data_cfg = LMDataConfig(task="suggest", heldout_fraction=0.1, prompt_examples=None if args.few_shot else [])
    data = lm_examples(imps, clicks, data_cfg, cfg.suggest)
    print(f"log: {len(imps)} searches, {len(clicks)} click records ({time.perf_counter() - t:.0f} s); "
          f"examples: {json.dumps(data.stats)}")  # fmt: skip
    registry = Registry(work / "registry")
    versions = registry.versions("lm")
    if versions:
        version, metrics = versions[-1].version, versions[-1].metrics
    else:
        tcfg = LMTrainConfig(
            epochs=args.epochs,
            max_steps=args.max_steps,
            batch_size=args.batch_size,
            threads_per_worker=args.threads,
            cpus_per_worker=1.0,
            checkpoint_every=200,
            heldout_max=args.heldout_max,
            storage_path=str(work / "lm-train"),
            seed=args.seed,
        )
        trained = run_lm_training(data, tcfg, registry)
        version, metrics = trained.version, trained.metrics
    print(f"trained {version}: " + ", ".join(f"{k} {v:.4g}" for k, v in sorted(metrics.items())
                                               if not k.startswith("examples_")))  # fmt: skip

    evaluate(args, work, store, log, test, twins, version, metrics)


def evaluate(
    args: argparse.Namespace,
    work: Path,
    store: Any,
    log: BeirData,
    test: BeirData,
    twins: dict[str, float],
    version: str,
    metrics: dict[str, float],
) -> None:
    """QAC, related searches and the blend's nDCG@10/coverage, stock LM against the tuned version."""
    registry = Registry(work / "registry")
    stock = LMCompleterConfig()
    tuned = stock.model_copy(
        update={"lm": stock.lm.model_copy(update={"model": str(registry.resolve(f"registry:lm@{version}"))})}
    )
    split = (log.queries, test.queries, test.qrels)
    table: dict[str, Any] = {}
    for label, lm_cfg in (("stock", stock), ("tuned", tuned)):
        qac = run_qac(args.dataset, work, lm_cfg, index=INDEX, cuts=args.cuts, batch=args.lm_batch, split=split,
                      lm_cache=work / f"qac-{label}.json", seed=args.seed, coverage_of=args.coverage_of,
                      min_shared=args.min_shared)  # fmt: skip
        table.setdefault("trie", qac["table"]["log"])
        table[f"lm {label}"], table[f"blend {label}"] = qac["table"]["lm"], qac["table"]["blend"]
        print(f"QAC {label}: {qac['prefixes']} prefixes of {qac['held_out_queries']} held-out queries "
              f"({qac['seen']} seen), LM {qac['lm_seconds']} s")  # fmt: skip
    print(qac_markdown(table))
    related: dict[str, Any] = {}
    held = {q: t for q, t in test.queries.items() if q not in twins}
    for label, lm_cfg in () if args.skip_related else (("stock", stock), ("tuned", tuned)):
        related[label] = related_success(store, INDEX, lm_cfg, held, test.qrels, batch=args.lm_batch)
        print(f"related searches, {label} LM: {json.dumps(related[label])}")
    store.close()

    blend: dict[str, Any] = {}
    for label, lm_cfg in (("stock", stock), ("tuned", tuned)):
        for subset, skip in (("all", set()), ("no-twins", set(twins))):
            rep = run_eval_suggest(args.dataset, work, lm_cfg, index=INDEX, split=split, skip=skip,
                                   lm_cache=work / f"eval-{label}.json", batch=args.lm_batch,
                                   coverage_of=args.coverage_of, min_shared=args.min_shared)  # fmt: skip
            row = rep["systems"]["blend"]["all"]
            blend[f"{label} {subset}"] = {"coverage": row["coverage"], "ndcg10": row["ndcg10_top_suggestion"],
                                          "bare": row["ndcg10_bare_prefix"],
                                          "by_source": rep["blend_by_source"]}  # fmt: skip
    print("\n| blend | test queries | coverage | nDCG@10 top suggestion | nDCG@10 bare prefix |\n|---|---|---|---|---|")
    for k, r in blend.items():
        print(f"| {k.split()[0]} | {k.split()[1]} | {r['coverage']} | {r['ndcg10']} | {r['bare']} |")
    for k, r in blend.items():  # where the blend's top suggestion came from, against the bare prefix
        print(f"{k}: " + "; ".join(f"{src} {v['prefixes']} prefixes {v['ndcg10_top_suggestion']} vs bare "
                                   f"{v['ndcg10_bare_prefix']}" for src, v in r["by_source"].items()))  # fmt: skip
    out = REPO / "bench" / "results" / f"lm_train-{args.dataset.name}{'-validate' if args.validate else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    result = {"version": version, "training": metrics, "near_twins": len(twins), "qac": table, "blend": blend,
              "related": related, "term_coverage_of": args.coverage_of,
              "lm_min_shared_results": args.min_shared}  # fmt: skip
    out.write_text(json.dumps(result, indent=1))
    print(f"\nwritten {out}")


if __name__ == "__main__":
    main()
