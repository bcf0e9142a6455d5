"""Result summaries on SciFact: time to first token, total time, grounding and citation quality.

    .venv/bin/python bench/summarize.py [--queries 50] [--threads 2] [--budget 160] [--dtype auto]

Builds (once, BM25-only, under --data-dir) an embedded SciFact index, retrieves the top 5 of each of the
first N test queries, and summarizes them with the default LM (SmolLM2-135M-Instruct) on the CPU, the way
the summarizer deployment does: prompt building (sentence selection with the embedder) is inside the timed
span. Prints time to first token p50/p95 (goal p50 <= 1 s on 2 CPUs), total time, the share of generated
sentences that pass the grounding check, the share of shown sentences that cite a document judged relevant
in the qrels (with the top-5 precision as the ceiling a random citation would reach), and the share of
summaries that fell back to extractive. The load average is printed too: the CPUs may be shared.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from indexing.pipeline import IndexingConfig, IndexingPipeline  # noqa: E402
from models.causal_lm import LMConfig  # noqa: E402
from models.embedder import CachedEmbedder, EmbedderConfig, EmbeddingCache, SentenceTransformerEmbedder  # noqa: E402
from search.stores.embedded import EmbeddedStore  # noqa: E402
from search.summarize.config import SummarizerConfig  # noqa: E402
from search.summarize.schemas import Summary, SummaryEvent, TokenEvent  # noqa: E402
from search.summarize.summarizer import Summarizer  # noqa: E402

INDEX = "scifact-bm25"


def pct(xs: list[float], p: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    i = min(len(xs) - 1, max(0, round(p / 100 * (len(xs) - 1))))
    return xs[i]


def load_queries(dataset: Path, n: int) -> tuple[list[tuple[str, str]], dict[str, set[str]]]:
    qrels: dict[str, set[str]] = {}
    with open(dataset / "qrels" / "test.tsv") as f:
        next(f)
        for line in f:
            qid, did, score = line.rstrip("\n").split("\t")
            if int(score) > 0:
                qrels.setdefault(qid, set()).add(did)
    queries = []
    with open(dataset / "queries.jsonl") as f:
        for line in f:
            q = json.loads(line)
            if str(q["_id"]) in qrels:
                queries.append((str(q["_id"]), q["text"]))
    return queries[:n], qrels


def ensure_index(store: EmbeddedStore, dataset: Path, data_dir: Path) -> None:
    store.warm_up()
    if store.current_version(INDEX) is not None:
        return
    t = time.perf_counter()
    cfg = IndexingConfig(embed=False, progress=False, dead_letter_dir=data_dir / "dead-letter")
    report = IndexingPipeline(store, None, cfg).build(dataset, INDEX)
    print(f"indexed {report.indexed} documents (BM25 only) in {time.perf_counter() - t:.1f} s", file=sys.stderr)


def run_one(s: Summarizer, query: str, docs: list[Any]) -> tuple[Summary, float, float]:
    t0 = time.perf_counter()
    ttft = None
    summary = None
    for ev in s.stream(query, docs, use_cache=False):
        if isinstance(ev, TokenEvent) and ttft is None:
            ttft = time.perf_counter() - t0
        elif isinstance(ev, SummaryEvent):
            summary = ev.summary
    total = time.perf_counter() - t0
    assert summary is not None
    return summary, ttft if ttft is not None else total, total


def first_token(s: Summarizer, query: str, docs: list[Any]) -> float:
    """Time to the first token, then cancel: what the warm pass measures."""
    cancel = threading.Event()
    t0 = time.perf_counter()
    took = None
    for ev in s.stream(query, docs, use_cache=False, cancel=cancel):
        if isinstance(ev, TokenEvent):
            took = time.perf_counter() - t0
            cancel.set()
            break
    s.generations[-1].finished.wait(30)  # let the cancelled generation end before the next measurement
    return took if took is not None else time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", type=Path, default=REPO.parent / "shared" / "datasets" / "scifact")
    ap.add_argument("--queries", type=int, default=50)
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2, help="torch intra-op threads (the CPUs the LM gets)")
    ap.add_argument("--lm", default=LMConfig().model)
    ap.add_argument("--dtype", default="auto", help="auto (fp32 on CPU), float32 or bfloat16")
    ap.add_argument("--budget", type=int, default=None, help="source token budget (default: the config's)")
    ap.add_argument("--max-new-tokens", type=int, default=None)
    ap.add_argument("--threshold", type=float, default=None, help="grounding threshold (default: the config's)")
    ap.add_argument("--embedder", default=EmbedderConfig().model)
    ap.add_argument("--data-dir", type=Path, default=Path("/tmp/sift-bench-summarize"))
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "summarize.json")
    ap.add_argument("--show", type=int, default=3, help="summaries printed in full")
    ap.add_argument(
        "--no-warm-pass",
        action="store_true",
        help="skip the second pass that measures time to first token with sentence vectors already cached",
    )
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(args.threads)
    except ImportError:
        pass

    store = EmbeddedStore(args.data_dir / "indices")
    ensure_index(store, args.dataset, args.data_dir)
    queries, qrels = load_queries(args.dataset, args.queries)

    cfg = SummarizerConfig(lm=LMConfig(model=args.lm, dtype=args.dtype, device="cpu"), top_k=args.k)
    update: dict[str, Any] = {}
    if args.budget is not None:
        update["source_token_budget"] = args.budget
    if args.max_new_tokens is not None:
        update["max_new_tokens"] = args.max_new_tokens
    if args.threshold is not None:
        update["grounding"] = cfg.grounding.model_copy(update={"threshold": args.threshold})
    cfg = cfg.model_copy(update=update)
    base = SentenceTransformerEmbedder(EmbedderConfig(model=args.embedder, device="cpu"))
    vec_cache = args.data_dir / f"sentence-vectors-{os.getpid()}.sqlite"  # fresh: the first pass starts cold
    emb = CachedEmbedder(base, EmbeddingCache(vec_cache))
    s = Summarizer(cfg, emb)
    t = time.perf_counter()
    s.warm_up()
    warm = store.bm25_search(INDEX, "warm up the models", args.k)
    run_one(s, "warm up the models", [h.doc for h in warm if h.doc is not None])
    print(f"models loaded and warmed in {time.perf_counter() - t:.1f} s", file=sys.stderr)

    load_before = os.getloadavg()
    rows: list[dict[str, Any]] = []
    for i, (qid, query) in enumerate(queries):
        hits = store.bm25_search(INDEX, query, args.k)
        docs = [h.doc for h in hits if h.doc is not None]
        if not docs:
            continue
        summary, ttft, total = run_one(s, query, docs)
        rel = qrels.get(qid, set())
        ids = {src.n: src.id for src in summary.sources}
        generated = [x for x in summary.dropped] + [x for x in summary.sentences if x.note != "extractive"]
        rows.append(
            {
                "qid": qid,
                "query": query,
                "ttft_s": ttft,
                "total_s": total,
                "prompt_tokens": summary.prompt_tokens,
                "prompt_ms": summary.prompt_ms,
                "generated_tokens": summary.generated_tokens,
                "stop_reason": summary.stop_reason,
                "extractive": summary.extractive,
                "generated_sentences": len(generated),
                "grounded_sentences": sum(1 for x in generated if x.supported),
                "kept_sentences": 0 if summary.extractive else len(summary.sentences),
                "model_cited": sum(1 for x in generated if not x.citation_added),
                "shown_sentences": len(summary.sentences),
                "shown_citing_relevant": sum(1 for x in summary.sentences if any(ids[n] in rel for n in x.citations)),
                "top_k_relevant": sum(1 for d in docs if d.id in rel),
                "top_k": len(docs),
                "text": summary.text,
                "generated_text": summary.generated_text,
            }
        )
        r = rows[-1]
        print(
            f"[{i + 1}/{len(queries)}] ttft {ttft * 1000:.0f} ms total {total:.1f} s "
            f"grounded {r['grounded_sentences']}/{r['generated_sentences']} extractive={summary.extractive}",
            file=sys.stderr,
        )
    warm_ttfts: list[float] = []
    if not args.no_warm_pass:  # same results again: sentence vectors cached, the LM prefill is what is left
        for _, query in queries:
            docs = [h.doc for h in store.bm25_search(INDEX, query, args.k) if h.doc is not None]
            if docs:
                warm_ttfts.append(first_token(s, query, docs))
    for p in vec_cache.parent.glob(vec_cache.name + "*"):
        p.unlink()
    load_after = os.getloadavg()

    ttfts = [r["ttft_s"] for r in rows]
    totals = [r["total_s"] for r in rows]
    gen = sum(r["generated_sentences"] for r in rows)
    grounded = sum(r["grounded_sentences"] for r in rows)
    shown = sum(r["shown_sentences"] for r in rows)
    shown_rel = sum(r["shown_citing_relevant"] for r in rows)
    gen_tok = sum(r["generated_tokens"] for r in rows)
    decode_s = sum(r["total_s"] - r["ttft_s"] for r in rows)
    result = {
        "queries": len(rows),
        "lm": args.lm,
        "dtype": args.dtype,
        "threads": args.threads,
        "config": cfg.model_dump(mode="json", exclude={"system_prompt"}),
        "load_avg_before": load_before,
        "load_avg_after": load_after,
        "ttft_ms_p50": round(pct(ttfts, 50) * 1000, 1),
        "ttft_ms_p95": round(pct(ttfts, 95) * 1000, 1),
        "ttft_cached_vectors_ms_p50": round(pct(warm_ttfts, 50) * 1000, 1) if warm_ttfts else None,
        "ttft_cached_vectors_ms_p95": round(pct(warm_ttfts, 95) * 1000, 1) if warm_ttfts else None,
        "total_s_p50": round(pct(totals, 50), 2),
        "total_s_p95": round(pct(totals, 95), 2),
        "prompt_tokens_mean": round(statistics.mean(r["prompt_tokens"] for r in rows), 1),
        "prompt_build_ms_p50": round(pct([r["prompt_ms"] for r in rows], 50), 1),
        "generated_tokens_mean": round(gen_tok / len(rows), 1),
        "decode_ms_per_token": round(decode_s / max(gen_tok, 1) * 1000, 1),
        "generated_sentences": gen,
        "grounded_share": round(grounded / gen, 3) if gen else None,
        "model_cited_share": round(sum(r["model_cited"] for r in rows) / gen, 3) if gen else None,
        "kept_share": round(sum(r["kept_sentences"] for r in rows) / gen, 3) if gen else None,
        "shown_sentences": shown,
        "shown_citing_relevant_share": round(shown_rel / shown, 3) if shown else None,
        "top_k_precision": round(sum(r["top_k_relevant"] for r in rows) / sum(r["top_k"] for r in rows), 3),
        "extractive_share": round(sum(r["extractive"] for r in rows) / len(rows), 3),
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")

    for r in rows[: args.show]:
        print(f"\nQ: {r['query']}\n  LM: {r['generated_text'].strip()[:400]}\n  shown: {r['text'][:400]}")
    print(
        f"\nSciFact test, {len(rows)} queries, top {args.k} by BM25, {args.lm} ({args.dtype}) on {args.threads} "
        f"thread(s); load average {load_before[0]:.1f} -> {load_after[0]:.1f}"
    )
    print(
        f"  time to first token  p50 {result['ttft_ms_p50']:.0f} ms  p95 {result['ttft_ms_p95']:.0f} ms"
        f"   (goal p50 <= 1000 ms; prompt {result['prompt_tokens_mean']:.0f} tokens on average, built in "
        f"{result['prompt_build_ms_p50']:.0f} ms p50)"
    )
    if warm_ttfts:
        print(
            f"  ... sentence vectors cached  p50 {result['ttft_cached_vectors_ms_p50']:.0f} ms  "
            f"p95 {result['ttft_cached_vectors_ms_p95']:.0f} ms   (a result summarized before)"
        )
    print(
        f"  total time           p50 {result['total_s_p50']:.2f} s  p95 {result['total_s_p95']:.2f} s"
        f"   ({result['generated_tokens_mean']:.0f} tokens generated, {result['decode_ms_per_token']:.0f} ms/token)"
    )
    print(
        f"  grounded             {grounded}/{gen} generated sentences pass the check ({result['grounded_share']})"
        f"; the LM cited {result['model_cited_share']} of them itself; {result['kept_share']} shown (grounded, "
        "not a restated title or a repeat)"
    )
    print(
        f"  cites relevant       {shown_rel}/{shown} shown sentences cite a qrels-relevant result "
        f"({result['shown_citing_relevant_share']}; top-{args.k} precision {result['top_k_precision']})"
    )
    print(f"  extractive fallback  {result['extractive_share']} of summaries")
    print(f"  wrote {args.out}")


if __name__ == "__main__":
    main()
