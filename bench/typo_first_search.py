"""The first typo-corrected search after a build on Elasticsearch: the stored vocabulary (one request) against
the scan of every `_source` the first search used to wait for (docs/notes/typo-tolerance.md).

    .venv/bin/python -m bench.typo_first_search --port 9281 [--dataset scifact]

Starts a local node on the port (its data wiped), builds the corpus BM25-only, then times in a fresh process
state: the scan (`EsVocabulary.vocabulary`, what versions built before read) and a new `TypoTolerance`'s first
correction (stamp + stored vocabulary + the corrector's structures)."""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from indexing.pipeline import IndexingConfig, IndexingPipeline
from search.stores.elasticsearch import ElasticsearchStore
from search.stores.es_vocab import EsVocabulary
from search.typo import TypoConfig, TypoTolerance
from sift.es_node import LocalElasticsearch

DATASETS = Path("/work/shared/datasets")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--dataset", default="scifact")
    args = ap.parse_args()
    node = LocalElasticsearch(port=args.port, heap="1g")
    node.wipe()
    node.start()
    try:
        store = ElasticsearchStore(node.url)
        with tempfile.TemporaryDirectory() as tmp:
            cfg = IndexingConfig(embed=False, progress=False, format="beir", dead_letter_dir=Path(tmp))
            t = time.perf_counter()
            report = IndexingPipeline(store, None, cfg).build(DATASETS / args.dataset / "corpus.jsonl", "typo-first")
            print(f"built {report.indexed} docs in {time.perf_counter() - t:.1f} s")
        for _ in range(2):
            t = time.perf_counter()
            vocab = EsVocabulary(store).vocabulary("typo-first")
            print(f"scan of _source (before): {time.perf_counter() - t:.2f} s, {len(vocab.df)} words")
            t = time.perf_counter()
            stored = EsVocabulary(store).stored("typo-first")
            assert stored is not None and len(stored.df) == len(vocab.df)
            print(f"stored vocabulary read: {time.perf_counter() - t:.3f} s")
            t = time.perf_counter()
            fix = TypoTolerance(store, TypoConfig()).correct("typo-first", "protien foldnig")
            print(f"first corrected search (after): {time.perf_counter() - t:.3f} s -> {fix.searched!r}")
    finally:
        node.stop()


if __name__ == "__main__":
    main()
