"""`make bench-bm25`: each store's BM25 beside the bm25s reference, on the test split of each collection.

    .venv/bin/python bench/bm25_parity.py [--datasets scifact,cranfield,cisi] [--stores embedded,es]
                                          [--tolerance 0.005] [--strict]

For every dataset: one `sift eval` per store (in process, `training.evaluation`) of `bm25`, and `bm25-reference`
(bm25s, k1 1.2, b 0.75, its English stop words, Snowball stems, one field of title + body) once. Prints one table
of nDCG@10 and writes it to bench/results/bm25_parity.md, with PASS/FAIL per store and dataset: a store passes when
its BM25 is within `--tolerance` of the reference or above it.

Elasticsearch: ELASTICSEARCH_URL, else a local node on SIFT_BENCH_BM25_ES_PORT (default 9272) started and stopped
here.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from search.settings import Settings  # noqa: E402
from training.evaluation import EvalConfig, EvalResult, Evaluator  # noqa: E402

DATASETS_DIR = REPO.parent / "shared" / "datasets"
RESULTS = REPO / "bench" / "results"
REFERENCE = "bm25-reference"


def evaluate(ds: Path, store: str, with_reference: bool, settings: Settings) -> EvalResult:
    systems = ["bm25", REFERENCE] if with_reference else ["bm25"]
    cfg = EvalConfig(dataset=ds, store=store, systems=systems, index=f"bm25-parity-{ds.name}")  # type: ignore[arg-type]
    return Evaluator(cfg, settings=settings).run()


def table(rows: dict[str, dict[str, float]], stores: list[str], tolerance: float) -> tuple[list[str], bool]:
    """Markdown lines (nDCG@10; Δ = store − reference) and whether every store passed on every dataset."""
    head = "| dataset | reference | " + " | ".join(f"{s} | Δ {s}" for s in stores) + " |"
    lines = [head, "|---" * (2 + 2 * len(stores)) + "|"]
    ok = True
    for name, vals in rows.items():
        ref = vals[REFERENCE]
        cells = [f"{ref:.4f}"]
        for s in stores:
            delta = vals[s] - ref
            passed = delta >= -tolerance
            ok = ok and passed
            cells += [f"{vals[s]:.4f}", f"{delta:+.4f} {'PASS' if passed else 'FAIL'}"]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines, ok


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default="scifact,cranfield,cisi")
    ap.add_argument("--datasets-dir", type=Path, default=DATASETS_DIR)
    ap.add_argument("--stores", default="embedded,es")
    ap.add_argument("--tolerance", type=float, default=0.005, help="how far below the reference still passes")
    ap.add_argument("--strict", action="store_true", help="exit 1 when a store fails on a dataset")
    args = ap.parse_args()
    stores = [s.strip() for s in args.stores.split(",") if s.strip()]
    names = [d.strip() for d in args.datasets.split(",") if d.strip()]

    node = None
    es_url = os.environ.get("ELASTICSEARCH_URL")
    if "es" in stores and not es_url:
        from sift.es_node import LocalElasticsearch

        node = LocalElasticsearch(port=int(os.environ.get("SIFT_BENCH_BM25_ES_PORT", "9272")))
        node.wipe()
        es_url = node.start().url
    started = time.perf_counter()
    rows: dict[str, dict[str, float]] = {}
    try:
        settings = Settings(elasticsearch_url=es_url) if es_url else Settings()
        for name in names:
            rows[name] = {}
            for i, store in enumerate(stores):
                print(f"== {name} on {store}", flush=True)
                res = evaluate(args.datasets_dir / name, store, with_reference=i == 0, settings=settings)
                for s in res.systems:
                    rows[name][store if s.name == "bm25" else s.name] = s.metrics["ndcg@10"]
    finally:
        if node is not None:
            node.stop()
    lines, ok = table(rows, stores, args.tolerance)
    text = "\n".join(
        [
            "# BM25 against the bm25s reference (nDCG@10, test splits)",
            "",
            *lines,
            "",
            f"Δ = store − reference; PASS within {args.tolerance} of the reference or above it. The stores answer "
            "through `SearchService` (queries cut to the API's 1,000 characters); the reference reads them whole. "
            f"{time.perf_counter() - started:.0f} s.",
            "",
        ]
    )
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "bm25_parity.md").write_text(text)
    return 1 if args.strict and not ok else 0


if __name__ == "__main__":
    raise SystemExit(main())
