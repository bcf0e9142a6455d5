"""The indexing pipeline: read → clean → chunk → embed → bulk write → (full builds) swap the alias.

A full build holds the index's build lock, writes a new version and moves the alias (compare-and-swap, through
`indexing.finalize`) only when every document is accounted for, the store's count matches and the quality gate
passes, so any failure, even SIGKILL, leaves readers on the previous version.
Every record read ends up in exactly one bucket: indexed, deleted, dead-lettered or skipped.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from tqdm import tqdm

from indexing.chunking import chunk_document
from indexing.clean import clean_document, is_empty
from indexing.doc2query import Doc2QueryConfig, Doc2QueryExpander, expand_stream
from indexing.errors import IndexingError
from indexing.finalize import DEFAULT_LEASE_S, build_lock, finalize_build
from indexing.gate import GateConfig, GateRefused, GateResult, JudgmentEvaluator
from indexing.readers import FieldMap, ReadItem, count_records, read_source
from indexing.writes import DeadLetter, delete_with_retries, upsert_with_retries
from models.embedder import Embedder, EmbedderConfig
from search.documents import Document, StoredRecord, bm25_text
from search.schema import IndexSchema
from search.stores.base import IndexNotFound, IndexStore, StoreError
from search.stores.synonym_stores import apply_config_synonyms
from search.synonyms import SynonymSets
from search.vocabulary import VocabularyCounter, save_vocabulary

log = logging.getLogger("sift.indexing")


class IndexingConfig(BaseModel):
    """Everything a run needs besides the source, the index name and the store; loadable from YAML."""

    model_config = ConfigDict(extra="forbid")

    embedder: EmbedderConfig = Field(default_factory=EmbedderConfig, description="The document encoder.")
    embed: bool = Field(default=True, description="Write vectors; False builds a BM25-only index.")
    batch_size: int = Field(default=128, ge=1, le=10_000, description="Documents per bulk write.")
    chunk_overlap: int = Field(default=32, ge=0, description="Tokens shared by consecutive chunks.")
    max_chunks: int = Field(default=32, ge=1, description="Chunks embedded per document; the rest is BM25-only.")
    schema_: IndexSchema = Field(default_factory=IndexSchema, alias="schema", description="Filterable fields.")
    field_map: FieldMap = Field(default_factory=FieldMap, description="Source keys → document fields.")
    format: str | None = Field(default=None, description="jsonl|csv|parquet|beir; None detects from the path.")
    keep_versions: int = Field(default=2, ge=1, description="Complete versions kept after a swap (current included).")
    dead_letter_dir: Path = Field(default=Path(".data/dead-letter"), description="Where refused records go.")
    progress: bool = Field(default=True, description="Show progress bars on stderr.")
    gate: GateConfig | None = Field(default=None, description="Quality gate before the swap; None: no gate.")
    lock_lease_s: float = Field(
        default=DEFAULT_LEASE_S, gt=0, description="Build lock lease (renewed every third): a dead build's limit."
    )
    write_retries: int = Field(
        default=5, ge=0, le=20, description="Retries of transiently refused records (429, disk) before failing."
    )
    doc2query: Doc2QueryConfig | None = Field(
        default=None, description="Expansion: queries the tuned LM writes per document, BM25 only; None: off."
    )
    retry_backoff_s: float = Field(default=1.0, ge=0, description="First retry's wait; doubles, capped at 30 s.")
    synonyms: SynonymSets | None = Field(
        default=None,
        description="The index's synonym sets (`sets: [{type: synonym, synonyms: [..]}, {type: oneway, input: .., "
        "synonyms: [..]}]`), written for the alias after a build or update; None: the stored sets are left alone.",
    )


class IndexReport(BaseModel):
    """The end-of-run account; `read == indexed + deleted + dead_lettered + skipped` always holds."""

    index: str
    version: str | None
    mode: Literal["full", "incremental"]
    read: int = 0
    indexed: int = 0
    deleted: int = 0
    delete_failed: int = 0  # refused deletions (dead-lettered too), never counted in `deleted`
    dead_lettered: int = 0
    skipped: int = 0
    skipped_reasons: dict[str, int] = Field(default_factory=dict)
    chunks: int = 0
    encoded: int = 0
    cache_hits: int = 0
    seconds: float = 0.0
    alias_switched: bool = False
    gate: GateResult | None = None
    dead_letter_file: str | None = None

    @property
    def balanced(self) -> bool:
        return self.read == self.indexed + self.deleted + self.dead_lettered + self.skipped


class _Batch(BaseModel):
    model_config = ConfigDict(arbitrary_types_allowed=True)
    docs: list[Document] = Field(default_factory=list)
    positions: dict[str, str] = Field(default_factory=dict)
    deletes: list[str] = Field(default_factory=list)


class IndexingPipeline:
    """Runs full or incremental builds of one index into one store."""

    def __init__(self, store: IndexStore, embedder: Embedder | None, config: IndexingConfig | None = None) -> None:
        self.store = store
        self.embedder = embedder
        self.config = config or IndexingConfig()
        if self.config.embed and embedder is None:
            raise ValueError("config.embed is true but no embedder was given")
        self._vocab: VocabularyCounter | None = None  # a full build's vocabulary, counted as it writes

    # -- public entry points ----------------------------------------------------------------------------
    def build(self, source: Path, index: str) -> IndexReport:
        """Full build into a new version under the index's build lock; the alias moves only if everything is
        accounted for and the gate passes. A refused version is kept (incomplete: never served) for inspection."""
        started = time.perf_counter()
        self.store.warm_up()
        gate = self.config.gate
        # Judgments are read before the build starts: a wrong path fails in a second, not after the build.
        evaluator = JudgmentEvaluator(self.store, gate, self.embedder if self.config.embed else None) if gate else None
        with build_lock(self.store, index, self.config.lock_lease_s) as held:
            self._drop_stale_versions(index)  # under the lock: only dead builds leave incomplete versions
            expected = self.store.current_version(index)
            dims = self._dims()
            version = self.store.create_version(index, dims, self.config.schema_)
            log.info("building %s into new version %s (live: %s)", index, version, expected)
            report = IndexReport(index=index, version=version, mode="full")
            dead = DeadLetter(self._dead_letter_path(index, version))
            try:
                self._vocab = VocabularyCounter()
                self._run(self._items(source), version, report, dead, incremental=False)
                if not report.balanced:
                    raise IndexingError(f"accounting mismatch: {report.model_dump()}")
                self.store.refresh(version)  # typo tolerance's vocabulary, stored at the stamp searches will see
                save_vocabulary(self.store, version, self._vocab)
                held.check()
                done = finalize_build(
                    self.store,
                    index,
                    version,
                    expected_live=expected,
                    indexed=report.indexed,
                    gate=gate,
                    evaluator=evaluator,
                )
                report.alias_switched, report.gate = True, done.gate
            except GateRefused as exc:
                log.error("%s", exc)
                raise
            except BaseException:
                log.error("build of %s failed; alias left on %s", index, self._safe_current(index))
                self._safe_drop(version)
                raise
            finally:
                dead.close()
                self._vocab = None
            self._prune(index, expected)
            apply_config_synonyms(self.store, index, self.config.synonyms)  # search/synonyms.py
        return self._finish(report, dead, started)

    def update(self, source: Path | None, index: str, delete_ids: Sequence[str] = ()) -> IndexReport:
        """Incremental run: upsert changed documents and apply deletions in the live version, under the build
        lock (a full build running meanwhile would swap to a version without these changes)."""
        started = time.perf_counter()
        self.store.warm_up()
        version = self.store.current_version(index)
        if version is None:
            raise IndexNotFound(f"index {index!r} does not exist: run a full build first")
        report = IndexReport(index=index, version=version, mode="incremental")
        dead = DeadLetter(self._dead_letter_path(index, version))
        with build_lock(self.store, index, self.config.lock_lease_s):
            self._update(source, version, delete_ids, report, dead)
            apply_config_synonyms(self.store, index, self.config.synonyms)
        return self._finish(report, dead, started)

    def _update(
        self, source: Path | None, version: str, delete_ids: Sequence[str], report: IndexReport, dead: DeadLetter
    ) -> None:
        try:
            items: Iterable[ReadItem] = self._items(source) if source is not None else []
            id_items = (
                ReadItem(position=f"delete-ids:{i + 1}", doc=Document(id=d, deleted=True), error=None, raw={"id": d})
                for i, d in enumerate(delete_ids)
            )
            self._run(itertools.chain(items, id_items), version, report, dead, incremental=True)
            self.store.refresh(version)
        finally:
            dead.close()

    # -- internals ------------------------------------------------------------------------------------
    def _dims(self) -> int:
        if not self.config.embed or self.embedder is None:
            return 1  # a placeholder: BM25-only indices store no vectors
        self.embedder.warm_up()
        return self.embedder.dims

    def _items(self, source: Path) -> Iterator[ReadItem]:
        total = count_records(source, self.config.format)
        bar = tqdm(
            read_source(source, self.config.format, self.config.field_map),
            total=total,
            desc="index",
            unit="doc",
            disable=not self.config.progress,
            mininterval=1.0,
        )
        if self.config.doc2query is None:
            yield from bar
            return
        expander = Doc2QueryExpander(self.config.doc2query)  # cached by content hash: unchanged docs are free
        try:
            yield from expand_stream(bar, expander, self.config.doc2query.batch_size)
        finally:
            log.info("doc2query: %s", expander.stats)
            expander.close()

    def _run(
        self, items: Iterable[ReadItem], target: str, report: IndexReport, dead: DeadLetter, *, incremental: bool
    ) -> None:
        skipped: Counter[str] = Counter()
        seen: set[str] = set()
        batch = _Batch()
        pending: list[Future[None]] = []
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="sift-writer") as writer:

            def flush() -> None:
                nonlocal batch
                if not batch.docs and not batch.deletes:
                    return
                records = self._prepare(batch, target, report, skipped, incremental)
                # Encoding the next batch overlaps with this write; keep at most two in flight.
                while len(pending) >= 2:
                    pending.pop(0).result()
                pending.append(writer.submit(self._write, target, batch, records, report, dead))
                batch = _Batch()

            for item in items:
                report.read += 1
                if item.doc is None:
                    dead.add(
                        stage="read",
                        reason=item.error or "unreadable record",
                        doc_id=None,
                        position=item.position,
                        record=item.raw,
                    )
                    continue
                doc = item.doc
                if doc.id in seen:
                    skipped["duplicate id in source"] += 1
                    continue
                seen.add(doc.id)
                if doc.deleted:
                    if incremental:
                        batch.deletes.append(doc.id)
                    else:
                        skipped["marked deleted"] += 1
                        continue
                else:
                    doc = clean_document(doc)
                    if is_empty(doc):
                        skipped["empty after cleaning"] += 1
                        continue
                    batch.docs.append(doc)
                    batch.positions[doc.id] = item.position
                if len(batch.docs) + len(batch.deletes) >= self.config.batch_size:
                    flush()
            flush()
            for f in pending:
                f.result()
        report.dead_lettered = dead.count
        report.skipped += sum(skipped.values())
        for k, v in skipped.items():
            report.skipped_reasons[k] = report.skipped_reasons.get(k, 0) + v

    def _prepare(
        self, batch: _Batch, target: str, report: IndexReport, skipped: Counter[str], incremental: bool
    ) -> list[StoredRecord]:
        docs = batch.docs
        hashes = {d.id: d.content_hash() for d in docs}
        if incremental and docs:
            stored = self.store.get_hashes(target, [d.id for d in docs])
            unchanged = [d for d in docs if stored.get(d.id) == hashes[d.id]]
            if unchanged:
                skipped["unchanged"] += len(unchanged)
                keep = {d.id for d in docs} - {d.id for d in unchanged}
                docs = [d for d in docs if d.id in keep]
        if not self.config.embed or self.embedder is None:
            return [StoredRecord(doc=d, content_hash=hashes[d.id]) for d in docs]
        emb = self.embedder
        per_doc = []
        texts: list[str] = []
        for d in docs:
            chunks = chunk_document(d, emb.tokenizer, max(8, emb.max_tokens - 2), self.config.chunk_overlap)
            chunks = chunks[: self.config.max_chunks]
            per_doc.append(chunks)
            texts.extend(c.text for c in chunks)
        before_hits = getattr(emb, "hits", 0)
        vecs = emb.embed(texts)
        hits = getattr(emb, "hits", 0) - before_hits
        report.cache_hits += hits
        report.encoded += len(texts) - hits
        report.chunks += len(texts)
        records = []
        i = 0
        for d, chunks in zip(docs, per_doc, strict=True):
            n = len(chunks)
            records.append(
                StoredRecord(
                    doc=d,
                    vectors=vecs[i : i + n].tolist(),
                    chunk_spans=[(c.start, c.end) for c in chunks],
                    content_hash=hashes[d.id],
                )
            )
            i += n
        return records

    def _write(
        self, target: str, batch: _Batch, records: list[StoredRecord], report: IndexReport, dead: DeadLetter
    ) -> None:
        retries, backoff = self.config.write_retries, self.config.retry_backoff_s
        if batch.deletes:
            n, refused = delete_with_retries(self.store, target, batch.deletes, retries=retries, backoff_s=backoff)
            for f in refused:
                dead.add(stage="delete", reason=f.reason, doc_id=f.id, position=batch.positions.get(f.id), record=None)
            report.deleted += len(batch.deletes) - len(refused)
            report.delete_failed += len(refused)
            log.info("deleted %d of %d ids (%d refused)", n, len(batch.deletes), len(refused))
        if not records:
            return
        result = upsert_with_retries(self.store, target, records, retries=retries, backoff_s=backoff)
        by_id = {r.doc.id: r for r in records}
        for f in result.failures:
            rec = by_id.get(f.id)
            dead.add(
                stage="write",
                reason=f.reason,
                doc_id=f.id,
                position=batch.positions.get(f.id),
                record=rec.doc.model_dump(mode="json") if rec else None,
            )
        report.indexed += result.written
        if self._vocab is not None:
            failed = {f.id for f in result.failures}
            self._vocab.add(bm25_text(r.doc) for r in records if r.doc.id not in failed)
        log.info(
            "batch written: %d docs (%d failed), %d indexed so far",
            result.written,
            len(result.failures),
            report.indexed,
        )

    def _dead_letter_path(self, index: str, version: str) -> Path:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        return self.config.dead_letter_dir / f"{version}-{stamp}.jsonl"

    def _finish(self, report: IndexReport, dead: DeadLetter, started: float) -> IndexReport:
        report.seconds = round(time.perf_counter() - started, 3)
        report.dead_letter_file = str(dead.path) if dead.count else None
        if not report.balanced:
            raise IndexingError(f"accounting mismatch: {report.model_dump()}")
        return report

    def _drop_stale_versions(self, index: str) -> None:
        """Versions left incomplete by a crashed build are never served; remove them."""
        current = self.store.current_version(index)
        for v in self.store.list_versions(index):
            if not v.complete and v.version != current:
                log.info("dropping incomplete version %s left by an earlier run", v.version)
                self._safe_drop(v.version)

    def _prune(self, index: str, previous: str | None = None) -> None:
        """Keep the live version and the newest others up to `keep_versions`, the one the build replaced
        (`previous`) first: after a rollback from a bad version, the fallback is the good one that was live, not
        the newer bad one."""
        current = self.store.current_version(index)
        complete = [v.version for v in self.store.list_versions(index) if v.complete and v.version != current]
        if previous in complete:  # dropped last: move it to the newest end
            complete = [v for v in complete if v != previous] + [previous]
        for version in complete[: max(0, len(complete) - (self.config.keep_versions - 1))]:
            self._safe_drop(version)

    def _safe_drop(self, version: str) -> None:
        try:
            self.store.drop_version(version)
        except (StoreError, ValueError, OSError) as exc:
            log.warning("could not drop version %s: %s", version, exc)

    def _safe_current(self, index: str) -> str | None:
        try:
            return self.store.current_version(index)
        except StoreError:
            return None
