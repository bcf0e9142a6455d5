"""What synonyms cost a BM25 search on the embedded store (SciFact, BM25 only, no models).

Builds a BM25-only index of SciFact's corpus, then times `HybridRetriever.run` (mode bm25, ids only) over the test
queries four ways: no sets; 1,000 sets none of which the queries trigger (the cost of reading and matching);
sets that every query triggers, adding a one-word synonym; and sets adding a one-word synonym and a two-word
phrase (seeded random corpus words: a worst case for the SQL, not a quality measure). The arms alternate query
by query. Prints p50/p95 per arm, and how many queries' top 10 changed.

    .venv/bin/python -m bench.synonyms --data /work/shared/datasets/scifact --out bench/results/synonyms.json
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import numpy as np

from indexing.pipeline import IndexingConfig, IndexingPipeline
from search.retrieval import HybridRetriever, RetrievalConfig
from search.stores.embedded import EmbeddedStore
from search.stores.synonym_stores import synonym_store
from search.synonyms import SynonymSets
from search.text import bm25_terms

INDEX = "scifact-syn"


def _queries(data: Path) -> list[str]:
    ids = {ln.split("\t")[0] for ln in (data / "qrels" / "test.tsv").read_text().splitlines()[1:] if ln.strip()}
    rows = [json.loads(ln) for ln in (data / "queries.jsonl").read_text().splitlines() if ln.strip()]
    return [r["text"] for r in rows if r["_id"] in ids]


def _run(retriever: HybridRetriever, index: str, query: str) -> tuple[float, list[str]]:
    t = time.perf_counter()
    hits = retriever.run(index, query, 10, config=RetrievalConfig(mode="bm25"), with_docs=False)
    return (time.perf_counter() - t) * 1000, [r.id for r in hits]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("/work/shared/datasets/scifact"))
    ap.add_argument("--work", type=Path, default=Path("/tmp/sift-bench-synonyms"))
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    store = EmbeddedStore(args.work / "indices")
    if store.current_version(INDEX) is None:
        cfg = IndexingConfig(embed=False, progress=False, dead_letter_dir=args.work / "dead", format="jsonl")
        IndexingPipeline(store, None, cfg).build(args.data / "corpus.jsonl", INDEX)
    queries = _queries(args.data)
    syn = synonym_store(store)
    assert syn is not None
    retriever = HybridRetriever(store, None)

    rng = random.Random(35)
    vocab = sorted({t for q in queries for t in bm25_terms(q)})
    unused = [{"type": "synonym", "synonyms": [f"zz{i}a", f"zz{i}b", f"zz{i} zz{i}c"]} for i in range(1000)]
    firsts = sorted({ts[0] for q in queries if (ts := bm25_terms(q))})
    hit = [
        {"type": "synonym", "synonyms": [w, rng.choice(vocab), f"{rng.choice(vocab)} {rng.choice(vocab)}"]}
        for w in firsts
    ]

    # one alias per arm over the same version (sets belong to an alias); the arms alternate query by query, in a
    # shuffled order, so a busy machine's swings fall on all of them alike
    words = [{"type": "synonym", "synonyms": [w, rng.choice(vocab)]} for w in firsts]
    arms = {
        "no_sets": [],
        "1000_sets_untriggered": unused,
        "every_query_gains_a_word": words,
        "every_query_gains_a_word_and_a_phrase": hit,
    }
    version = store.current_version(INDEX)
    assert version is not None
    for name, sets in arms.items():
        store.switch_alias(f"{INDEX}-{name.replace('_', '-')}", version)
        syn.put(f"{INDEX}-{name.replace('_', '-')}", SynonymSets.model_validate(sets))
    times: dict[str, list[float]] = {name: [] for name in arms}
    ids: dict[str, list[list[str]]] = {name: [] for name in arms}
    order = list(arms)
    for rep in range(args.repeat + 1):
        for q in queries:
            rng.shuffle(order)
            for name in order:
                ms, got = _run(retriever, f"{INDEX}-{name.replace('_', '-')}", q)
                if rep == 0:  # a warm-up round: its ranking is kept, its time is not
                    ids[name].append(got)
                else:
                    times[name].append(ms)
    out: dict[str, object] = {"queries": len(queries), "repeat": args.repeat}
    for name, sets in arms.items():
        changed = sum(a != b for a, b in zip(ids[name], ids["no_sets"], strict=True))
        out[name] = {
            "sets": len(sets),
            "p50_ms": round(float(np.percentile(times[name], 50)), 3),
            "p95_ms": round(float(np.percentile(times[name], 95)), 3),
            "queries_whose_top10_changed": changed,
        }
        print(name, out[name], flush=True)
    for name in arms:
        syn.delete(f"{INDEX}-{name.replace('_', '-')}")
    retriever.close()
    store.close()
    if args.out:
        args.out.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
