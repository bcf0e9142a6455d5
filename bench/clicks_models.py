"""Click models on simulated click logs: fit time, propensity recovery, held-out log-likelihood.

    .venv/bin/python bench/clicks_models.py [--sessions 20000] [--queries 30] [--seed 0] [--eta 0.8]

Builds a synthetic collection (--queries queries x 10 docs, graded 0/1/2 at random), simulates --sessions
sessions with shuffled result orders for a pbm user (examination 1/rank^eta) and for a dbn user, splits each
log 80/20 by session and fits CTR, PBM and DBN on the 80 %. Prints per model and log: fit time, sessions/s,
EM iterations, held-out mean per-session log-likelihood (nats), and for the pbm log the error of the fitted
propensities (relative to rank 1) against 1/rank^eta per rank (CTR: per-rank CTR ratios, an unbiased estimate
only because the orders are shuffled). The load average is printed too: the CPUs may be
shared. Pure numpy: runs in well under a minute for 20k sessions.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from training.click_data import Session, train_test_split  # noqa: E402
from training.click_models import CTRModel, DBNModel, PBMModel  # noqa: E402
from training.click_users import SimulatedUser, UserConfig, simulate_sessions  # noqa: E402

DEPTH = 10


def collection(n_queries: int, rng: np.random.Generator) -> tuple[dict[str, list[str]], dict[str, dict[str, int]]]:
    rankings = {f"q{i}": [f"q{i}-d{j}" for j in range(DEPTH)] for i in range(n_queries)}
    qrels = {q: {d: int(rng.choice(3, p=[0.6, 0.25, 0.15])) for d in docs} for q, docs in rankings.items()}
    return rankings, qrels


def run_log(name: str, train: list[Session], held: list[Session], truth: np.ndarray | None) -> None:
    print(f"\n== {name} user: {len(train)} train / {len(held)} held-out sessions")
    print(f"{'model':<6}{'fit s':>8}{'sessions/s':>12}{'iters':>7}{'held-out LL':>13}  propensity |err| ranks 1..10")
    for model in (CTRModel(), PBMModel(), DBNModel()):
        start = time.perf_counter()
        model.fit(train)
        seconds = time.perf_counter() - start
        ll = model.log_likelihood(held)
        iters = model.report.iterations if model.report else 0
        props = model.propensities
        err = ""
        if props is not None and truth is not None:
            e = np.abs(np.array(props.relative) - truth)
            err = f"max {e.max():.3f}  [" + " ".join(f"{x:.3f}" for x in e) + "]"
        extra = f"  gamma={model.gamma:.3f}" if isinstance(model, DBNModel) else ""
        print(f"{model.name:<6}{seconds:>8.2f}{len(train) / seconds:>12.0f}{iters:>7}{ll:>13.4f}  {err}{extra}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sessions", type=int, default=20_000)
    ap.add_argument("--queries", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--eta", type=float, default=0.8)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    rankings, qrels = collection(args.queries, rng)
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; {args.queries * DEPTH} (query, doc) pairs")
    for kind in ("pbm", "dbn"):
        user = SimulatedUser(UserConfig(kind=kind, eta=args.eta))
        start = time.perf_counter()
        log = simulate_sessions(rankings, qrels, user, args.sessions, rng, shuffle=True, depth=DEPTH)
        print(f"\nsimulated {len(log)} {kind} sessions in {time.perf_counter() - start:.2f} s")
        train, held = train_test_split(log, 0.2, rng)
        run_log(kind, train, held, user.examination(DEPTH) if kind == "pbm" else None)


if __name__ == "__main__":
    main()
