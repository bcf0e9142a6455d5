"""The cost of exploration under the realistic click profile: nDCG@10 of explored first pages against
unexplored ones, as the simulated users saw them.

    .venv/bin/python bench/click_profiles.py [--dataset ../shared/datasets/scifact] [--sessions 5000]
                                             [--mode bm25|hybrid] [--eta 1.0] [--rate 0.1] [--seed 0]

1. The corpus is indexed in the embedded store (BM25; `--mode hybrid` adds dense vectors from the offline
   default encoder, slower on CPU).
2. Realistic users (training/click_profiles.py: Zipf query frequencies, eta, trust bias, noise, snippet
   attractiveness, abandonment) search the *train* queries in-process through the served path, with the
   profile's exploration (`adjacent_swap`, `--rate` of first pages) set in the service's config; clicks come
   from the *train* qrels only.
3. Every logged impression is scored against the train qrels (nDCG@10 of the page as shown): explored pages
   against unexplored ones (traffic-weighted: each search counts once), and, paired, each explored page
   against the same page with its swap undone. For scale, the same pages under a full top-10 shuffle (the
   ideal profile's exploration) are scored too. Also printed: the simulated log's shape (head share, tail
   counts, no-click share, clicks by position).
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
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from indexing.pipeline import IndexingConfig, IndexingPipeline  # noqa: E402
from ranking.exploration import ExplorationConfig, explore  # noqa: E402
from search.pii import scrub_pii  # noqa: E402
from search.settings import Settings  # noqa: E402
from search.stores.embedded import EmbeddedStore  # noqa: E402
from serving.config import AppConfig  # noqa: E402
from serving.local import local_backend  # noqa: E402
from sift.clicks_cli import _backend_search  # noqa: E402
from training.beir import load_beir  # noqa: E402
from training.click_profiles import RealisticProfile  # noqa: E402
from training.click_simulator import InProcessClient, SimulatorConfig, simulate  # noqa: E402
from training.metrics import per_query_metrics  # noqa: E402

INDEX = "profiles-bench"


def app_config(data_dir: Path, mode: str, exploration: ExplorationConfig) -> AppConfig:
    return AppConfig.model_validate(
        {
            "data_dir": str(data_dir),
            "search": {
                "default_index": INDEX,
                "retrieval": {"mode": mode, "fusion": "linear"},
                "exploration": exploration.model_dump(),
                "log_features": False,
            },
            "reranker": {"model": None},
            "suggest": {"enabled": False},
            "summarizer": None,
        }
    )


def ndcg(pages: list[list[str]], judged: list[dict[str, int]]) -> np.ndarray:
    """nDCG@10 of each page (as shown) against its query's qrels."""
    keys = [str(i) for i in range(len(pages))]
    runs = {k: {d: float(len(p) - r) for r, d in enumerate(p)} for k, p in zip(keys, pages, strict=True)}
    scores = per_query_metrics(dict(zip(keys, judged, strict=True)), runs, ["ndcg@10"])["ndcg@10"]
    return np.array([scores.get(k, 0.0) for k in keys])


def shape(qids: list[str]) -> dict[str, Any]:
    """How the simulated traffic is spread over queries."""
    counts = Counter(qids)
    freq = sorted(counts.values(), reverse=True)
    once_twice = sum(c <= 2 for c in freq) / len(freq)
    return {
        "distinct_queries": len(freq),
        "top_query_searches": freq[0],
        "head10_share": round(sum(freq[:10]) / len(qids), 3),
        "queries_seen_once_or_twice": round(once_twice, 3),
    }


def measure(imps: list[Any], text_to_qid: dict[str, str], qrels: dict[str, dict[str, int]]) -> dict[str, Any]:
    """Explored vs unexplored pages, paired costs of the swap and of a full shuffle (nDCG@10)."""
    rows = [(e, text_to_qid[e.query]) for e in imps if e.query in text_to_qid and e.shown]
    shown = [list(e.shown) for e, _ in rows]
    judged = [qrels[q] for _, q in rows]
    explored = np.array([bool(e.explored) for e, _ in rows])
    unswapped = []
    for e, page in zip((e for e, _ in rows), shown, strict=True):
        page = list(page)
        if e.swapped:
            i, j = e.swapped[0] - 1, e.swapped[1] - 1
            page[i], page[j] = page[j], page[i]
        unswapped.append(page)
    shuffle = ExplorationConfig(rate=1.0, top_k=10, mode="shuffle")
    shuffled = [
        explore(p, shuffle, f"{e.session_id}\x1f{e.query}")[0] for (e, _), p in zip(rows, unswapped, strict=True)
    ]
    as_shown, before, full = ndcg(shown, judged), ndcg(unswapped, judged), ndcg(shuffled, judged)
    return {
        "searches": len(rows),
        "explored_share": round(float(explored.mean()), 4),
        "ndcg10_explored_pages": round(float(as_shown[explored].mean()), 4),
        "ndcg10_unexplored_pages": round(float(as_shown[~explored].mean()), 4),
        "paired_swap_cost": round(float((as_shown[explored] - before[explored]).mean()), 4),
        "paired_swap_cost_per_search": round(float((as_shown - before).mean()), 4),
        "full_shuffle_cost_per_explored_page": round(float((full - before).mean()), 4),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", type=Path, default=REPO.parent / "shared" / "datasets" / "scifact")
    ap.add_argument("--mode", choices=["hybrid", "bm25"], default="bm25")
    ap.add_argument("--sessions", type=int, default=5000)
    ap.add_argument("--eta", type=float, default=1.0)
    ap.add_argument("--rate", type=float, default=0.1, help="Share of first pages with one adjacent pair swapped.")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", type=Path, default=None)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    work = args.work or Path(tempfile.mkdtemp(prefix="sift-profiles-"))
    train = load_beir(args.dataset, "train")
    base = RealisticProfile()
    profile = RealisticProfile.model_validate(
        {**base.model_dump(), "eta": args.eta, "exploration": {**base.exploration.model_dump(), "rate": args.rate}}
    )
    cfg = app_config(work, args.mode, profile.exploration)
    print(f"{args.dataset.name}: {len(train.qrels)} train queries; mode {args.mode}; {args.sessions} sessions; "
          f"load average {os.getloadavg()[0]:.2f}; work {work}")  # fmt: skip
    t = time.perf_counter()
    if not (work / ".indexed").exists():
        embedder = None
        if args.mode != "bm25":
            from models.embedder import CachedEmbedder, EmbeddingCache, SentenceTransformerEmbedder

            cache = EmbeddingCache(Settings().cache_dir / "embeddings.sqlite")
            embedder = CachedEmbedder(SentenceTransformerEmbedder(cfg.embedder), cache)
        icfg = IndexingConfig(embed=args.mode != "bm25", dead_letter_dir=work / "dead", progress=False)
        IndexingPipeline(EmbeddedStore(work / "indices"), embedder, icfg).build(args.dataset / "corpus.jsonl", INDEX)
        (work / ".indexed").touch()
    print(f"indexed in {time.perf_counter() - t:.1f} s")
    backend = local_backend(cfg, Settings())
    sim_cfg = SimulatorConfig(
        sessions=args.sessions, seed=args.seed, profile="realistic", realistic=profile, progress=False
    )

    async def go() -> Any:
        client = InProcessClient(_backend_search(backend), backend.events)
        try:
            return await simulate(client, train.queries, train.qrels, sim_cfg)
        finally:
            await client.aclose()

    started = datetime.now(UTC)  # a reused --work keeps earlier runs' logs: only this run's searches count
    try:
        report = asyncio.run(go())
        imps = [e for e in backend.suggest.query_log.read(since=started) if e.type == "search"]
    finally:
        backend.suggest.close()
        backend.store.close()
    # the log holds the query as scrubbed of PII (a few SciFact claims have number runs): match on that
    text_to_qid = {scrub_pii(" ".join(t.split())[:1000]): q for q, t in train.queries.items() if q in train.qrels}
    qids = [text_to_qid[e.query] for e in imps if e.query in text_to_qid]
    out = {
        "simulation": {**report.model_dump(), "no_click_share": round(report.no_click_sessions / report.sessions, 3)},
        "traffic": shape(qids),
        "exploration_cost": measure(imps, text_to_qid, train.qrels),
        "profile": profile.model_dump(),
    }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
