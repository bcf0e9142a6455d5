"""The click loop end to end on a real collection: simulate users through the API, fit click models on the
logs, derive judgments, check them against the split's qrels.

    .venv/bin/python bench/clicks.py [--dataset ../shared/datasets/scifact] [--sessions 20000] [--seed 0]
                                     [--eta 0.8] [--http-sessions 1000] [--dbn-sessions 20000]

Indexes the collection's corpus (BM25 only: the click loop is under test, not the encoder) into an embedded
store in a temporary folder, with exploration on (every first page has its top 10 shuffled, as a swap
intervention would), and then:
1. `--http-sessions` pbm sessions through the real API over HTTP (uvicorn; /v1/search + /v1/events);
2. `--sessions` pbm sessions in-process (the same service and event recorder; same records);
3. PBM (learnt attractiveness prior; and per-pair Beta prior, "pbm-beta"), DBN and CTR fitted on the logs
   (impressions joined with clicks): fit time, propensities against the
   truth 1/rank^eta at ranks 1..10, held-out (20 % of sessions) log-likelihood;
4. a dbn user's log (`--dbn-sessions`, in-process, its own logs): held-out LL of DBN against CTR;
5. judgments from the PBM fit: nDCG@10 of the shown documents ordered by click relevance against the same
   documents ordered by the true train qrels (the acceptance asks for a ratio >= 0.9).
Only qrels/train.tsv is read (and queries_train.jsonl where the collection has it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from indexing.pipeline import IndexingConfig, IndexingPipeline  # noqa: E402
from search.settings import Settings  # noqa: E402
from search.stores.embedded import EmbeddedStore  # noqa: E402
from serving.api import create_api  # noqa: E402
from serving.config import AppConfig  # noqa: E402
from serving.local import local_backend  # noqa: E402
from sift.clicks_cli import _backend_search  # noqa: E402
from training.beir import load_beir  # noqa: E402
from training.click_data import Session, train_test_split  # noqa: E402
from training.click_logs import agreement, judgments, sessions_from_logs, write_judgments  # noqa: E402
from training.click_models import CTRModel, DBNModel, PBMConfig, PBMModel  # noqa: E402
from training.click_simulator import HttpClient, InProcessClient, SimulatorConfig, simulate  # noqa: E402
from training.click_users import UserConfig  # noqa: E402

INDEX = "clicks-bench"


def app_config(data_dir: Path) -> AppConfig:
    return AppConfig.model_validate(
        {
            "data_dir": str(data_dir),
            "search": {
                "default_index": INDEX,
                "retrieval": {"mode": "bm25"},
                "exploration": {"rate": 1.0, "top_k": 10},
            },
            "reranker": {"model": None},
            "suggest": {"enabled": False},
            "summarizer": None,
        }
    )


def serve(app: Any) -> tuple[str, Any, threading.Thread]:
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    return f"http://127.0.0.1:{sock.getsockname()[1]}", server, thread


def run_sim(backend: Any, data: Any, cfg: SimulatorConfig, url: str | None = None) -> dict[str, Any]:
    async def go() -> Any:
        client: Any = HttpClient(url) if url else InProcessClient(_backend_search(backend), backend.events)
        try:
            return await simulate(client, data.queries, data.qrels, cfg)
        finally:
            await client.aclose()

    return asyncio.run(go()).model_dump()  # type: ignore[no-any-return]


def logged_sessions(backend: Any) -> list[Session]:
    return sessions_from_logs(backend.suggest.query_log.read(), backend.events.clicks.read(), index=INDEX)


def fit_all(sessions: list[Session], truth: np.ndarray | None) -> dict[str, dict[str, Any]]:
    train, held = train_test_split(sessions, 0.2, np.random.default_rng(0))
    out: dict[str, dict[str, Any]] = {}
    models = {"ctr": CTRModel(), "pbm": PBMModel(), "pbm-beta": PBMModel(PBMConfig(attractiveness="beta"))}
    models["dbn"] = DBNModel()
    for label, model in models.items():
        t = time.perf_counter()
        model.fit(train)
        row: dict[str, Any] = {"fit_s": round(time.perf_counter() - t, 2), "heldout_ll": model.log_likelihood(held)}
        props = model.propensities
        if props is not None and truth is not None and model.name == "pbm":  # pbm-beta: per-pair fixed prior
            err = np.abs(np.array(props.relative) - truth)
            row["propensities"] = [round(x, 3) for x in props.relative]
            row["abs_err"] = [round(float(x), 3) for x in err]
        out[label] = row
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", type=Path, default=REPO.parent / "shared" / "datasets" / "scifact")
    ap.add_argument("--sessions", type=int, default=20_000)
    ap.add_argument("--http-sessions", type=int, default=1000)
    ap.add_argument("--dbn-sessions", type=int, default=20_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--eta", type=float, default=0.8)
    ap.add_argument("--work", type=Path, default=None, help="Keep indices, logs and judgments here.")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    work = args.work or Path(tempfile.mkdtemp(prefix="sift-clicks-"))
    data = load_beir(args.dataset, "train")
    print(f"{data.name} train: {len(data.qrels)} judged queries; load average {os.getloadavg()[0]:.2f}; work {work}")

    t = time.perf_counter()
    icfg = IndexingConfig(embed=False, dead_letter_dir=work / "dead", progress=False)
    for sub in ("pbm", "dbn"):
        IndexingPipeline(EmbeddedStore(work / sub / "indices"), None, icfg).build(args.dataset / "corpus.jsonl", INDEX)
    print(f"indexed the corpus twice (pbm and dbn logs) in {time.perf_counter() - t:.1f} s")

    pbm_user = UserConfig(kind="pbm", eta=args.eta, attractiveness=(0.05, 0.9))
    backend = local_backend(app_config(work / "pbm"), Settings())
    url, server, thread = serve(create_api(backend, backend.metrics))
    try:
        base = {"user": pbm_user, "concurrency": 4, "progress": False}
        http = run_sim(backend, data, SimulatorConfig(sessions=args.http_sessions, seed=args.seed + 1, **base), url)
    finally:
        server.should_exit = True
        thread.join(10)
    print(f"HTTP API     pbm user: {json.dumps(http)}")
    inproc = run_sim(backend, data, SimulatorConfig(sessions=args.sessions, seed=args.seed, **base))
    print(f"in-process   pbm user: {json.dumps(inproc)}")
    sessions = logged_sessions(backend)
    truth = 1.0 / np.arange(1, 11) ** args.eta
    pbm_fits = fit_all(sessions, truth)
    print(f"\n== pbm user, {len(sessions)} logged sessions (80/20 split); truth 1/rank^{args.eta}")
    for name, row in pbm_fits.items():
        extra = f"  max |err| {max(row['abs_err']):.3f}  err {row['abs_err']}" if "abs_err" in row else ""
        print(f"{name:<5} fit {row['fit_s']:>6.2f} s  held-out LL {row['heldout_ll']:.4f}{extra}")

    pbm = PBMModel().fit(sessions)
    scores = judgments(pbm, sessions)
    paths = write_judgments(scores, work / "judgments", known_queries=data.queries)
    agree = agreement(scores, data.qrels, data.queries)
    print(f"\n== judgments from PBM: {agree.model_dump()}  → {paths['qrels']}")
    dbn_scores = judgments(DBNModel().fit(sessions), sessions)
    print(f"   judgments from DBN: {agreement(dbn_scores, data.qrels, data.queries).model_dump()}")
    backend.suggest.close()
    backend.store.close()

    dbn_user = UserConfig(kind="dbn", attractiveness=(0.05, 0.9), satisfaction=(0.2, 0.7), gamma=0.9)
    backend = local_backend(app_config(work / "dbn"), Settings())
    dbn_run = run_sim(
        backend, data, SimulatorConfig(sessions=args.dbn_sessions, seed=args.seed, user=dbn_user, progress=False)
    )
    print(f"\nin-process   dbn user: {json.dumps(dbn_run)}")
    dbn_sessions = logged_sessions(backend)
    dbn_fits = fit_all(dbn_sessions, None)
    print(f"== dbn user, {len(dbn_sessions)} logged sessions (80/20 split)")
    for name, row in dbn_fits.items():
        print(f"{name:<5} fit {row['fit_s']:>6.2f} s  held-out LL {row['heldout_ll']:.4f}")
    margin = dbn_fits["dbn"]["heldout_ll"] - dbn_fits["ctr"]["heldout_ll"]
    print(f"DBN - CTR held-out LL: {margin:+.4f} nats/session on the dbn log")
    backend.suggest.close()
    backend.store.close()


if __name__ == "__main__":
    main()
