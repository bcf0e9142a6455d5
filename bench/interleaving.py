"""Interleaving through the served path: does team-draft interleaving pick the better ranker from clicks?

    .venv/bin/python bench/interleaving.py [--dataset ../shared/datasets/scifact] [--runs 20] [--sessions 2000]
                                           [--train-sessions 5000] [--work DIR]

1. SciFact is indexed (BM25, embedded store); a pbm user clicks `--train-sessions` times on *train* queries
   and a LambdaMART ranker is trained on that log (training/ltr.py).
2. Which ranker is better is measured offline on the same train queries with their qrels (nDCG@10): the
   fused order (team a) or the learnt one (team b).
3. `--runs` experiments of `--sessions` sessions each, every one in a fresh log with its own seed: the app
   serves with `ranker: {interleave: true}`, the pbm user (relevance from the train qrels) clicks through the
   same in-process path as `sift clicks simulate`, and `training.interleaving` names a winner (sign test,
   alpha 0.05). The acceptance asks the better ranker to win in >= 95 % of the runs.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from ltr import INDEX, app_config, evaluate, simulate_more  # noqa: E402

from indexing.pipeline import IndexingConfig, IndexingPipeline  # noqa: E402
from ranking.ltr import LTRConfig, LTRRanker, save_ranker  # noqa: E402
from search.settings import Settings  # noqa: E402
from search.stores.embedded import EmbeddedStore  # noqa: E402
from serving.config import AppConfig  # noqa: E402
from serving.local import local_backend  # noqa: E402
from training.beir import load_beir  # noqa: E402
from training.click_logs import sessions_from_logs  # noqa: E402
from training.interleaving import interleaving_result  # noqa: E402
from training.ltr import RankerTrainConfig, ranker_data, train_ranker  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", type=Path, default=REPO.parent / "shared" / "datasets" / "scifact")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--sessions", type=int, default=2000)
    ap.add_argument("--train-sessions", type=int, default=5000)
    ap.add_argument("--work", type=Path, default=None)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    work = args.work or Path(tempfile.mkdtemp(prefix="sift-interleave-"))
    train = load_beir(args.dataset, "train")
    base_dir = work / "train-log"
    IndexingPipeline(EmbeddedStore(base_dir / "indices"), None, IndexingConfig(embed=False, progress=False)).build(
        args.dataset / "corpus.jsonl", INDEX
    )
    backend = local_backend(app_config(base_dir, "bm25"), Settings())
    simulate_more(backend, train, args.train_sessions, seed=10_000)
    imps = [e for e in backend.suggest.query_log.read() if e.type == "search"]
    data, _ = ranker_data(imps, sessions_from_logs(imps, backend.events.clicks.read()), RankerTrainConfig())
    booster, meta = train_ranker(data, RankerTrainConfig())
    ranker_dir = save_ranker(booster, meta, work / "ranker")
    learnt = LTRRanker(LTRConfig(model=str(ranker_dir)))
    fused_ndcg, learnt_ndcg = evaluate(backend, train, None), evaluate(backend, train, learnt)
    better = "b" if learnt_ndcg > fused_ndcg else "a"
    print(f"train-query nDCG@10: fused (a) {fused_ndcg:.4f}, learnt (b) {learnt_ndcg:.4f} → better: {better}")
    backend.suggest.close()

    winners: list[str | None] = []
    significant = 0
    for run in range(args.runs):
        t = time.perf_counter()
        run_dir = work / f"run-{run}"  # the same corpus (BM25 builds in seconds), a fresh log
        IndexingPipeline(EmbeddedStore(run_dir / "indices"), None, IndexingConfig(embed=False, progress=False)).build(
            args.dataset / "corpus.jsonl", INDEX
        )
        raw = app_config(run_dir, "bm25").model_dump()
        raw["ranker"] = {"model": str(ranker_dir), "interleave": True}
        exp = local_backend(AppConfig.model_validate(raw), Settings())
        simulate_more(exp, train, args.sessions, seed=run)
        result = interleaving_result(exp.suggest.query_log.read(), exp.events.clicks.read())
        exp.suggest.close()
        winners.append(result.winner)
        significant += result.significant and result.winner == better
        print(
            f"run {run:>2}: {result.impressions} impressions, wins a {result.wins_a} b {result.wins_b} ties "
            f"{result.ties}, p {result.p_value:.2g} → {result.winner}"
            f"{' (significant)' if result.significant else ''}  ({time.perf_counter() - t:.0f} s)"
        )
    share = winners.count(better) / len(winners)
    print(
        f"\nthe better ranker ({better}) won {winners.count(better)} of {len(winners)} runs ({share:.0%}; goal >= 95%)"
    )


if __name__ == "__main__":
    main()
