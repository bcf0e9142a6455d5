"""The indexing pipeline against both real stores, with a tiny embedder built in a fixture."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from indexing.chunking import chunk_document
from indexing.pipeline import IndexingConfig, IndexingPipeline
from models.embedder import CachedEmbedder, EmbeddingCache
from search.documents import Document
from search.schema import IndexSchema
from search.stores.base import IndexStore, StoreUnavailable


def write_jsonl(path: Path, rows: list[dict[str, Any]], raw_lines: tuple[str, ...] = ()) -> Path:
    with open(path, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
        for line in raw_lines:
            f.write(line + "\n")
    return path


def corpus(n: int, prefix: str = "doc") -> list[dict[str, Any]]:
    topics = ["loops and iteration", "exceptions and errors", "classes and objects", "files and paths"]
    return [
        {
            "id": f"{prefix}{i}",
            "title": f"Note {i} on {topics[i % 4]}",
            "text": f"<p>Section {i}: how Python handles {topics[i % 4]}.</p> More text &amp; detail {i}.",
            "year": 2000 + i % 20,
        }
        for i in range(n)
    ]


@pytest.fixture(params=["embedded", pytest.param("es", marks=pytest.mark.es)])
def store(request: pytest.FixtureRequest, tmp_path: Path, index_name: str) -> Iterator[IndexStore]:
    if request.param == "embedded":
        from search.stores.embedded import EmbeddedStore

        s: IndexStore = EmbeddedStore(tmp_path / "indices")
        yield s
        s.close()
    else:
        from search.stores.elasticsearch import ElasticsearchStore

        es_url = request.getfixturevalue("es_url")
        es = ElasticsearchStore(es_url)
        yield es
        es.client.indices.delete(index=f"{index_name}-v*", ignore_unavailable=True, allow_no_indices=True)
        es.close()


@pytest.fixture
def cached(tiny_embedder, tmp_path: Path) -> CachedEmbedder:  # type: ignore[no-untyped-def]
    return CachedEmbedder(tiny_embedder, EmbeddingCache(tmp_path / "emb.sqlite"))


def make_config(tmp_path: Path, **kw: Any) -> IndexingConfig:
    base: dict[str, Any] = {
        "schema": IndexSchema(fields={"year": "long"}),
        "dead_letter_dir": tmp_path / "dead",
        "batch_size": 16,
        "progress": False,
    }
    base.update(kw)
    return IndexingConfig(**base)


def test_full_build_counts_and_swaps(
    store: IndexStore, cached: CachedEmbedder, tmp_path: Path, index_name: str
) -> None:
    src = write_jsonl(tmp_path / "a.jsonl", corpus(50))
    report = IndexingPipeline(store, cached, make_config(tmp_path)).build(src, index_name)
    assert report.read == 50 and report.indexed == 50 and report.balanced
    assert report.alias_switched and store.current_version(index_name) == report.version
    assert store.count(index_name) == 50
    doc = store.get(index_name, "doc3")
    assert doc is not None and "<p>" not in doc.body and "&" in doc.body  # cleaned HTML, entities decoded
    assert store.bm25_search(index_name, "exceptions", 5)[0].id in {f"doc{i}" for i in range(1, 50, 4)}
    # A second build encodes nothing new: every chunk comes from the embedding cache.
    second = IndexingPipeline(store, cached, make_config(tmp_path)).build(src, index_name)
    assert second.encoded == 0 and second.cache_hits == second.chunks > 0
    assert store.current_version(index_name) == second.version
    assert [v.version for v in store.list_versions(index_name)] == [report.version, second.version]


def test_mapping_violation_dead_lettered(
    store: IndexStore, cached: CachedEmbedder, tmp_path: Path, index_name: str
) -> None:
    rows = corpus(20)
    rows[5]["year"] = "nineteen-eighty"  # violates the long mapping
    rows.append({"id": "empty", "title": "", "text": "   "})
    rows.append({"title": "no id here", "text": "x"})
    src = write_jsonl(tmp_path / "b.jsonl", rows, raw_lines=("{not json",))
    report = IndexingPipeline(store, cached, make_config(tmp_path)).build(src, index_name)
    assert report.read == 23
    assert report.indexed == 19
    assert report.dead_lettered == 3 and report.skipped == 1
    assert report.read == report.indexed + report.dead_lettered + report.skipped
    assert store.count(index_name) == 19
    assert report.dead_letter_file is not None
    entries = [json.loads(x) for x in Path(report.dead_letter_file).read_text().splitlines()]
    by_stage = {e["stage"]: e for e in entries if e["id"] == "doc5"}
    assert "year" in by_stage["write"]["reason"]
    assert by_stage["write"]["record"]["fields"]["year"] == "nineteen-eighty"
    assert sum(e["stage"] == "read" for e in entries) == 2
    assert all(e["reason"] for e in entries)


def test_incremental_upserts_and_deletes(
    store: IndexStore, cached: CachedEmbedder, tmp_path: Path, index_name: str
) -> None:
    src = write_jsonl(tmp_path / "c.jsonl", corpus(30))
    built = IndexingPipeline(store, cached, make_config(tmp_path)).build(src, index_name)
    rows = corpus(30)
    changed = [
        dict(rows[0], title="A brand new title about decorators"),
        rows[1],
        {"id": "doc2", "deleted": True},
        {"id": "new1", "title": "Generators", "text": "yield makes generators."},
    ]
    upd = write_jsonl(tmp_path / "upd.jsonl", changed)
    ids_file = ["doc3", "doc4", "never-existed"]
    report = IndexingPipeline(store, cached, make_config(tmp_path)).update(upd, index_name, ids_file)
    assert report.version == built.version  # in place, no new version
    assert report.read == 7 and report.indexed == 2 and report.deleted == 4
    assert report.skipped_reasons == {"unchanged": 1}
    assert report.balanced
    assert store.count(index_name) == 30 - 3 + 1
    assert store.get(index_name, "doc2") is None and store.get(index_name, "doc3") is None
    doc0 = store.get(index_name, "doc0")
    assert doc0 is not None and doc0.title.startswith("A brand new")
    assert store.bm25_search(index_name, "decorators", 3)[0].id == "doc0"


def test_failure_midway_keeps_alias(store: IndexStore, cached: CachedEmbedder, tmp_path: Path, index_name: str) -> None:
    src = write_jsonl(tmp_path / "d.jsonl", corpus(40))
    first = IndexingPipeline(store, cached, make_config(tmp_path)).build(src, index_name)

    class Flaky:
        """Delegates to the real store but loses the connection on the third batch."""

        def __init__(self, inner: IndexStore) -> None:
            self.inner, self.calls = inner, 0

        def __getattr__(self, name: str) -> Any:
            return getattr(self.inner, name)

        def upsert(self, target: str, records: Any) -> Any:
            self.calls += 1
            if self.calls == 3:
                raise StoreUnavailable("connection lost")
            return self.inner.upsert(target, records)

    with pytest.raises(StoreUnavailable):
        IndexingPipeline(Flaky(store), cached, make_config(tmp_path)).build(  # type: ignore[arg-type]
            write_jsonl(tmp_path / "e.jsonl", corpus(80, "other")), index_name
        )
    assert store.current_version(index_name) == first.version
    assert store.count(index_name) == 40
    assert [v.version for v in store.list_versions(index_name)] == [first.version]  # partial version dropped


def test_bm25_only_build(store: IndexStore, tmp_path: Path, index_name: str) -> None:
    src = write_jsonl(tmp_path / "f.jsonl", corpus(10))
    report = IndexingPipeline(store, None, make_config(tmp_path, embed=False)).build(src, index_name)
    assert report.indexed == 10 and report.chunks == 0
    assert store.bm25_search(index_name, "classes objects", 3)


def test_chunking_overlaps_and_knn_finds_parent(
    tiny_embedder, store: IndexStore, tmp_path: Path, index_name: str
) -> None:  # type: ignore[no-untyped-def]
    words = " ".join(f"word{i}" for i in range(400))
    doc = Document(id="long", title="A long one", body=words)
    chunks = chunk_document(doc, tiny_embedder.tokenizer, 62, 16)
    assert len(chunks) > 2
    assert all(c.parent_id == "long" for c in chunks)
    assert [c.index for c in chunks] == list(range(len(chunks)))
    assert chunks[0].start == 0 and chunks[-1].end == len(f"{doc.title}\n{doc.body}")
    for a, b in itertools.pairwise(chunks):
        assert b.start < a.end  # overlap
        assert len(tiny_embedder.tokenizer(b.text, add_special_tokens=False)["input_ids"]) <= 62
    rows = [{"id": "long", "title": doc.title, "text": words}, *corpus(5)]
    src = write_jsonl(tmp_path / "g.jsonl", rows)
    cfg = make_config(tmp_path, chunk_overlap=16)
    report = IndexingPipeline(store, tiny_embedder, cfg).build(src, index_name)
    assert report.chunks > len(rows)
    last = tiny_embedder.embed([chunks[-1].text])[0]
    assert store.knn_search(index_name, last.tolist(), 1)[0].id == "long"
