"""The PII scrubber's cost per logged query (it runs on every query the log stores and every suggestion checked).

    .venv/bin/python bench/pii_scrub.py [--repeat 5]

Queries: every query of SciFact (test and train), Cranfield and CISI, each also as its first three words (what
autocomplete sees), and the shared PII corpus (tests/pii_corpus.py) forms and non-PII texts. Prints microseconds
per query for `scrub_pii` and `contains_pii`, best of `--repeat` passes, for all queries and for those holding a
digit or an `@` (the ones the patterns run on).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from search.pii import contains_pii, scrub_pii  # noqa: E402
from tests.pii_corpus import NOT_PII, PII_FORMS  # noqa: E402

DATASETS = REPO.parent / "shared" / "datasets"
FILES = ["scifact/queries.jsonl", "scifact/queries_train.jsonl", "cranfield/queries.jsonl", "cisi/queries.jsonl"]


def queries() -> list[str]:
    """Dataset queries and their three-word prefixes, then the corpus texts."""
    out: list[str] = []
    for name in FILES:
        with open(DATASETS / name, encoding="utf-8") as f:
            texts = [json.loads(line)["text"] for line in f if line.strip()]
        out += texts + [" ".join(t.split()[:3]) for t in texts]
    return out + [t for t, _, _ in PII_FORMS] + NOT_PII


def per_query_us(fn: Callable[[str], object], texts: list[str], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        for t in texts:
            fn(t)
        best = min(best, time.perf_counter() - t0)
    return best / len(texts) * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    texts = queries()
    hot = [t for t in texts if any(c.isdigit() or c in "@＠﹫" for c in t)]
    for fn in (scrub_pii, contains_pii):
        fn(texts[0])  # warm the compiled patterns
        all_us, hot_us = per_query_us(fn, texts, args.repeat), per_query_us(fn, hot, args.repeat)
        print(f"{fn.__name__}: {all_us:.2f} µs/query over {len(texts)} queries; ", end="")
        print(f"{hot_us:.2f} µs over the {len(hot)} with a digit or @")


if __name__ == "__main__":
    main()
