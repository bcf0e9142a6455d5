"""Rows of bench/indexing.py for issue 17: the encoders side by side, the Ray Data engine, its peak RSS.

- encoders: docs/s of plain fp32 sentence-transformers, ONNX fp32 and ONNX int8 over the same chunk texts (same
  token window, same threads, rounds interleaved so machine noise hits all three), and dense nDCG@10 on SciFact
  test for fp32 vs int8 (documents score as their best chunk, exact cosine search in numpy).
- ray: the Ray Data engine's docs/s (read, clean, chunk, encode in the actor pool, write, swap) against the same
  actor pool encoding the same chunk texts with nothing else in the stream ("its own encode-only rate").
- rss: peak RSS of the Ray engine (the driver and every process under it: GCS, raylet, workers) for two corpus
  sizes: SciFact repeated with new ids, written into a temporary folder.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from indexing.chunking import chunk_document
from models.embedder import CachedEmbedder, EmbedderConfig, EmbeddingCache, SentenceTransformerEmbedder
from models.ray_session import shutdown_ray

ENCODERS = {"torch-fp32": ("torch", "none"), "onnx-fp32": ("onnx", "none"), "onnx-int8": ("onnx", "int8")}


def _embedder(model: str, name: str, batch: int) -> SentenceTransformerEmbedder:
    backend, quant = ENCODERS[name]
    cfg = EmbedderConfig(model=model, device="cpu", backend=backend, quantize=quant, batch_size=batch)  # type: ignore[arg-type]
    emb = SentenceTransformerEmbedder(cfg)
    emb.warm_up()
    emb.embed(["warm up once"] * 4)
    return emb


def chunk_texts(docs: list[Any], emb: Any) -> list[str]:
    return [c.text for d in docs for c in chunk_document(d, emb.tokenizer, emb.max_tokens - 2, 32)[:32]]


def encoder_rows(docs: list[Any], model: str, rounds: int, batch: int) -> dict[str, Any]:
    """docs/s of each encoder, best of `rounds` interleaved rounds (A B C, C B A, ...)."""
    import torch

    torch.set_num_threads(2)
    encoders = {name: _embedder(model, name, batch) for name in ENCODERS}
    texts = chunk_texts(docs, encoders["torch-fp32"])
    seqs = {n: e.max_tokens for n, e in encoders.items()}
    print(f"encoders: {len(docs)} docs, {len(texts)} chunks, token window {seqs}, threads 2, batch {batch}")
    times: dict[str, list[float]] = {n: [] for n in ENCODERS}
    for r in range(rounds):
        for name in list(ENCODERS)[:: 1 if r % 2 == 0 else -1]:
            t = time.perf_counter()
            encoders[name].embed(texts)
            times[name].append(time.perf_counter() - t)
    out: dict[str, Any] = {"encode_docs": len(docs), "encode_chunks": len(texts)}
    for name, ts in times.items():
        out[f"{name}_docs_per_s"] = len(docs) / min(ts)
        spread = (max(ts) - min(ts)) / min(ts)
        print(f"  {name:10s} {len(docs) / min(ts):7.1f} docs/s (best of {rounds}, spread {spread:.0%})")
    out["int8_speedup"] = out["onnx-int8_docs_per_s"] / out["torch-fp32_docs_per_s"]
    verdict = "meets" if out["int8_speedup"] >= 2 else "BELOW"
    print(f"  int8 / torch fp32: {out['int8_speedup']:.2f}x ({verdict} the 2x goal)")
    return out


def ndcg_rows(
    dataset: Path, docs: list[Any], model: str, cache_path: Path, batch: int, others: int = 0
) -> dict[str, Any]:
    """Dense nDCG@10 on the test split for torch fp32 and ONNX int8 (vectors kept in the shared cache).

    `others` > 0 searches a smaller corpus (every judged document plus that many others), for a slow machine:
    the fp32 - int8 difference is measured on the same corpus either way, the absolute figures are higher."""
    from training.beir import load_beir
    from training.metrics import mean_metrics, per_query_metrics, ranking_to_run

    data = load_beir(dataset, "test")
    if others:
        judged = {d for rel in data.qrels.values() for d in rel}
        rest = [d for d in docs if d.id not in judged][:others]
        docs = [d for d in docs if d.id in judged] + rest
    print(f"nDCG@10 dense over {len(docs)} documents, {len(data.queries)} test queries:")
    out: dict[str, Any] = {"ndcg_corpus_docs": len(docs)}
    for name in ("torch-fp32", "onnx-int8"):
        emb = CachedEmbedder(_embedder(model, name, batch), EmbeddingCache(cache_path))
        ids, owners, texts = [d.id for d in docs], [], []
        for i, d in enumerate(docs):
            for c in chunk_document(d, emb.tokenizer, emb.max_tokens - 2, 32)[:32]:
                owners.append(i)
                texts.append(c.text)
        t = time.perf_counter()
        chunk_vecs = emb.embed(texts)
        qids = list(data.queries)
        q = emb.embed([data.queries[k] for k in qids])
        sims = q @ chunk_vecs.T
        doc_scores = np.full((len(qids), len(ids)), -2.0, dtype=np.float32)
        np.maximum.at(doc_scores.T, np.asarray(owners), sims.T)  # a document scores as its best chunk
        run = {}
        for qi, qid in enumerate(qids):
            top = np.argsort(-doc_scores[qi])[:100]
            run[qid] = ranking_to_run([ids[j] for j in top])
        ndcg = mean_metrics(per_query_metrics(data.qrels, run, ["ndcg@10"]))["ndcg@10"]
        out[f"{name}_ndcg10"] = ndcg
        print(
            f"  nDCG@10 dense, SciFact test, {name}: {ndcg:.4f}"
            f"  ({emb.misses} encoded, {time.perf_counter() - t:.0f} s)"
        )
    out["int8_ndcg10_delta"] = out["onnx-int8_ndcg10"] - out["torch-fp32_ndcg10"]
    verdict = "meets" if abs(out["int8_ndcg10_delta"]) <= 0.005 else "OUTSIDE"
    print(f"  int8 - fp32: {out['int8_ndcg10_delta']:+.4f} ({verdict} the 0.005 goal)")
    return out


def ray_rows(src: Path, docs: list[Any], model: str, enc: str, actors: int, tmp: Path) -> dict[str, Any]:
    """The Ray engine end to end vs its actor pool encoding the same chunks alone; no embedding cache in either."""
    import ray

    from indexing.pipeline import IndexingConfig
    from indexing.ray_engine import RayEngineConfig, RayIndexingPipeline, _EncodeActor
    from search.stores.embedded import EmbeddedStore

    backend, quant = ENCODERS[enc]
    ecfg = EmbedderConfig(model=model, device="cpu", backend=backend, quantize=quant)  # type: ignore[arg-type]
    driver_emb = SentenceTransformerEmbedder(ecfg)
    driver_emb.warm_up()
    texts_per_doc = [
        [c.text for c in chunk_document(d, driver_emb.tokenizer, driver_emb.max_tokens - 2, 32)[:32]] for d in docs
    ]
    rc = RayEngineConfig(encoder_actors=actors, encoder_num_cpus=0.5, encode_batch_docs=64)  # 1 thread each
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        rows = [{"texts": ts} for ts in texts_per_doc]
        t = time.perf_counter()
        ds: Any = ray.data.from_items(rows, override_num_blocks=max(1, len(rows) // 64))
        ds = ds.map_batches(
            _EncodeActor,
            batch_size=rc.encode_batch_docs,
            batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(size=actors),
            num_cpus=rc.encoder_num_cpus,
            fn_constructor_kwargs={"embedder": ecfg.model_dump(mode="json"), "cache_path": None, "gpu": False},
        )
        n = sum(b.num_rows for b in ds.iter_batches(batch_size=256, batch_format="pyarrow"))
        enc_s = time.perf_counter() - t
        assert n == len(docs)
        cfg = IndexingConfig(embedder=ecfg, dead_letter_dir=tmp / "dead", progress=False, batch_size=256)
        t = time.perf_counter()
        report = RayIndexingPipeline(EmbeddedStore(tmp / "ray-indices"), driver_emb, cfg, rc).build(src, "bench")
        pipe_s = time.perf_counter() - t
        assert report.indexed == len(docs), report
    finally:
        shutdown_ray()
    ratio = enc_s / pipe_s
    print(f"ray engine ({enc}, {actors} actors x {rc.encoder_num_cpus} CPU, {len(docs)} docs):")
    print(f"  encode-only (actor pool alone): {len(docs) / enc_s:7.1f} docs/s  (includes its actors' start)")
    print(f"  full pipeline:                  {len(docs) / pipe_s:7.1f} docs/s")
    verdict = "meets" if ratio >= 0.8 else "BELOW"
    print(f"  ratio: {ratio:.3f} ({verdict} the 0.8 goal)")
    return {
        "ray_encoder": enc,
        "ray_docs": len(docs),
        "ray_encode_only_docs_per_s": len(docs) / enc_s,
        "ray_pipeline_docs_per_s": len(docs) / pipe_s,
        "ray_ratio": ratio,
    }


def write_repeated(dataset_docs: list[Any], n: int, path: Path) -> Path:
    """`n` documents: SciFact's corpus over and over, each copy with new ids."""
    with open(path, "w") as f:
        for i in range(n):
            d = dataset_docs[i % len(dataset_docs)]
            f.write(json.dumps({"id": f"{d.id}-r{i // len(dataset_docs)}", "title": d.title, "text": d.body}) + "\n")
    return path


def _tree_rss(pid: int) -> tuple[int, int, int]:
    """(RSS of the process and all its descendants, of its Ray workers, of the process alone) in bytes."""
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
        driver = root.memory_info().rss
    except psutil.Error:
        return 0, 0, 0
    total = workers = 0
    for p in procs:
        try:
            rss = p.memory_info().rss
            total += rss
            if p.name().startswith("ray::") or "default_worker" in " ".join(p.cmdline()[:3]):
                workers += rss
        except psutil.Error:
            continue
    return total, workers, driver


def rss_rows(dataset_docs: list[Any], sizes: list[int], model: str, enc: str, tmp: Path, cache: Path) -> dict[str, Any]:
    """Each size in a fresh process (a fresh Ray), sampled every 0.5 s; peaks of the whole tree and of workers."""
    out: dict[str, Any] = {"rss_encoder": enc}
    for n in sizes:
        src = write_repeated(dataset_docs, n, tmp / f"repeated-{n}.jsonl")
        cmd = [sys.executable, str(Path(__file__).with_name("indexing.py")), "--rss-child", str(src)]
        cmd += ["--model", model, "--rss-encoder", enc, "--rss-cache", str(cache)]
        peak = [0, 0, 0]
        t = time.perf_counter()
        proc = subprocess.Popen(cmd)

        def sample(p: subprocess.Popen[bytes] = proc, pk: list[int] = peak) -> None:
            while p.poll() is None:
                pk[:] = [max(a, b) for a, b in zip(pk, _tree_rss(p.pid), strict=True)]
                time.sleep(0.5)

        th = threading.Thread(target=sample, daemon=True)
        th.start()
        rc = proc.wait()
        th.join()
        secs = time.perf_counter() - t
        if rc != 0:
            raise RuntimeError(f"rss run of {n} docs failed with exit code {rc}")
        out[f"rss_peak_mb_{n}"] = peak[0] / 2**20
        out[f"rss_workers_peak_mb_{n}"] = peak[1] / 2**20
        out[f"rss_driver_peak_mb_{n}"] = peak[2] / 2**20
        out[f"rss_seconds_{n}"] = secs
        mib = [x / 2**20 for x in peak]
        print(f"  {n:6d} docs: peak RSS {mib[0]:6.0f} MiB (workers {mib[1]:5.0f}, driver {mib[2]:5.0f}), {secs:.0f} s")
        src.unlink()
    return out


def rss_child(src: Path, model: str, enc: str, cache: Path) -> None:
    """One Ray engine build of `src` into a throwaway embedded store (run by rss_rows in its own process)."""
    from indexing.pipeline import IndexingConfig
    from indexing.ray_engine import RayEngineConfig, RayIndexingPipeline
    from search.stores.embedded import EmbeddedStore

    backend, quant = ENCODERS[enc]
    ecfg = EmbedderConfig(model=model, device="cpu", backend=backend, quantize=quant)  # type: ignore[arg-type]
    work = Path(tempfile.mkdtemp(prefix="sift-rss-", dir=src.parent))
    rc = RayEngineConfig(encoder_actors=2, encoder_num_cpus=0.5, num_cpus=2, cache_path=cache)
    cfg = IndexingConfig(embedder=ecfg, dead_letter_dir=work / "dead", progress=False, batch_size=256)
    report = RayIndexingPipeline(EmbeddedStore(work / "indices"), SentenceTransformerEmbedder(ecfg), cfg, rc).build(
        src, "rss"
    )
    print(f"  rss run: {report.indexed} indexed, {report.encoded} encoded, {report.cache_hits} cache hits")
