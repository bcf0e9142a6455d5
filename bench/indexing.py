"""Indexing throughput: encode-only vs the full pipeline into each store, side by side in one run.

    .venv/bin/python bench/indexing.py [--dataset ../shared/datasets/scifact] [--limit 1000]
        [--only pipeline,encoders,ndcg,ray,rss] [--rss-sizes 5000,50000]

Rows of issue 17 (bench/_indexing_engines.py): `encoders` (torch fp32 vs ONNX fp32 vs ONNX int8 docs/s),
`ndcg` (dense nDCG@10 on SciFact test, fp32 vs int8), `ray` (the Ray Data engine vs its own encode-only
rate), `rss` (the Ray engine's peak RSS for each size of SciFact repeated with new ids).

Prints docs/s and tokens/s for plain encoding (the floor any pipeline pays), then docs/s for the full
pipeline (read, clean, chunk, embed with a cold cache, bulk write, count check, alias swap) into the
embedded store and into Elasticsearch, and each pipeline's ratio to encode-only (goal >= 0.9).
Encode-only runs before and after the pipelines; the ratio uses their mean, and their spread shows
how noisy the machine is. Elasticsearch: ELASTICSEARCH_URL, else a local node started and stopped here.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from indexing.chunking import chunk_document  # noqa: E402
from indexing.clean import clean_document, is_empty  # noqa: E402
from indexing.pipeline import IndexingConfig, IndexingPipeline  # noqa: E402
from indexing.readers import read_source  # noqa: E402
from models.embedder import CachedEmbedder, EmbedderConfig, EmbeddingCache, SentenceTransformerEmbedder  # noqa: E402


def warm_up_elasticsearch(url: str, docs: list, dims: int) -> None:  # type: ignore[type-arg]
    """A fresh JVM spends seconds of CPU compiling its indexing path; a serving node has done that long ago.

    Index the documents once with random vectors into a throwaway version, so timing sees a warm node.
    """
    import numpy as np

    from search.documents import StoredRecord
    from search.schema import IndexSchema
    from search.stores.elasticsearch import ElasticsearchStore

    store = ElasticsearchStore(url)
    rng = np.random.default_rng(0)
    version = store.create_version("bench-warmup", dims, IndexSchema())
    recs = [StoredRecord(doc=d, vectors=rng.normal(size=(1, dims)).tolist()) for d in docs]
    for i in range(0, len(recs), 128):
        store.upsert(version, recs[i : i + 128])
    store.refresh(version)
    store.drop_version(version)
    store.close()


def main() -> None:
    args = parse_args()
    if args.rss_child:
        from bench._indexing_engines import rss_child

        rss_child(args.rss_child, args.model, args.rss_encoder, args.rss_cache)
        return
    from bench._indexing_engines import encoder_rows, ndcg_rows, ray_rows, rss_rows

    parts = set(args.only.split(","))
    tmp = Path(tempfile.mkdtemp(prefix="sift-bench-"))
    all_docs = [clean_document(i.doc) for i in read_source(args.dataset) if i.doc is not None]
    all_docs = [d for d in all_docs if not is_empty(d)]
    summary: dict[str, object] = {}
    if args.out.exists():
        summary.update(json.loads(args.out.read_text()))  # rows of parts not run this time are kept
    if "encoders" in parts:
        summary.update(encoder_rows(all_docs[: args.encode_limit], args.model, args.rounds, args.encode_batch))
    if "ndcg" in parts:
        summary.update(
            ndcg_rows(args.dataset, all_docs, args.model, args.rss_cache, args.encode_batch, args.ndcg_others)
        )
    if "ray" in parts:
        src = tmp / "ray-docs.jsonl"
        with open(src, "w") as f:
            for d in all_docs[: args.ray_limit]:
                f.write(d.model_dump_json() + "\n")
        summary.update(ray_rows(src, all_docs[: args.ray_limit], args.model, args.ray_encoder, args.actors, tmp))
    if "rss" in parts:
        sizes = [int(x) for x in args.rss_sizes.split(",")]
        print(f"peak RSS of the ray engine ({args.rss_encoder}, cache {args.rss_cache}):")
        base = all_docs[: args.rss_base] if args.rss_base else all_docs
        summary.update(rss_rows(base, sizes, args.model, args.rss_encoder, tmp, args.rss_cache))
    if "pipeline" in parts:
        summary.update(pipeline_rows(args, tmp))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2))
    print(f"wrote {args.out}")


def parse_args() -> argparse.Namespace:
    from search.settings import Settings

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", type=Path, default=REPO.parent / "shared" / "datasets" / "scifact")
    ap.add_argument("--limit", type=int, default=1000, help="documents to index (SciFact has 5,183)")
    ap.add_argument("--model", default=EmbedderConfig().model)
    ap.add_argument("--batch-size", type=int, default=256, help="documents per pipeline batch")
    ap.add_argument("--stores", default="embedded,es")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "indexing.json")
    ap.add_argument("--only", default="pipeline,encoders,ndcg,ray,rss", help="comma-separated parts to run")
    ap.add_argument("--encode-limit", type=int, default=1000, help="documents of the encoder comparison")
    ap.add_argument("--encode-batch", type=int, default=32, help="texts per forward pass, every encoder")
    ap.add_argument("--rounds", type=int, default=2, help="interleaved rounds of the encoder comparison")
    ap.add_argument("--ndcg-others", type=int, default=0, help="nDCG corpus: judged docs + this many others (0: all)")
    ap.add_argument("--ray-limit", type=int, default=1000, help="documents of the ray engine row")
    ap.add_argument("--ray-encoder", default="onnx-int8", choices=["torch-fp32", "onnx-fp32", "onnx-int8"])
    ap.add_argument("--actors", type=int, default=2, help="encoder actors of the ray row (2 CPUs shared)")
    ap.add_argument("--rss-sizes", default="5000,50000", help="corpus sizes of the RSS row")
    ap.add_argument(
        "--rss-base", type=int, default=0, help="RSS corpora repeat the first N SciFact docs (0: all of them)"
    )
    ap.add_argument("--rss-encoder", default="onnx-int8", choices=["torch-fp32", "onnx-fp32", "onnx-int8"])
    ap.add_argument(
        "--rss-cache", type=Path, default=Settings().cache_dir / "embeddings.sqlite", help="embedding cache"
    )
    ap.add_argument("--rss-child", type=Path, default=None, help=argparse.SUPPRESS)
    return ap.parse_args()


def pipeline_rows(args: argparse.Namespace, tmp: Path) -> dict[str, object]:
    """The original rows: encode-only vs the local pipeline into each store."""
    src = tmp / "docs.jsonl"
    docs = []
    with open(src, "w") as f:
        for item in read_source(args.dataset):
            if item.doc is None:
                continue
            f.write(item.doc.model_dump_json() + "\n")
            docs.append(clean_document(item.doc))
            if len(docs) >= args.limit:
                break
    docs = [d for d in docs if not is_empty(d)]
    emb = SentenceTransformerEmbedder(EmbedderConfig(model=args.model))
    emb.warm_up()
    emb.embed(["warm up the model once"] * 8)
    texts = [c.text for d in docs for c in chunk_document(d, emb.tokenizer, emb.max_tokens - 2, 32)[:32]]
    n_tokens = sum(
        len(x)
        for x in emb.tokenizer(texts, add_special_tokens=True, truncation=True, max_length=emb.max_tokens)["input_ids"]
    )
    print(
        f"{len(docs)} docs, {len(texts)} chunks, {n_tokens} tokens, model {args.model}, "
        f"torch threads {__import__('torch').get_num_threads()}"
    )

    def encode_only() -> float:
        t = time.perf_counter()
        emb.embed(texts)
        return time.perf_counter() - t

    # Start Elasticsearch (if needed) before any timing, so its JVM warm-up does not land in one measurement.
    node = None
    es_url = os.environ.get("ELASTICSEARCH_URL")
    if "es" in args.stores.split(",") and not es_url:
        from sift.es_node import LocalElasticsearch

        node = LocalElasticsearch(port=int(os.environ.get("SIFT_BENCH_ES_PORT", "9260")))
        node.wipe()
        es_url = node.start().url
    if es_url:
        warm_up_elasticsearch(es_url, docs, emb.dims)

    results: dict[str, float] = {}
    enc1 = encode_only()
    print(f"encode-only (1st):   {len(docs) / enc1:8.1f} docs/s  {n_tokens / enc1:8.0f} tokens/s")

    for kind in args.stores.split(","):
        if kind == "embedded":
            from search.stores.embedded import EmbeddedStore

            store = EmbeddedStore(tmp / "indices")
        else:
            from search.stores.elasticsearch import ElasticsearchStore

            assert es_url is not None
            store = ElasticsearchStore(es_url)  # type: ignore[assignment]
        cached = CachedEmbedder(emb, EmbeddingCache(tmp / f"cold-cache-{kind}.sqlite"))  # cold: encodes all
        cfg = IndexingConfig(dead_letter_dir=tmp / "dead", progress=False, batch_size=args.batch_size)
        t = time.perf_counter()
        report = IndexingPipeline(store, cached, cfg).build(src, "bench")
        dt = time.perf_counter() - t
        assert report.indexed == len(docs), report
        results[kind] = dt
        print(f"pipeline → {kind:9s} {len(docs) / dt:8.1f} docs/s  ({report.chunks} chunks, {dt:.1f} s)")
        if kind == "es":
            store.client.indices.delete(index="bench-v*", ignore_unavailable=True, allow_no_indices=True)  # type: ignore[attr-defined]
        store.close()
    if node is not None:
        node.stop()

    enc2 = encode_only()
    enc = (enc1 + enc2) / 2
    print(
        f"encode-only (2nd):   {len(docs) / enc2:8.1f} docs/s  {n_tokens / enc2:8.0f} tokens/s"
        f"  (run-to-run spread {abs(enc1 - enc2) / enc:.1%})"
    )
    summary: dict[str, object] = {
        "docs": len(docs),
        "chunks": len(texts),
        "tokens": n_tokens,
        "model": args.model,
        "encode_docs_per_s": len(docs) / enc,
        "encode_tokens_per_s": n_tokens / enc,
    }
    for kind, dt in results.items():
        ratio = enc / dt
        summary[f"{kind}_docs_per_s"] = len(docs) / dt
        summary[f"{kind}_ratio"] = ratio
        verdict = "meets" if ratio >= 0.9 else "BELOW"
        print(f"ratio pipeline/encode-only, {kind:9s} {ratio:6.3f}  ({verdict} the 0.9 goal)")
    return summary


if __name__ == "__main__":
    main()
