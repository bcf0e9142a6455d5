"""First-stage parity: the terms both stores score, index layouts old and new, and the bm25s reference."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from search.documents import Document, StoredRecord
from search.schema import IndexSchema
from search.stores.embedded import EmbeddedStore
from search.stores.embedded_sql import LEGACY_TOKENIZER
from search.text import bm25_terms, query_terms, query_tokens
from training.reference import ReferenceBM25, ReferenceBM25Config

DOCS = [
    ("d1", "Marathon runners", "Runners train for long distance races."),
    ("d2", "Cooking pasta", "Boil water, add salt and pasta."),
    ("d3", "Studies of sleep", "Several studies show sleep helps memory."),
    ("d4", "Alpha", "alpha gamma"),
    ("d5", "Beta", "beta gamma"),
]


def records() -> list[StoredRecord]:
    return [StoredRecord(doc=Document(id=i, title=t, body=b), vectors=[[1.0, 0.0]]) for i, t, b in DOCS]


# -- the terms ------------------------------------------------------------------------------------------------
def test_query_tokens_keep_repeats_and_query_terms_do_not() -> None:
    q = "The cells, the T cells and the cells of the thymus"
    assert query_tokens(q) == ["cells", "t", "cells", "cells", "thymus"]
    assert query_terms(q) == ["cells", "t", "thymus"]  # highlighting and suggestions: unchanged


def test_bm25_terms_are_the_references_terms() -> None:
    import bm25s
    import Stemmer

    text = "The runners' studies, e.g. of sleep: Runners STUDY a_b 2x and 42 of the 3 cafés."
    assert bm25_terms(text) == ["runner", "studi", "sleep", "runner", "studi", "a_b", "2x", "42", "café"]
    ref = bm25s.tokenize([text], stopwords="en", stemmer=Stemmer.Stemmer("english"), return_ids=False)
    assert ref == [bm25_terms(text)]


# -- the embedded store: new files hold the terms, old files keep Porter -----------------------------------------
@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[EmbeddedStore]:
    store = EmbeddedStore(tmp_path / "data")
    store.warm_up()
    yield store
    store.close()


def test_embedded_indexes_the_bm25_terms(embedded: EmbeddedStore) -> None:
    version = embedded.create_version("parity", 2, IndexSchema())
    embedded.upsert(version, records())
    c = sqlite3.connect(embedded.data_dir / "versions" / f"{version}.sqlite")
    try:
        rows = dict(c.execute("SELECT d.id, f.content FROM fts f JOIN docs d ON d.rid = f.rowid").fetchall())
    finally:
        c.close()
    assert rows["d1"] == "marathon runner runner train long distanc race"
    assert [h.id for h in embedded.bm25_search(version, "a study of the sleeping runner", 2)] == ["d3", "d1"]
    assert embedded.bm25_search(version, "the of a", 5) == []


def test_embedded_file_written_before_still_reads_and_writes_raw_text(embedded: EmbeddedStore) -> None:
    version = embedded.create_version("legacy", 2, IndexSchema())
    path = embedded.data_dir / "versions" / f"{version}.sqlite"
    c = sqlite3.connect(path)
    try:  # the layout of a file from before: no `bm25` row in meta, raw text under the Porter tokenizer
        c.execute("DELETE FROM meta WHERE key = 'bm25'")
        c.execute("DROP TABLE fts")
        c.execute(f"CREATE VIRTUAL TABLE fts USING fts5(content, tokenize='{LEGACY_TOKENIZER}')")
        c.commit()
    finally:
        c.close()
    embedded.upsert(version, records())
    c = sqlite3.connect(path)
    try:
        stored = c.execute("SELECT content FROM fts ORDER BY rowid").fetchone()[0]
    finally:
        c.close()
    assert stored == "Marathon runners\nRunners train for long distance races."
    assert embedded.bm25_search(version, "runner", 5)[0].id == "d1"  # Porter, inside FTS5
    # Repeats count in old files too.
    assert [h.id for h in embedded.bm25_search(version, "alpha beta beta", 2)] == ["d5", "d4"]


# -- Elasticsearch: a default store reads versions of either layout ---------------------------------------------
@pytest.mark.es
def test_es_layouts_old_and_new(es_url: str, index_name: str) -> None:
    from search.stores.elasticsearch import ElasticsearchStore, EsIndexConfig

    new = ElasticsearchStore(es_url)
    old = ElasticsearchStore(es_url, EsIndexConfig(analyzer="hunspell_en"))
    try:
        v_new = new.create_version(f"{index_name}-n", 2, IndexSchema())
        v_old = old.create_version(f"{index_name}-o", 2, IndexSchema())
        fresh = ElasticsearchStore(es_url)  # knows neither version: reads the layout from the mapping
        for v in (v_new, v_old):
            assert fresh.upsert(v, records()).failures == []
            fresh.refresh(v)
        props_new = new.client.indices.get_mapping(index=v_new)[v_new]["mappings"]["properties"]
        props_old = new.client.indices.get_mapping(index=v_old)[v_old]["mappings"]["properties"]
        assert "content_stems" in props_new and "content" not in props_new
        assert "content" in props_old and "content_stems" not in props_old
        for v in (v_new, v_old):
            assert [h.id for h in fresh.bm25_search(v, "a study of the sleeping runner", 2)] == ["d3", "d1"]
            assert [h.id for h in fresh.bm25_search(v, "alpha beta beta", 2, with_docs=False)] == ["d5", "d4"]
            assert fresh.get(v, "d1") == records()[0].doc  # the stems never come back as part of a document
            assert fresh.bm25_search(v, "the of a", 5) == []
        fresh.close()
    finally:
        new.client.indices.delete(index=f"{index_name}-*", ignore_unavailable=True, allow_no_indices=True)
        new.close()
        old.close()


# -- the reference ------------------------------------------------------------------------------------------------
def test_reference_ranks_by_bm25_with_repeats() -> None:
    ids = [i for i, _, _ in DOCS]
    ref = ReferenceBM25(ids, [f"{t} {b}" for _, t, b in DOCS])
    got = ref.search({"q1": "alpha beta beta", "q2": "alpha alpha beta", "q3": "runner", "q4": "the of"}, k=10)
    assert got["q1"][:2] == ["d5", "d4"] and got["q2"][:2] == ["d4", "d5"]
    assert got["q3"] == ["d1"]  # stemmed, and documents scoring 0 are left out
    assert got["q4"] == []
    assert ReferenceBM25Config() == ReferenceBM25Config(k1=1.2, b=0.75, method="lucene", stemmer="english")
    with pytest.raises(ValueError):
        ReferenceBM25([], [])
