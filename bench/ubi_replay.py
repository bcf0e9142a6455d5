"""What replaying the features of imported impressions costs (training/feature_replay.py), on SciFact.

    .venv/bin/python bench/ubi_replay.py [--impressions 2000] [--head 100]

Builds a BM25 index of SciFact's corpus (no vectors) in a temporary folder, then replays `--impressions`
impressions as an import brings them: half the traffic from a head of `--head` train queries, half drawn from
all 809, each page ten random corpus documents (another engine's results: mostly documents BM25 does not
retrieve for the query, the expensive case). Prints and writes bench/results/ubi/replay.json: impressions,
distinct queries, rows, rows not retrieved, seconds, impressions/s and distinct queries/s.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from indexing.pipeline import IndexingConfig, IndexingPipeline
from logs.querylog import QueryEvent
from search.settings import Settings
from search.stores.embedded import EmbeddedStore
from serving.config import AppConfig
from serving.local import local_backend
from training.feature_replay import replay_features

DATASET = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "scifact"
OUT = Path(__file__).resolve().parent / "results" / "ubi"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--impressions", type=int, default=2000)
    ap.add_argument("--head", type=int, default=100)
    args = ap.parse_args()
    queries = [json.loads(line)["text"] for line in open(DATASET / "queries_train.jsonl")]
    doc_ids = [json.loads(line)["_id"] for line in open(DATASET / "corpus.jsonl")]
    rng = random.Random(0)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t = time.perf_counter()
        cfg = IndexingConfig(embed=False, progress=False, dead_letter_dir=root / "dead")
        IndexingPipeline(EmbeddedStore(root / "indices"), None, cfg).build(DATASET / "corpus.jsonl", "scifact")
        index_s = time.perf_counter() - t
        app = AppConfig.model_validate(
            {"data_dir": str(root), "search": {"default_index": "scifact", "retrieval": {"mode": "bm25"}},
             "reranker": {"model": None}, "ranker": {"model": None}, "suggest": {"enabled": False},
             "summarizer": None}
        )  # fmt: skip
        imps = []
        for i in range(args.impressions):
            query = queries[rng.randrange(len(queries))] if i % 2 else queries[i % args.head]
            shown = rng.sample(doc_ids, 10)
            imps.append(QueryEvent(query=query, query_id=f"x{i}", shown=shown, offset=0, index="scifact"))
        backend = local_backend(app, Settings())
        try:
            _, report = replay_features(imps, backend.service, "scifact", progress=False)
        finally:
            backend.suggest.close()
            backend.store.close()
    result = {
        **report.model_dump(),
        "index_build_s": round(index_s, 1),
        "impressions_per_s": round(report.impressions / report.seconds, 1),
        "queries_per_s": round(report.queries / report.seconds, 1),
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "replay.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
