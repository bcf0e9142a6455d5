"""Neural models trained on clicks, end to end on SciFact: encoder, reranker, learnt ranker, then `sift eval`.

    .venv/bin/python bench/neural.py --work DIR [--sessions 20000] [--encoder-steps 60] [--reranker-steps 250]

1. `DIR` is a `bench/ltr.py` work folder (SciFact indexed in the embedded store, hybrid mode) holding the query
   and click logs of its simulated users, who searched and clicked from the *train* queries and qrels only; if
   it holds fewer than `--sessions` sessions, more are simulated the same way.
2. From those logs, as `sift train encoder|reranker|ranker` do: an encoder (MNRL on clicked pairs with
   skip-above hard negatives, from all-MiniLM-L6-v2) and a cross-encoder (BCE, from the same weights with a
   fresh head) are trained into `DIR/registry`; the LambdaMART ranker is trained and gated as in `bench/ltr.py`.
   Held-out figures at training time are on held-out *train* queries (click-model labels).
3. `training.evaluation` (what `sift eval` runs) scores hybrid-linear, +LTR, +encoder (the corpus re-indexed with
   it), +reranker (top 20) and the full pipeline on the SciFact *test* split, once, side by side.
4. Rerank latency: p50 of scoring 20 (query, abstract) pairs on CPU, one torch thread, as served (128 tokens,
   int8) and as trained (fp32, 256 tokens), over test queries' BM25 top 20.
`--split-queries` (Cranfield, CISI): clicks on one half of the test queries by id, the other half scored.
Each trained model goes through `Registry.promote` against the baseline on held-out train queries (what
`sift models promote` does); the full pipeline serves only what was promoted, and a refused stage is "not run".
Results: bench/results/neural-<dataset>.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import ltr as ltr_bench  # noqa: E402

from models.registry import Registry  # noqa: E402
from ranking.ltr import save_ranker  # noqa: E402
from search.settings import Settings  # noqa: E402
from serving.local import local_backend  # noqa: E402
from training.beir import load_beir  # noqa: E402
from training.click_logs import sessions_from_logs  # noqa: E402
from training.ltr import RankerTrainConfig, passes_gate, ranker_data, train_ranker  # noqa: E402
from training.neural import EncoderTrainConfig, RerankerTrainConfig, train_encoder, train_reranker  # noqa: E402
from training.neural_data import NeuralDataConfig, build_neural_data, fused_ranks, store_texts  # noqa: E402

SYSTEMS = ["hybrid-linear", "hybrid-linear+ltr", "hybrid-linear+encoder", "hybrid-linear+rerank", "full"]


def rerank_latency(model: str, queries: list[str], docs: list[list[str]], quantize: str, max_length: int) -> float:
    import numpy as np

    from models.device import limit_threads
    from ranking.rerank import CrossEncoderReranker, RerankerConfig

    limit_threads(1)
    rr = CrossEncoderReranker(RerankerConfig(model=model, device="cpu", quantize=quantize, max_length=max_length))  # type: ignore[arg-type]
    rr.rerank(queries[0], docs[0])
    ms = []
    for q, d in zip(queries, docs, strict=True):
        t = time.perf_counter()
        rr.rerank(q, d)
        ms.append((time.perf_counter() - t) * 1000)
    return float(np.percentile(ms, 50))


def latency(model: str, test: Any, work: Path, n: int) -> dict[str, float]:
    """p50 ms of reranking each of `n` test queries' BM25 top 20, as served and as trained (one thread)."""
    from search.stores.embedded import EmbeddedStore

    store = EmbeddedStore(work / "indices")
    qs = [test.queries[q] for q in list(test.qrels)[:n]]
    heads = []
    for q in qs:
        hits = store.bm25_search(ltr_bench.INDEX, q, 20)
        heads.append([f"{h.doc.title} {h.doc.body}" for h in hits if h.doc is not None])
    store.close()
    lat = {
        "served_int8_128": round(rerank_latency(model, qs, heads, "int8", 128), 1),
        "fp32_256": round(rerank_latency(model, qs, heads, "none", 256), 1),
    }
    print(f"rerank 20 pairs, p50 ms on 1 CPU thread (load average {os.getloadavg()[0]:.2f}): {lat}", flush=True)
    return lat


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", type=Path, default=REPO.parent / "shared" / "datasets" / "scifact")
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--sessions", type=int, default=20000)
    ap.add_argument("--encoder-steps", type=int, default=60)
    ap.add_argument("--reranker-steps", type=int, default=250)
    ap.add_argument("--latency-queries", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--split-queries", action="store_true", help="No train split: halves of the test queries.")
    ap.add_argument("--margin", type=float, default=0.005, help="Promotion margin (held-out train nDCG@10).")
    ap.add_argument(
        "--latency-only", action="store_true", help="Only the rerank latency of DIR's newest reranker (idle machine)."
    )
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    work = args.work
    if args.split_queries:
        test_all = load_beir(args.dataset, "test")
        train_split, test = ltr_bench.half(test_all, 0), ltr_bench.half(test_all, 1)
    else:
        train_split, test = load_beir(args.dataset, "train"), load_beir(args.dataset, "test")
    print(f"{args.dataset.name}: work {work}; load average {os.getloadavg()[0]:.2f}", flush=True)
    if args.latency_only:
        reg = Registry(work / "registry")
        latency(str(reg.path("reranker", reg.versions("reranker")[-1].version)), test, work, args.latency_queries)
        return
    backend = local_backend(ltr_bench.app_config(work, "hybrid"), Settings())
    imps = [e for e in backend.suggest.query_log.read() if e.type == "search"]
    if len(imps) < args.sessions:
        print(f"simulating {args.sessions - len(imps)} more sessions on the train queries", flush=True)
        ltr_bench.simulate_more(backend, train_split, args.sessions - len(imps), args.seed + len(imps))
        imps = [e for e in backend.suggest.query_log.read() if e.type == "search"]
    assert backend.events is not None
    sessions = sessions_from_logs(imps, list(backend.events.clicks.read()))
    print(f"{len(sessions)} sessions, {sum(any(s.clicks) for s in sessions)} with a click", flush=True)
    registry = Registry(work / "registry")
    out: dict[str, Any] = {"sessions": len(sessions)}

    t = time.perf_counter()
    fetch = store_texts(backend.store, ltr_bench.INDEX, 2000)
    data = build_neural_data(sessions, fetch, NeuralDataConfig(), fused_ranks(imps))
    print(f"examples: {data.stats} ({time.perf_counter() - t:.1f} s)", flush=True)
    ecfg = EncoderTrainConfig(max_steps=args.encoder_steps, progress=False, seed=args.seed)
    enc = train_encoder(data, ecfg, registry)
    print(f"encoder {enc.card.version}: {enc.card.metrics}", flush=True)
    rr = train_reranker(
        data, RerankerTrainConfig(max_steps=args.reranker_steps, progress=False, seed=args.seed), registry
    )
    print(f"reranker {rr.card.version}: {rr.card.metrics}", flush=True)
    # The gated way in, as `sift models promote` does: each candidate against the baseline on held-out train
    # queries; the full pipeline serves only what was promoted.
    from models.references import DEFAULT_EMBEDDER
    from training.promotion import encoder_evaluator, reranker_evaluator

    enc_eval = encoder_evaluator(data.heldout, DEFAULT_EMBEDDER)
    gates = {
        "encoder": registry.promote("encoder", enc.card.version, enc_eval, args.margin),
        "reranker": registry.promote("reranker", rr.card.version, reranker_evaluator(data.heldout), args.margin),
    }
    for kind, g in gates.items():
        print(f"promote {kind}: {'PROMOTED' if g.promoted else 'refused'} ({g.reason})", flush=True)
    out["gates"] = {k: {"promoted": g.promoted, "reason": g.reason} for k, g in gates.items()}
    tcfg = RankerTrainConfig(seed=args.seed)
    rows, _ = ranker_data(imps, sessions, tcfg)
    booster, meta = train_ranker(rows, tcfg)
    ranker = save_ranker(booster, meta, work / f"ranker-neural-{len(sessions)}")
    print(f"ranker {meta.version}: gate {'passed' if passes_gate(meta, tcfg) else 'REFUSED'}; {meta.metrics}")
    out["training"] = {"encoder": enc.card.model_dump(), "reranker": rr.card.model_dump(), "ranker": meta.metrics}
    backend.suggest.close()
    backend.store.close()

    from training.evaluation import EvalConfig, Evaluator

    qrels = None
    if args.split_queries:  # score the other half only
        qrels = work / "qrels-scored-half.tsv"
        rows_out = [f"{q}\t{d}\t{g}" for q, docs in test.qrels.items() for d, g in docs.items()]
        qrels.write_text("query-id\tcorpus-id\tscore\n" + "\n".join(rows_out) + "\n")
    live = {k: registry.live_path(k) for k in ("encoder", "reranker")}
    cfg = EvalConfig(
        dataset=args.dataset, store="embedded", systems=SYSTEMS, data_dir=work / "eval", qrels=qrels,
        index=f"eval-{args.dataset.name}", encoder=str(live["encoder"]) if live["encoder"] else None,
        reranker=str(live["reranker"]) if live["reranker"] else None,
        ranker=ranker if passes_gate(meta, tcfg) else None,
    )  # fmt: skip
    res = Evaluator(cfg, settings=Settings(data_dir=work / "eval")).run()
    base = res.system("hybrid-linear").metrics["ndcg@10"]
    print(f"\n{'system':<24} {'nDCG@10':>8} {'delta':>8}  ({args.dataset.name}, {res.n_queries} scored queries)")
    print("(a stage refused by its gate is not run: the full pipeline serves only promoted models)")
    for s in res.systems:
        v = s.metrics.get("ndcg@10")
        print(f"{s.name:<24} {v:>8.4f} {v - base:>+8.4f}" if v is not None else f"{s.name:<24} not run: {s.reason}")
    out["eval"] = {s.name: s.metrics for s in res.systems}

    if args.latency_queries > 0:
        out["rerank20_p50_ms"] = latency(str(rr.path), test, work, args.latency_queries)
    dest = REPO / "bench" / "results" / f"neural-{args.dataset.name}.json"
    dest.write_text(json.dumps(out, indent=2, default=str))
    print(f"wrote {dest}")


if __name__ == "__main__":
    main()
