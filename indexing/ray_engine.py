"""`sift reindex --engine ray`: the full build as a Ray Data stream (read → clean + chunk → encode → write).

Why: one process encodes on one machine; Ray Data spreads reading (one task per source file), cleaning and
chunking (CPU tasks) and encoding (an actor pool, one model per actor, GPUs when the cluster has them) over a
cluster, and streams: blocks flow with backpressure and the driver writes them as they arrive, so memory stays
flat however large the corpus. Everything around the stream is the local engine's: `RayIndexingPipeline`
subclasses `IndexingPipeline`, so the build lock, stale-version cleanup, dead letters, retried writes (backoff
on 429), the count check, the quality gate and the compare-and-swap of the alias are the same code.
Encoder actors use the embedding cache, so a rerun after a crash encodes only what the first run had not.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from tqdm import tqdm

from indexing.chunking import chunk_document
from indexing.clean import clean_document, is_empty
from indexing.pipeline import IndexingConfig, IndexingPipeline, IndexReport, _Batch
from indexing.readers import FieldMap, ReadItem, _plan, _read_file, count_records
from indexing.writes import DeadLetter
from models.embedder import Embedder
from models.ray_session import shutdown_ray
from search.documents import Document, StoredRecord
from search.stores.base import IndexStore

log = logging.getLogger("sift.indexing.ray")


class RayEngineConfig(BaseModel):
    """How the Ray Data stream is laid out; the rest (batching of writes, retries, gate) is `IndexingConfig`."""

    model_config = ConfigDict(extra="forbid")

    encoder_actors: int = Field(default=2, ge=1, le=1024, description="Encoder actors (one model each).")
    encoder_num_cpus: float = Field(default=0.5, gt=0, description="CPUs reserved per encoder actor.")
    encoder_num_gpus: float | None = Field(
        default=None, ge=0, description="GPUs per encoder actor; None: 1 when the cluster has GPUs, else 0."
    )
    encode_batch_docs: int = Field(default=64, ge=1, le=10_000, description="Documents per encoder call.")
    doc2query_actors: int = Field(default=1, ge=1, le=1024, description="doc2query actors (one LM each).")
    doc2query_num_cpus: float = Field(default=0.5, gt=0, description="CPUs reserved per doc2query actor.")
    doc2query_num_gpus: float | None = Field(
        default=None, ge=0, description="GPUs per doc2query actor; None: 1 when the cluster has GPUs, else 0."
    )
    chunk_num_cpus: float = Field(default=0.25, gt=0, description="CPUs per read / clean-and-chunk task.")
    read_block_docs: int = Field(default=64, ge=1, description="Records per block a read task emits.")
    max_inflight_writes: int = Field(default=2, ge=1, le=64, description="Bulk writes queued behind the stream.")
    num_cpus: int | None = Field(default=None, ge=1, description="CPUs of a local Ray started here; None: all.")
    object_store_mb: int | None = Field(
        default=None, ge=75, description="Object store of a local Ray started here (MiB); None: Ray's default."
    )
    cache_path: Path | None = Field(
        default=None, description="Embedding cache (SQLite) the encoder actors share; None: no cache."
    )


class RayIndexingPipeline(IndexingPipeline):
    """Full builds through Ray Data; incremental updates stay on the local engine."""

    def __init__(
        self,
        store: IndexStore,
        embedder: Embedder | None,
        config: IndexingConfig | None = None,
        ray_config: RayEngineConfig | None = None,
    ) -> None:
        super().__init__(store, embedder, config)
        self.ray_config = ray_config or RayEngineConfig()
        self._source: Path | None = None

    def build(self, source: Path, index: str) -> IndexReport:
        self._source = Path(source)
        return super().build(source, index)

    def update(self, source: Path | None, index: str, delete_ids: Any = ()) -> IndexReport:
        raise ValueError("incremental updates run on the local engine (sift index --incremental)")

    def _run(
        self, items: Iterable[ReadItem], target: str, report: IndexReport, dead: DeadLetter, *, incremental: bool
    ) -> None:
        """Replaces the local read loop (`items` is never iterated, so the source is read once, by Ray)."""
        assert self._source is not None and not incremental
        started_here = _init_ray(self.ray_config)
        try:
            self._stream(self._source, target, report, dead)
        finally:
            if started_here:
                shutdown_ray()

    # -- the stream -------------------------------------------------------------------------------------
    def _dataset(self, source: Path) -> Any:
        import ray

        ctx = ray.data.DataContext.get_current()
        ctx.execution_options.preserve_order = True  # first occurrence of a duplicate id wins, as locally
        ctx.enable_progress_bars = False  # the driver's tqdm shows docs/s and ETA
        rc, cfg = self.ray_config, self.config
        files = [{"file": str(f), "fmt": fmt, "label": label} for f, fmt, label in _plan(source, cfg.format)]
        ds: Any = ray.data.from_items(files, override_num_blocks=len(files))
        ds = ds.map_batches(
            _read_files,
            batch_size=1,
            batch_format="pyarrow",
            num_cpus=rc.chunk_num_cpus,
            fn_kwargs={"field_map": cfg.field_map.model_dump(), "block": rc.read_block_docs},
        )
        # A read task's small tables are coalesced into one block per task (up to 128 MiB), so one file would
        # reach the encoder pool as one bundle and keep one actor busy; cut the stream back into blocks of
        # `read_block_docs` rows (a streaming repartition, no barrier).
        ds = ds.repartition(target_num_rows_per_block=rc.read_block_docs)
        resources = ray.cluster_resources()
        if cfg.doc2query is not None:  # before cleaning, as locally: the same cache keys serve both engines
            ds = ds.map_batches(
                _Doc2QueryActor,
                batch_size=cfg.doc2query.batch_size,
                batch_format="pyarrow",
                compute=ray.data.ActorPoolStrategy(size=rc.doc2query_actors),
                num_cpus=rc.doc2query_num_cpus,
                num_gpus=_gpus(rc.doc2query_num_gpus, resources),
                fn_constructor_kwargs={"config": cfg.doc2query.model_dump(mode="json")},
            )
        chunk_kw: dict[str, Any] = {"tokenizer": None, "max_tokens": 0, "overlap": 0, "max_chunks": 0}
        if cfg.embed and self.embedder is not None:
            self.embedder.warm_up()
            chunk_kw = {
                "tokenizer": self.embedder.tokenizer,
                "max_tokens": max(8, self.embedder.max_tokens - 2),
                "overlap": cfg.chunk_overlap,
                "max_chunks": cfg.max_chunks,
            }
        ds = ds.map_batches(_clean_chunk, batch_format="pyarrow", num_cpus=rc.chunk_num_cpus, fn_kwargs=chunk_kw)
        if not cfg.embed:
            return ds
        gpus = _gpus(rc.encoder_num_gpus, resources)
        wanted = rc.encoder_actors * rc.encoder_num_cpus + rc.chunk_num_cpus
        if cfg.doc2query is not None:
            wanted += rc.doc2query_actors * rc.doc2query_num_cpus
        if wanted > resources.get("CPU", 0):
            # The actors would hold every CPU and the read / chunk tasks that feed them could never run.
            msg = f"the actors' {wanted - rc.chunk_num_cpus:g} CPUs leave none for the chunk tasks"
            if not os.environ.get("RAY_ADDRESS"):
                raise ValueError(f"{msg}: the local Ray has {resources.get('CPU', 0):g} CPUs")
            log.warning("%s, unless the cluster scales up", msg)
        return ds.map_batches(
            _EncodeActor,
            batch_size=rc.encode_batch_docs,
            batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(size=rc.encoder_actors),
            num_cpus=rc.encoder_num_cpus,
            num_gpus=gpus,
            fn_constructor_kwargs={
                "embedder": cfg.embedder.model_dump(mode="json"),
                "cache_path": str(rc.cache_path) if rc.cache_path else None,
                "gpu": gpus > 0,
            },
        )

    def _stream(self, source: Path, target: str, report: IndexReport, dead: DeadLetter) -> None:
        ds = self._dataset(source)
        seen: set[str] = set()
        skipped: Counter[str] = Counter()
        pending: list[Future[None]] = []
        bar = tqdm(
            total=count_records(source, self.config.format),
            desc="reindex[ray]",
            unit="doc",
            disable=not self.config.progress,
            mininterval=1.0,
        )
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="sift-ray-writer") as writer, bar:
            for table in ds.iter_batches(batch_size=self.config.batch_size, batch_format="pyarrow", prefetch_batches=1):
                rows = table.to_pylist()
                batch, records = self._account(rows, report, dead, seen, skipped)
                while len(pending) >= self.ray_config.max_inflight_writes:
                    pending.pop(0).result()
                if records:
                    pending.append(writer.submit(self._write, target, batch, records, report, dead))
                bar.update(len(rows))
            for f in pending:
                f.result()
        report.dead_lettered = dead.count
        report.skipped += sum(skipped.values())
        for k, v in skipped.items():
            report.skipped_reasons[k] = report.skipped_reasons.get(k, 0) + v

    def _account(
        self, rows: list[dict[str, Any]], report: IndexReport, dead: DeadLetter, seen: set[str], skipped: Counter[str]
    ) -> tuple[_Batch, list[StoredRecord]]:
        """Every row lands in one bucket (dead letter, skipped, or a record to write), as in the local engine."""
        batch = _Batch()
        records: list[StoredRecord] = []
        for row in rows:
            report.read += 1
            # An encoder call's counts ride on its first row, whatever becomes of that row.
            report.cache_hits += row.get("hits") or 0
            report.encoded += row.get("encoded") or 0
            if row["status"] == "dead":
                raw = json.loads(row["raw"]) if row["raw"] else None
                dead.add(stage="read", reason=row["reason"], doc_id=None, position=row["position"], record=raw)
                continue
            if row["id"] in seen:
                skipped["duplicate id in source"] += 1
                continue
            seen.add(row["id"])
            if row["status"] == "skip":
                skipped[row["reason"]] += 1
                continue
            doc = Document.model_validate_json(row["doc"])
            record = StoredRecord(doc=doc, content_hash=row["hash"])
            if "vectors" in row:  # an embedding build; BM25-only builds carry no vectors column
                blob = row["vectors"]
                spans = [(int(s), int(e)) for s, e in row["spans"]]
                if blob:
                    record.vectors = np.frombuffer(blob, dtype=np.float32).reshape(len(spans), -1).tolist()
                    record.chunk_spans = spans
                report.chunks += len(spans)
            records.append(record)
            batch.positions[doc.id] = row["position"]
        return batch, records


def _gpus(configured: float | None, resources: dict[str, float]) -> float:
    """GPUs per actor: as configured, else one when the cluster has any."""
    if configured is not None:
        return configured
    return 1.0 if resources.get("GPU", 0) > 0 else 0.0


def _init_ray(rc: RayEngineConfig) -> bool:
    """Join RAY_ADDRESS's cluster, or start a local Ray without a dashboard; True when started here."""
    import ray

    if ray.is_initialized():
        return False
    address = os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    else:
        mem = rc.object_store_mb * 2**20 if rc.object_store_mb else None
        ray.init(num_cpus=rc.num_cpus, object_store_memory=mem, include_dashboard=False, log_to_driver=False)
    return True


# -- stages (run in Ray workers; module-level so they pickle by reference) ---------------------------------

_READ_SCHEMA = ("position", "doc", "error", "raw")


def _read_files(files: Any, field_map: dict[str, Any], block: int) -> Iterator[Any]:
    """Each source file read with the local engine's readers, emitted in blocks of `block` records."""
    import pyarrow as pa

    fm = FieldMap.model_validate(field_map)
    for spec in files.to_pylist():
        rows: list[dict[str, str]] = []
        for item in _read_file(Path(spec["file"]), spec["fmt"], spec["label"], fm):
            rows.append(
                {
                    "position": item.position,
                    "doc": item.doc.model_dump_json() if item.doc is not None else "",
                    "error": item.error or "",
                    "raw": json.dumps(item.raw, default=str) if item.doc is None and item.raw is not None else "",
                }
            )
            if len(rows) >= block:
                yield pa.Table.from_pylist(rows)
                rows = []
        if rows:
            yield pa.Table.from_pylist(rows)


def _clean_chunk(batch: Any, tokenizer: Any, max_tokens: int, overlap: int, max_chunks: int) -> Any:
    """Clean each document and cut it into the encoder's windows; unreadable, deleted, empty ones are marked."""
    import pyarrow as pa

    out: list[dict[str, Any]] = []
    for row in batch.to_pylist():
        rec: dict[str, Any] = {"position": row["position"], "id": "", "status": "ok", "reason": "", "raw": row["raw"]}
        rec.update(doc="", hash="", texts=[], spans=[])
        if not row["doc"]:
            rec.update(status="dead", reason=row["error"] or "unreadable record")
            out.append(rec)
            continue
        doc = Document.model_validate_json(row["doc"])
        rec["id"] = doc.id
        if doc.deleted:
            rec.update(status="skip", reason="marked deleted")
        else:
            doc = clean_document(doc)
            if is_empty(doc):
                rec.update(status="skip", reason="empty after cleaning")
            else:
                chunks = chunk_document(doc, tokenizer, max_tokens, overlap)[:max_chunks] if tokenizer else []
                rec.update(
                    doc=doc.model_dump_json(),
                    hash=doc.content_hash(),
                    texts=[c.text for c in chunks],
                    spans=[[c.start, c.end] for c in chunks],
                )
        out.append(rec)
    schema = pa.schema(
        [
            *[(k, pa.string()) for k in ("position", "id", "status", "reason", "raw", "doc", "hash")],
            ("texts", pa.list_(pa.string())),
            ("spans", pa.list_(pa.list_(pa.int64()))),
        ]
    )
    return pa.Table.from_pylist(out, schema=schema)


class _EncodeActor:
    """One model per actor, behind the shared embedding cache: a rerun encodes only what is not cached."""

    def __init__(self, embedder: dict[str, Any], cache_path: str | None, gpu: bool) -> None:
        from models.embedder import CachedEmbedder, EmbedderConfig, EmbeddingCache, SentenceTransformerEmbedder

        cfg = EmbedderConfig.model_validate(embedder)
        if not gpu and cfg.device is None:
            cfg = cfg.model_copy(update={"device": "cpu"})
        base = SentenceTransformerEmbedder(cfg)
        self.embedder: Embedder = CachedEmbedder(base, EmbeddingCache(cache_path)) if cache_path else base
        self.embedder.warm_up()

    def __call__(self, batch: Any) -> Any:
        import pyarrow as pa

        texts_col = batch.column("texts").to_pylist()
        texts = [t for ts in texts_col for t in ts]
        hits_before = getattr(self.embedder, "hits", 0)
        vecs = self.embedder.embed(texts) if texts else np.zeros((0, 1), dtype=np.float32)
        hits = getattr(self.embedder, "hits", 0) - hits_before
        blobs: list[bytes | None] = []
        i = 0
        for ts in texts_col:
            blobs.append(np.ascontiguousarray(vecs[i : i + len(ts)], dtype=np.float32).tobytes() if ts else None)
            i += len(ts)
        n = batch.num_rows
        hits_col = [hits] + [0] * (n - 1) if n else []
        encoded_col = [len(texts) - hits] + [0] * (n - 1) if n else []
        out = batch.drop_columns(["texts"])
        out = out.append_column("vectors", pa.array(blobs, type=pa.binary()))
        out = out.append_column("hits", pa.array(hits_col, type=pa.int64()))
        return out.append_column("encoded", pa.array(encoded_col, type=pa.int64()))


class _Doc2QueryActor:
    """One doc2query LM per actor: adds the queries it writes to each live document, cached by content hash
    (`indexing/doc2query.py`), so a rerun or a later reindex regenerates only new and changed documents."""

    def __init__(self, config: dict[str, Any]) -> None:
        from indexing.doc2query import Doc2QueryConfig, Doc2QueryExpander

        # No eager warm_up: the LM loads on the first document the cache lacks, so a rebuild whose queries are
        # all cached never loads it (the relevance filter's embedder loads on first use too).
        self.expander = Doc2QueryExpander(Doc2QueryConfig.model_validate(config))

    def __call__(self, batch: Any) -> Any:
        import pyarrow as pa

        rows = batch.to_pylist()
        live: list[tuple[int, Document]] = []
        for i, row in enumerate(rows):
            if row["doc"]:
                doc = Document.model_validate_json(row["doc"])
                if not doc.deleted:
                    live.append((i, doc))
        if live:
            for (i, _), doc in zip(live, self.expander.expand([d for _, d in live]), strict=True):
                rows[i]["doc"] = doc.model_dump_json()
        return pa.Table.from_pylist(rows, schema=batch.schema)
