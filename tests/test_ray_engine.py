"""The Ray Data reindex engine against the local engine: same documents, same vectors, same answers.

Real local Ray (2 CPUs, no dashboard), the tiny embedder, the embedded store, a sharded source (two JSONL
shards and a Parquet shard) with a broken line, a duplicate id and an empty document in it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from indexing.pipeline import IndexingConfig, IndexingPipeline
from indexing.ray_engine import RayEngineConfig, RayIndexingPipeline
from models.embedder import CachedEmbedder, EmbedderConfig, EmbeddingCache, SentenceTransformerEmbedder
from models.ray_session import shutdown_ray
from search.stores.embedded import EmbeddedStore
from tests.test_doc2query import tiny_d2q

__all__ = ["tiny_d2q"]  # the tiny doc2query LM fixture

pytestmark = pytest.mark.slow

TOPICS = ["loops and iteration", "exceptions and errors", "classes and objects", "files and paths", "sockets"]


def _docs(start: int, n: int) -> list[dict[str, Any]]:
    return [
        {
            "id": f"d{i}",
            "title": f"Note {i} on {TOPICS[i % 5]}",
            "text": f"<p>Section {i}: how Python handles {TOPICS[i % 5]}.</p> Detail {i} " + "word " * (i % 40),
        }
        for i in range(start, start + n)
    ]


@pytest.fixture(scope="module")
def ray_local() -> Iterator[None]:
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=200 * 2**20)
    yield
    shutdown_ray()


@pytest.fixture
def source(tmp_path: Path) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    src = tmp_path / "src"
    src.mkdir()
    with open(src / "part-0.jsonl", "w") as f:
        for r in _docs(0, 80):
            f.write(json.dumps(r) + "\n")
        f.write("{not json\n")
        f.write(json.dumps({"id": "d3", "title": "a duplicate", "text": "of d3"}) + "\n")
    with open(src / "part-1.jsonl", "w") as f:
        for r in _docs(80, 70):
            f.write(json.dumps(r) + "\n")
        f.write(json.dumps({"id": "empty", "title": "", "text": "<p> </p>"}) + "\n")
    pq.write_table(pa.Table.from_pylist(_docs(150, 50)), src / "part-2.parquet")
    return src


def _config(tmp_path: Path, embedder: str) -> IndexingConfig:
    return IndexingConfig(
        embedder=EmbedderConfig(model=embedder, device="cpu"),
        dead_letter_dir=tmp_path / "dead",
        batch_size=32,
        progress=False,
    )


def test_ray_engine_matches_local_engine(
    ray_local: None, source: Path, tmp_path: Path, tiny_embedder_path: Path
) -> None:
    cfg = _config(tmp_path, str(tiny_embedder_path))
    cache = tmp_path / "emb.sqlite"
    local_store = EmbeddedStore(tmp_path / "local")
    local_emb = CachedEmbedder(SentenceTransformerEmbedder(cfg.embedder), EmbeddingCache(tmp_path / "local.sqlite"))
    local = IndexingPipeline(local_store, local_emb, cfg).build(source, "docs")

    ray_store = EmbeddedStore(tmp_path / "ray")
    rc = RayEngineConfig(encoder_actors=2, encoder_num_cpus=0.5, encode_batch_docs=16, cache_path=cache)
    driver_emb = SentenceTransformerEmbedder(cfg.embedder)
    first = RayIndexingPipeline(ray_store, driver_emb, cfg, rc).build(source, "docs")

    for report in (local, first):
        assert report.read == 203 and report.indexed == 200 and report.dead_lettered == 1 and report.balanced
        assert report.skipped_reasons == {"duplicate id in source": 1, "empty after cleaning": 1}
        assert report.alias_switched
    # The duplicate of d3 is encoded before the driver drops it (ids are deduplicated at the write).
    assert first.chunks == local.chunks and first.encoded == local.encoded + 1
    dead = [json.loads(x) for x in Path(str(first.dead_letter_file)).read_text().splitlines()]
    assert [(d["stage"], d["position"]) for d in dead] == [("read", "part-0.jsonl:81")]

    lv, rv = local_store.current_version("docs"), ray_store.current_version("docs")
    assert lv and rv and local_store.count(lv) == ray_store.count(rv) == 200
    assert ray_store.get(rv, "d3").title == "Note 3 on files and paths"  # type: ignore[union-attr]
    queries = ["exceptions and errors", "files and paths section 42", "sockets detail", "classes objects note 7"]
    for q in queries:
        vec = local_emb.embed([q])[0].tolist()
        assert [h.id for h in local_store.knn_search(lv, vec, 3)] == [h.id for h in ray_store.knn_search(rv, vec, 3)]
        assert local_store.bm25_search(lv, q, 1)[0].id == ray_store.bm25_search(rv, q, 1)[0].id

    # A rerun (as after a crash) encodes nothing: the actors' shared cache holds every chunk.
    again = RayIndexingPipeline(ray_store, driver_emb, cfg, rc).build(source, "docs")
    assert again.indexed == 200 and again.encoded == 0 and again.cache_hits == first.encoded + first.cache_hits
    assert ray_store.current_version("docs") != rv
    local_store.close()
    ray_store.close()


def test_ray_engine_refuses_incremental_runs(tmp_path: Path, tiny_embedder_path: Path) -> None:
    cfg = _config(tmp_path, str(tiny_embedder_path))
    engine = RayIndexingPipeline(EmbeddedStore(tmp_path / "s"), SentenceTransformerEmbedder(cfg.embedder), cfg)
    with pytest.raises(ValueError, match="local engine"):
        engine.update(None, "docs")


def test_ray_engine_runs_the_doc2query_stage(
    ray_local: None, source: Path, tmp_path: Path, tiny_d2q: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """doc2query actors expand every live document (BM25-only builds here); the cache keys are the local
    engine's, so a local build after the Ray one generates nothing and stores the same queries."""
    from indexing.doc2query import Doc2QueryConfig
    from search.documents import EXPANSION_FIELD

    d2q = Doc2QueryConfig(  # the relevance filter runs after the cache in both engines: off here, tested alone
        model=str(tiny_d2q), num_queries=2, max_new_tokens=6, cache=tmp_path / "d2q.sqlite", filter_model=None
    )
    cfg = IndexingConfig(embed=False, progress=False, dead_letter_dir=tmp_path / "dead", batch_size=32, doc2query=d2q)
    rc = RayEngineConfig(doc2query_actors=1, doc2query_num_cpus=0.5, read_block_docs=40)
    ray_store = EmbeddedStore(tmp_path / "ray")
    report = RayIndexingPipeline(ray_store, None, cfg, rc).build(source, "docs")
    assert report.indexed == 200 and report.alias_switched

    from indexing.doc2query import Doc2QueryExpander

    def no_generation(self: object, docs: object) -> None:
        raise AssertionError("the local build regenerated queries the Ray build had cached")

    monkeypatch.setattr(Doc2QueryExpander, "generate", no_generation)
    local_store = EmbeddedStore(tmp_path / "local")
    local = IndexingPipeline(local_store, None, cfg)
    assert local.build(source, "docs").indexed == 200
    ids = [f"d{i}" for i in range(200)]
    from_ray, from_local = ray_store.get_many("docs", ids), local_store.get_many("docs", ids)
    assert all(isinstance(d.fields.get(EXPANSION_FIELD), list) for d in from_ray.values())
    assert {k: d.fields[EXPANSION_FIELD] for k, d in from_ray.items()} == {
        k: d.fields[EXPANSION_FIELD] for k, d in from_local.items()
    }
    ray_store.close()
    local_store.close()


@pytest.mark.es
def test_ray_engine_bulk_writes_to_elasticsearch(
    ray_local: None, source: Path, tmp_path: Path, tiny_embedder_path: Path, es_url: str, index_name: str
) -> None:
    """The batch path a RayJob runs: the stream into the real node, the alias swapped once every record is in."""
    from search.stores.elasticsearch import ElasticsearchStore

    cfg = _config(tmp_path, str(tiny_embedder_path))
    store = ElasticsearchStore(es_url)
    rc = RayEngineConfig(encoder_actors=2, encoder_num_cpus=0.5, encode_batch_docs=16, cache_path=tmp_path / "e.sqlite")
    try:
        engine = RayIndexingPipeline(store, SentenceTransformerEmbedder(cfg.embedder), cfg, rc)
        report = engine.build(source, index_name)
        assert report.indexed == 200 and report.dead_lettered == 1 and report.alias_switched
        version = store.current_version(index_name)
        assert version == report.version and store.count(index_name) == 200
        assert store.bm25_search(index_name, "sockets detail 4", 3)
        vec = SentenceTransformerEmbedder(cfg.embedder).embed(["exceptions and errors"])[0].tolist()
        assert len(store.knn_search(index_name, vec, 3)) == 3
    finally:
        store.client.indices.delete(index=f"{index_name}-v*", ignore_unavailable=True, allow_no_indices=True)
        store.close()
