"""Click poisoning: can one API key at one address write a click-model judgment?

    .venv/bin/python bench/poisoning.py [--users 10] [--attacks 1,10,100,1000] [--seed 0]

The real FastAPI app in-process (embedded store, JSONL logs, an API key with the search and events scopes, a
trusted proxy so each simulated user has an address of its own): a small corpus of six topics, honest traffic
(`--users` identities each search every topic once and click from a relevance rule: a result of the query's
topic, with every third document of it relevant, is clicked with P 0.8 once examined, any other with P 0.1;
rank r is examined with P 1/r), then one scenario per line, each on fresh logs with the same honest traffic:
- `honest`: nothing else (the baseline judgment of the attacked pair);
- `+1 honest`: one more user searches the attacked query and clicks the attacked document (the last result of
  the page that is not relevant: rank 9 with the defaults, the result at rank 10 being relevant);
- `attack N`: one key at one address sends N clicks on one impression of the attacked query, then N searches
  of it with a click on the attacked document each.
For each: the PBM judgment (`sift clicks judgments`' path: `sessions_from_logs` → `PBMModel` → `judgments`) of
the attacked (query, document) pair, the same computed as if the defences were off (every impression its own
session, flagged clicks counted), and the stored / flagged click events and those refused (a batch far past a
click cap gets 422: the N clicks on one impression from N = 100 on, the searches' clicks past 10 times the
per-caller cap). PASS when no attack moves the judgment further from the baseline than the one honest click does.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from indexing.pipeline import IndexingConfig, IndexingPipeline  # noqa: E402
from search.stores.embedded import EmbeddedStore  # noqa: E402
from search.text import normalize_query  # noqa: E402
from serving.security import hash_key  # noqa: E402

INDEX = "poison-docs"
TOPICS = ["protein folding", "insulin resistance", "vitamin d", "zebrafish heart", "sleep memory", "gut bacteria"]
KEY = "sk_widget_poisoning_bench"
PROXY = "127.0.0.1"
ATTACKER = "10.66.6.6"
TOLERANCE = 1e-6


def build_index(work: Path) -> Path:
    """120 documents, 20 per topic; the index under work/data."""
    docs = work / "docs.jsonl"
    with open(docs, "w") as f:
        for i in range(120):
            t = TOPICS[i % len(TOPICS)]
            f.write(json.dumps({"id": f"d{i}", "title": f"{t} study {i}", "text": f"{t} results {i}"}) + "\n")
    cfg = IndexingConfig(embed=False, dead_letter_dir=work / "dead", progress=False)
    IndexingPipeline(EmbeddedStore(work / "data" / "indices"), None, cfg).build(docs, INDEX)
    return work / "data"


def relevant(query: str, doc: str) -> bool:
    """The honest users' truth: documents of the query's topic, every third one."""
    i = int(doc.removeprefix("d"))
    return TOPICS[i % len(TOPICS)] == query and (i // len(TOPICS)) % 3 == 0


class Api:
    """The app of one scenario (its own logs) and a client that sends as any address behind the proxy."""

    def __init__(self, data_dir: Path, logs: Path) -> None:
        from fastapi.testclient import TestClient

        from search.settings import Settings
        from serving.api import create_api
        from serving.config import AppConfig
        from serving.local import local_backend

        key = {"name": "widget", "sha256": hash_key(KEY), "scopes": ["search", "events"]}
        config = AppConfig.model_validate(
            {
                "data_dir": str(data_dir),
                "search": {"default_index": INDEX, "retrieval": {"mode": "bm25"}},
                "reranker": {"model": None},
                "suggest": {"enabled": False},
                "summarizer": None,
                "query_log": {"directory": str(logs / "querylog")},
                "click_log": {"directory": str(logs / "clicklog")},
                # no quotas: what is measured is what training does with what got in
                "security": {"keys": [key], "rate_limits": None, "trusted_proxies": [f"{PROXY}/32"]},
            }
        )
        self.backend = local_backend(config, Settings())
        self.http = TestClient(create_api(self.backend, self.backend.metrics), client=(PROXY, 50000))

    def _headers(self, address: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {KEY}", "X-Forwarded-For": address}

    def search(self, address: str, query: str) -> dict[str, Any]:
        r = self.http.post("/v1/search", json={"query": query, "limit": 10}, headers=self._headers(address))
        assert r.status_code == 200, r.text
        return r.json()  # type: ignore[no-any-return]

    def click(self, address: str, resp: dict[str, Any], positions: list[int], copies: int = 1) -> int:
        """`copies` click events (distinct event ids) on each of `positions` of one response; returns how many
        were refused (a batch that goes far past a click cap gets 422 and nothing of it is stored)."""
        events = [
            {
                "type": "click",
                "event_name": "Result clicked",
                "query_id": resp["query_id"],
                "object_ids": [resp["results"][p - 1]["id"]],
                "positions": [p],
                "event_id": uuid.uuid4().hex,
            }
            for p in positions
            for _ in range(copies)
        ]
        refused = 0
        for i in range(0, len(events), 1000):
            batch = {"events": events[i : i + 1000]}
            r = self.http.post("/v1/events", json=batch, headers=self._headers(address))
            if r.status_code == 422 and all("refused" in e["msg"] for e in r.json()["detail"]):
                refused += len(batch["events"])
                continue
            assert r.status_code == 202, r.text
        return refused

    def close(self) -> None:
        self.http.close()
        self.backend.suggest.close()
        self.backend.store.close()


def honest_traffic(api: Api, users: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for u in range(users):
        for topic in TOPICS:
            resp = api.search(f"10.0.{u // 250}.{u % 250 + 1}", topic)
            ranks = [
                r
                for r, hit in enumerate(resp["results"], 1)
                if rng.random() < 1 / r and rng.random() < (0.8 if relevant(topic, hit["id"]) else 0.1)
            ]
            if ranks:
                api.click(f"10.0.{u // 250}.{u % 250 + 1}", resp, ranks)


def judgment(api: Api, query: str, doc: str, defended: bool = True) -> float:
    """PBM relevance of (query, doc) as `sift clicks judgments` computes it; `defended=False`: as if every
    impression were its own session and flagged clicks counted (the logs read without identities or flags)."""
    from training.click_logs import judgments, sessions_from_logs
    from training.click_models import PBMModel

    api.backend.suggest.query_log.flush()
    imps = list(api.backend.suggest.query_log.read())
    clicks = list(api.backend.events.clicks.read())
    if not defended:
        imps = [e.model_copy(update={"client": None}) for e in imps]
        clicks = [c.model_copy(update={"flagged": None}) for c in clicks]
    sessions = sessions_from_logs(imps, clicks, index=INDEX)
    scores = judgments(PBMModel().fit(sessions), sessions)
    return float(scores.get(normalize_query(query), {}).get(doc, float("nan")))


def scenario(
    data_dir: Path, work: Path, users: int, seed: int, attack: int | None, honest_click: bool
) -> dict[str, Any]:
    """One scenario on fresh logs: honest traffic, then one honest click or an attack of size `attack`."""
    query = TOPICS[0]
    api = Api(data_dir, work / uuid.uuid4().hex)
    try:
        honest_traffic(api, users, seed)
        page = [hit["id"] for hit in api.search("10.1.0.2", query)["results"]]
        rank = max(r for r, doc in enumerate(page, 1) if not relevant(query, doc))  # 9 with the defaults
        t0 = time.perf_counter()
        if honest_click:
            api.click("10.1.0.1", api.search("10.1.0.1", query), [rank])
        refused = 0
        if attack:
            first = api.search(ATTACKER, query)
            refused += api.click(ATTACKER, first, [rank], copies=attack)  # N clicks on one impression
            for _ in range(attack):  # N searches, a click at the same rank each
                refused += api.click(ATTACKER, api.search(ATTACKER, query), [rank])
        seconds = time.perf_counter() - t0
        target = page[rank - 1]
        clicks = list(api.backend.events.clicks.read())
        return {
            "judgment": judgment(api, query, target),
            "undefended": judgment(api, query, target, defended=False),
            "stored": len(clicks),
            "flagged": sum(c.flagged is not None for c in clicks),
            "refused": refused,
            "target": target,
            "rank": rank,
            "extra_s": round(seconds, 2),
        }
    finally:
        api.close()


def run(users: int, attacks: list[int], seed: int, work: Path) -> dict[str, Any]:
    """Every scenario; `passed` when no attack moves the judgment more than the one honest click."""
    data_dir = build_index(work)
    rows = {"honest": scenario(data_dir, work, users, seed, None, False)}
    rows["+1 honest"] = scenario(data_dir, work, users, seed, None, True)
    for n in attacks:
        rows[f"attack {n}"] = scenario(data_dir, work, users, seed, n, False)
    base = rows["honest"]["judgment"]
    honest_move = abs(rows["+1 honest"]["judgment"] - base)
    moves = {name: abs(row["judgment"] - base) for name, row in rows.items() if name.startswith("attack")}
    passed = all(m <= honest_move + TOLERANCE for m in moves.values())
    return {"rows": rows, "honest_move": honest_move, "attack_moves": moves, "passed": passed}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=10)
    ap.add_argument("--attacks", default="1,10,100,1000", help="Attack sizes N, comma-separated.")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="sift-poison-") as tmp:
        result = run(args.users, [int(n) for n in args.attacks.split(",")], args.seed, Path(tmp))
    rows = result["rows"]
    first = rows["honest"]
    print(f"PBM judgment of ({TOPICS[0]!r}, {first['target']}), not relevant, shown at rank {first['rank']}; "
          f"{args.users} honest users")  # fmt: skip
    print(
        f"{'scenario':<12} {'judgment':>9} {'move':>8} {'undefended':>11} {'stored':>7} {'flagged':>8} {'refused':>8}"
    )
    base = rows["honest"]["judgment"]
    for name, row in rows.items():
        move = row["judgment"] - base
        print(
            f"{name:<12} {row['judgment']:>9.4f} {move:>+8.4f} {row['undefended']:>11.4f} "
            f"{row['stored']:>7} {row['flagged']:>8} {row['refused']:>8}"
        )
    verdict = "PASS" if result["passed"] else "FAIL"
    print(f"{verdict}: largest attack move {max(result['attack_moves'].values()):.4f}, one honest click "
          f"{result['honest_move']:.4f} ({time.perf_counter() - t0:.1f} s)")  # fmt: skip
    sys.exit(0 if result["passed"] else 1)


if __name__ == "__main__":
    main()
