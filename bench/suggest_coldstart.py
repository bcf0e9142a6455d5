"""Cold-start suggestions on the demo corpus: the share of the prefixes (3+ characters) of 25 plausible queries
that get a suggestion right after start-up, with an empty query log and no LM, and whether any suggestion
finds nothing.

`python bench/suggest_coldstart.py --data-dir .data [--index pydocs]` (after `make demo`'s `sift index`, or any
embedded index of `sift demo-corpus`). Start-up is timed as a process does it: the version's corpus file loaded
(`sift suggest build` wrote it at indexing time) or, without one, built from the documents.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path
from typing import Any

# 25 queries a Python user might type into the demo's search box (the demo corpus: this Python's own docs).
QUERIES = [
    "how do i parse command line arguments",
    "read a csv file",
    "json dumps pretty print",
    "regular expression match",
    "datetime format string",
    "sort a list of dictionaries",
    "asyncio gather tasks",
    "subprocess run capture output",
    "pathlib glob files",
    "logging configuration file",
    "unittest mock patch",
    "string formatting",
    "open file encoding",
    "thread pool executor",
    "dataclass default values",
    "random choice from list",
    "http server example",
    "socket timeout",
    "zip two lists",
    "environment variables os environ",
    "exception handling try except",
    "type hints generics",
    "copy deep copy",
    "hash md5 hashlib",
    "sqlite3 connect database",
]


def prefixes(queries: list[str], min_chars: int = 3) -> list[str]:
    """Every prefix of at least `min_chars` characters (not ending in a blank), in typing order."""
    out: dict[str, None] = {}
    for q in queries:
        for i in range(min_chars, len(q) + 1):
            if not q[i - 1].isspace():
                out[q[:i]] = None
    return list(out)


def measure(store: Any, index: str, data_dir: Path, queries: list[str], k: int = 8) -> dict[str, Any]:
    """Coverage and empty-result suggestions of a fresh suggester (no log, no LM) over the queries' prefixes."""
    from search.suggest.artifacts import VersionArtifacts
    from search.suggest.schemas import SuggestConfig
    from search.suggest.suggester import Suggester

    t0 = time.perf_counter()
    s = Suggester(SuggestConfig.model_validate({"lm": {"enabled": False}, "prefetch_top": 0}), index=index)
    VersionArtifacts(s, store, index, data_dir, interval_s=0).start()
    ready_s = time.perf_counter() - t0
    ps = prefixes(queries)
    covered, empty, shown, lookups = 0, [], 0, []
    checked: dict[str, bool] = {}

    async def answers() -> list[Any]:
        out = []
        for p in ps:
            t = time.perf_counter()
            out.append((await s.suggest(p, k)).suggestions)
            lookups.append(time.perf_counter() - t)
        return out

    for got in asyncio.run(answers()):
        covered += bool(got)
        for x in got:
            shown += 1
            if x.text not in checked:
                checked[x.text] = bool(store.bm25_search(index, x.text, 1, with_docs=False))
            if not checked[x.text]:
                empty.append(x.text)
    lookups.sort()
    return {
        "queries": len(queries),
        "prefixes": len(ps),
        "covered": covered,
        "coverage": round(covered / len(ps), 4),
        "suggestions_shown": shown,
        "suggestions_finding_nothing": sorted(set(empty)),
        "ready_s": round(ready_s, 3),
        "first_answer_after_s": round(ready_s + lookups[0] if lookups else ready_s, 3),
        "lookup_p50_us": round(lookups[len(lookups) // 2] * 1e6, 1),
        "lookup_p99_us": round(lookups[int(len(lookups) * 0.99)] * 1e6, 1),
        "corpus_phrases": len(s.corpus) if s.corpus is not None else 0,
    }


def main() -> None:
    from search.stores.embedded import EmbeddedStore

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", type=Path, default=Path(".data"))
    ap.add_argument("--index", default="pydocs")
    ap.add_argument("--out", type=Path, default=Path("bench/results/suggest_coldstart.json"))
    args = ap.parse_args()
    store = EmbeddedStore(args.data_dir / "indices")
    report = measure(store, args.index, args.data_dir, QUERIES)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
