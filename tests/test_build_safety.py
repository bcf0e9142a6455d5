"""Safe builds against both real stores: one build per index at a time, transient refusals retried (or the build
fails and the alias stays), refused deletions reported, superseded versions closed, a corrupt cache survived."""

from __future__ import annotations

import logging
import os
import sqlite3
import time
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from indexing.finalize import build_lock
from indexing.pipeline import IndexingError, IndexingPipeline
from models.embedder import CachedEmbedder, Embedder, EmbeddingCache
from search.documents import StoredRecord
from search.stores.base import DocFailure, IndexStore, LockHeld, WriteResult
from search.stores.embedded import EmbeddedStore
from search.stores.es_bulk import item_failure
from tests.test_pipeline import cached, corpus, make_config, store, write_jsonl

__all__ = ["cached", "store"]  # fixtures shared with test_pipeline: both real stores, the cached tiny embedder


class Refusing:
    """The real store underneath, but a share of records is refused with 429 for their first `times` attempts
    (times=None: always), as a busy cluster's bulk API does."""

    def __init__(self, inner: IndexStore, share: float, times: int | None) -> None:
        self.inner, self.share, self.times = inner, share, times
        self.attempts: dict[str, int] = {}
        self.refused = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def upsert(self, target: str, records: Sequence[StoredRecord]) -> WriteResult:
        passed, failures = [], []
        for r in records:
            n = self.attempts[r.doc.id] = self.attempts.get(r.doc.id, 0) + 1
            unlucky = zlib.crc32(r.doc.id.encode()) % 100 < self.share * 100
            if unlucky and (self.times is None or n <= self.times):
                reason = "es_rejected_execution_exception: rejected execution (queue capacity 200)"
                failures.append(DocFailure(id=r.doc.id, reason=reason, status=429, transient=True))
            else:
                passed.append(r)
        self.refused += len(failures)
        result = self.inner.upsert(target, passed)
        return WriteResult(written=result.written, failures=[*result.failures, *failures])


def test_second_build_fails_fast_and_leaves_the_first_alone(
    store: IndexStore, cached: CachedEmbedder, tmp_path: Path, index_name: str
) -> None:
    src = write_jsonl(tmp_path / "a.jsonl", corpus(20))
    live = IndexingPipeline(store, cached, make_config(tmp_path)).build(src, index_name)
    with build_lock(store, index_name, lease_s=60, owner="the-first-build") as held:
        assert held.lock.lease.owner == "the-first-build"
        in_progress = store.create_version(index_name, 4, make_config(tmp_path).schema_)  # its half-built version
        started = time.monotonic()
        with pytest.raises(LockHeld, match="the-first-build"):
            IndexingPipeline(store, cached, make_config(tmp_path)).build(src, index_name)
        assert time.monotonic() - started < 10
        with pytest.raises(LockHeld, match="the-first-build"):  # nor may an incremental run write meanwhile
            IndexingPipeline(store, cached, make_config(tmp_path)).update(None, index_name, ["doc1"])
        # The second build neither dropped the first one's version as "stale" nor created one of its own.
        assert [v.version for v in store.list_versions(index_name)] == [live.version, in_progress]
        assert store.count(index_name) == 20 and store.get(index_name, "doc1") is not None
    report = IndexingPipeline(store, cached, make_config(tmp_path)).build(src, index_name)  # lock released
    assert report.alias_switched and store.count(index_name) == 20


def test_lease_is_renewed_while_the_build_runs(store: IndexStore, index_name: str) -> None:
    with build_lock(store, index_name, lease_s=2.0) as held:
        time.sleep(4.5)  # over twice the lease: only the heartbeat (every 0.67 s) keeps it
        with pytest.raises(LockHeld):
            store.acquire_build_lock(index_name, "second", 60)
        held.check()  # not lost
    store.acquire_build_lock(index_name, "second", 60).release()  # released on exit


def test_transient_refusals_are_retried_to_success(
    store: IndexStore, cached: CachedEmbedder, tmp_path: Path, index_name: str
) -> None:
    busy = Refusing(store, share=0.3, times=2)
    cfg = make_config(tmp_path, write_retries=3, retry_backoff_s=0.01)
    report = IndexingPipeline(busy, cached, cfg).build(  # type: ignore[arg-type]
        write_jsonl(tmp_path / "b.jsonl", corpus(60)), index_name
    )
    assert busy.refused >= 0.2 * 60 * 2  # ~30% of records, twice each
    assert report.indexed == 60 and report.dead_lettered == 0 and report.alias_switched
    assert store.count(index_name) == 60


def test_refusals_left_after_retries_fail_the_build(
    store: IndexStore, cached: CachedEmbedder, tmp_path: Path, index_name: str
) -> None:
    first = IndexingPipeline(store, cached, make_config(tmp_path)).build(
        write_jsonl(tmp_path / "c.jsonl", corpus(10)), index_name
    )
    full = Refusing(store, share=0.3, times=None)
    cfg = make_config(tmp_path, write_retries=2, retry_backoff_s=0.01)
    with pytest.raises(IndexingError, match="still refused after 2 retries"):
        IndexingPipeline(full, cached, cfg).build(write_jsonl(tmp_path / "d.jsonl", corpus(40, "new")), index_name)  # type: ignore[arg-type]
    assert store.current_version(index_name) == first.version and store.count(index_name) == 10
    assert [v.version for v in store.list_versions(index_name)] == [first.version]  # the failed one dropped
    assert not (tmp_path / "dead").exists() or not any((tmp_path / "dead").iterdir())  # none dead-lettered


def test_bulk_item_classification() -> None:
    flood = {
        "_id": "a",
        "status": 429,
        "error": {
            "type": "cluster_block_exception",
            "reason": "index [x] blocked by: [TOO_MANY_REQUESTS/12/disk usage exceeded flood-stage watermark, "
            "index has read-only-allow-delete block];",
        },
    }
    blocked = {
        "_id": "b",
        "status": 403,
        "error": {
            "type": "cluster_block_exception",
            "reason": "index [x] blocked by: [FORBIDDEN/8/index write (api)];",
        },
    }
    mapping = {"_id": "c", "status": 400, "error": {"type": "document_parsing_exception", "reason": "year"}}
    assert item_failure(flood).transient and item_failure(flood).status == 429
    assert not item_failure(blocked).transient and not item_failure(mapping).transient


@pytest.mark.es
def test_es_refusals_are_classified_and_deletes_reported(es_url: str, tmp_path: Path, index_name: str) -> None:
    from search.stores.elasticsearch import ElasticsearchStore

    es = ElasticsearchStore(es_url)
    try:
        report = IndexingPipeline(es, None, make_config(tmp_path, embed=False)).build(
            write_jsonl(tmp_path / "e.jsonl", corpus(10)), index_name
        )
        version = report.version
        # A flood-stage block (what a full disk sets) refuses writes transiently. ES's disk monitor lifts that
        # block from indices on a node with room (on its 30 s round), which can land between the two calls: the
        # block is set again then, at most three times.
        doc = es.get(index_name, "doc1")
        assert doc is not None
        for _ in range(3):
            es.client.indices.put_settings(index=version, settings={"index.blocks.read_only_allow_delete": True})
            result = es.upsert(version, [StoredRecord(doc=doc)])
            if result.written == 0:
                break
        assert result.written == 0 and result.failures[0].transient, result
        es.client.indices.put_settings(index=version, settings={"index.blocks.read_only_allow_delete": None})
        # A write block set by an operator refuses deletions for good: reported, dead-lettered, not "deleted".
        es.client.indices.put_settings(index=version, settings={"index.blocks.write": True})
        upd = IndexingPipeline(es, None, make_config(tmp_path, embed=False, retry_backoff_s=0.01))
        out = upd.update(None, index_name, ["doc1", "doc2"])
        assert out.delete_failed == 2 and out.deleted == 0 and out.dead_lettered == 2 and out.balanced
        es.client.indices.put_settings(index=version, settings={"index.blocks.write": None})
        assert es.get(index_name, "doc1") is not None and es.count(index_name) == 10
    finally:
        es.client.indices.delete(index=f"{index_name}-v*", ignore_unavailable=True, allow_no_indices=True)
        es.close()


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_reindexing_closes_superseded_versions(tmp_path: Path, index_name: str) -> None:
    """A long-lived reader (a server) and a builder share a data dir: N reindexes leave one version open."""
    reader = EmbeddedStore(tmp_path / "data", retire_grace_s=0)
    builder = EmbeddedStore(tmp_path / "data", retire_grace_s=0)
    src = write_jsonl(tmp_path / "f.jsonl", corpus(30))
    pipeline = IndexingPipeline(builder, None, make_config(tmp_path, embed=False, keep_versions=1))
    counts = []
    try:
        for _ in range(6):
            report = pipeline.build(src, index_name)
            assert [h.id for h in reader.bm25_search(index_name, "classes objects", 3)]
            assert reader.count(index_name) == 30
            assert list(reader.open_versions()) == [report.version]
            assert len(builder.open_versions()) <= 1
            counts.append(_fds())
        assert counts[-1] <= counts[1], counts  # no file handle left behind per reindex
    finally:
        reader.close()
        builder.close()
    assert reader.open_versions() == {}


def test_embedding_cache_survives_corrupt_entries(
    tiny_embedder: Embedder, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    texts = [f"note {i} on loops and files" for i in range(6)]
    path = tmp_path / "emb.sqlite"
    fresh = CachedEmbedder(tiny_embedder, EmbeddingCache(path)).embed(texts)
    keys = [EmbeddingCache.key(tiny_embedder.model_id, t) for t in texts]
    with sqlite3.connect(path) as c:
        c.execute("UPDATE emb SET v = substr(v, 1, 7) WHERE k = ?", (keys[0],))  # torn write: not whole floats
        c.execute("UPDATE emb SET v = substr(v, 1, 64) WHERE k = ?", (keys[1],))  # truncated to fewer dims
        nan = np.full(tiny_embedder.dims, np.nan, dtype=np.float32).tobytes()
        c.execute("UPDATE emb SET v = ? WHERE k = ?", (nan, keys[2]))
    again = CachedEmbedder(tiny_embedder, EmbeddingCache(path))
    with caplog.at_level(logging.WARNING, logger="sift.embedder"):
        vecs = again.embed(texts)
    assert np.allclose(vecs, fresh, atol=1e-5)
    assert again.misses == 3 and again.hits == 3
    assert "3 corrupt or truncated" in caplog.text
    third = CachedEmbedder(tiny_embedder, EmbeddingCache(path))  # rewritten: all hits now
    assert np.allclose(third.embed(texts), fresh, atol=1e-5) and third.hits == 6 and third.misses == 0

    garbage = tmp_path / "garbage.sqlite"
    garbage.write_bytes(b"this is not a database" * 100)
    broken = CachedEmbedder(tiny_embedder, EmbeddingCache(garbage))
    assert np.allclose(broken.embed(texts), fresh, atol=1e-5)  # encoded without the cache, with a warning
