"""Learning to rank from simulated clicks: the fused order against +LTR on a test split, as the log grows.

    .venv/bin/python bench/ltr.py [--dataset ../shared/datasets/scifact] [--mode hybrid|bm25]
                                  [--sessions 1000,5000,20000] [--seed 0] [--work DIR]

1. The corpus is indexed once in the embedded store (dense vectors from the default embedder in hybrid mode;
   the embedding cache makes a rerun cheap).
2. A pbm user (examination 1/rank^0.8, click P 0.05 / 0.9 for non-relevant / relevant) searches the *train*
   queries in-process through the served path (impressions and their features logged, exploration on), and
   clicks from the *train* qrels only.
3. After each cumulative log size, `training.ltr` fits PBM labels and LightGBM lambdarank (early stopping on
   held-out train queries), and the *test* queries are searched without and with the learnt stage
   (hybrid-linear, no exploration): nDCG@10 of both, side by side.
Collections without a train split (Cranfield, CISI): `--split-queries` splits the test queries in halves by id;
clicks are simulated on one half (its qrels only) and the other half is scored.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from indexing.pipeline import IndexingConfig, IndexingPipeline  # noqa: E402
from ranking.ltr import LTRConfig, LTRRanker, save_ranker  # noqa: E402
from search.service import SearchRequest  # noqa: E402
from search.settings import Settings  # noqa: E402
from search.stores.embedded import EmbeddedStore  # noqa: E402
from search.wiring import build_service  # noqa: E402
from serving.config import AppConfig  # noqa: E402
from serving.local import local_backend  # noqa: E402
from sift.clicks_cli import _backend_search  # noqa: E402
from training.beir import BeirData, load_beir  # noqa: E402
from training.click_logs import sessions_from_logs  # noqa: E402
from training.click_simulator import InProcessClient, SimulatorConfig, simulate  # noqa: E402
from training.click_users import UserConfig  # noqa: E402
from training.ltr import RankerTrainConfig, passes_gate, ranker_data, train_ranker  # noqa: E402
from training.metrics import mean_metrics, per_query_metrics  # noqa: E402

INDEX = "ltr-bench"


def app_config(data_dir: Path, mode: str) -> AppConfig:
    return AppConfig.model_validate(
        {
            "data_dir": str(data_dir),
            "search": {
                "default_index": INDEX,
                "retrieval": {"mode": mode, "fusion": "linear"},
                "exploration": {"rate": 1.0, "top_k": 10},
            },
            "reranker": {"model": None},
            "suggest": {"enabled": False},
            "summarizer": None,
        }
    )


def half(data: BeirData, keep: int, salt: str = "") -> BeirData:
    """The queries whose id (after `salt`) hashes to `keep` (0 or 1), with their qrels."""
    ids = {q for q in data.qrels if int(hashlib.sha256((salt + q).encode()).hexdigest(), 16) % 2 == keep}
    return data.model_copy(
        update={
            "queries": {q: t for q, t in data.queries.items() if q in ids},
            "qrels": {q: rel for q, rel in data.qrels.items() if q in ids},  # the file's order: --limit is stable
        }
    )


def evaluate(backend: Any, data: BeirData, ltr: LTRRanker | None) -> float:
    off = backend.config.search.exploration.model_copy(update={"rate": 0.0})
    cfg = backend.config.search.model_copy(update={"exploration": off, "log_features": False})
    service = build_service(backend.store, cfg, encoder=backend.service.encode, ltr=ltr)

    async def run() -> dict[str, dict[str, float]]:
        out = {}
        for qid, text in data.queries.items():
            if qid in data.qrels:
                resp = await service.search(SearchRequest(query=text[:1000], limit=10, highlight=False, rerank=False))
                out[qid] = {r.id: 10.0 - i for i, r in enumerate(resp.results)}
        return out

    try:
        runs = asyncio.run(run())
    finally:
        service.retriever.close()
    return mean_metrics({"ndcg@10": per_query_metrics(data.qrels, runs, ["ndcg@10"])["ndcg@10"]})["ndcg@10"]


def simulate_more(backend: Any, data: BeirData, sessions: int, seed: int) -> dict[str, Any]:
    user = UserConfig(kind="pbm", eta=0.8, attractiveness=(0.05, 0.9))
    cfg = SimulatorConfig(sessions=sessions, seed=seed, user=user, concurrency=4, progress=False)

    async def go() -> Any:
        client = InProcessClient(_backend_search(backend), backend.events)
        try:
            return await simulate(client, data.queries, data.qrels, cfg)
        finally:
            await client.aclose()

    return asyncio.run(go()).model_dump()  # type: ignore[no-any-return]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", type=Path, default=REPO.parent / "shared" / "datasets" / "scifact")
    ap.add_argument("--mode", choices=["hybrid", "bm25"], default="hybrid")
    ap.add_argument("--sessions", default="1000,5000,20000", help="Cumulative log sizes to train at.")
    ap.add_argument("--split-queries", action="store_true", help="No train split: halves of the test queries.")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", type=Path, default=None)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    work = args.work or Path(tempfile.mkdtemp(prefix="sift-ltr-"))
    if args.split_queries:
        test_all = load_beir(args.dataset, "test")
        train, test = half(test_all, 0), half(test_all, 1)
    else:
        train, test = load_beir(args.dataset, "train"), load_beir(args.dataset, "test")
    print(f"{args.dataset.name}: {len(train.qrels)} click queries, {len(test.qrels)} test queries; mode {args.mode}; "
          f"load average {os.getloadavg()[0]:.2f}; work {work}")  # fmt: skip
    cfg = app_config(work, args.mode)
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
    base = evaluate(backend, test, None)
    head = f"{'sessions':>8} {'clicks':>7} {'fused':>7} {'+LTR':>7} {'delta':>7}"
    print(f"\n{head} {'held-out train (fused→ltr)':>28}  fit s")
    done = 0
    for n in (int(x) for x in args.sessions.split(",")):
        sim = simulate_more(backend, train, n - done, args.seed + done)
        done = n
        imps = [e for e in backend.suggest.query_log.read() if e.type == "search"]
        sessions = sessions_from_logs(imps, backend.events.clicks.read())
        tcfg = RankerTrainConfig(seed=args.seed)
        data, _ = ranker_data(imps, sessions, tcfg)
        booster, meta = train_ranker(data, tcfg)
        path = save_ranker(booster, meta, work / f"ranker-{n}")
        ltr = LTRRanker(LTRConfig(model=str(path)))
        ltr.warm_up()
        score = evaluate(backend, test, ltr)
        gated = not passes_gate(meta, tcfg)  # `sift train ranker` would not write it: serving keeps the fused order
        m = meta.metrics
        inner = f"{m['heldout_ndcg10_fused']:.4f}→{m['heldout_ndcg10_ltr']:.4f}" + (" gated" if gated else "")
        if gated:
            print(f"{'':>8} ungated ranker would score {score:.4f}")
            score = base
        print(
            f"{n:>8} {sim['clicks']:>7} {base:>7.4f} {score:>7.4f} {score - base:>+7.4f} {inner:>28}  {m['fit_s']:.1f}"
        )
    backend.suggest.close()
    backend.store.close()


if __name__ == "__main__":
    main()
