"""Synonym sets: validation and bounds, what a query gains (multi-way, one-way, multi-word, stems), what a result
holds, the cache that searches read through, and the indexing config's `synonyms:` (embedded store; the stores'
search itself is in the contract suite, search/stores/synonym_contract.py, run for both stores)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from pydantic import ValidationError

from search.synonyms import (
    MAX_SETS,
    MAX_TERM_CHARS,
    MAX_TERMS,
    CachedSynonyms,
    StoredSynonyms,
    SynonymSets,
    expand,
    matched_synonyms,
)
from search.text import bm25_terms

SETS = SynonymSets.model_validate(
    [
        {"type": "synonym", "synonyms": ["tv", "television", "telly"]},
        {"type": "oneway", "input": "smartphone", "synonyms": ["iphone", "android phone"]},
        {"type": "synonym", "synonyms": ["ny", "new york city"]},
    ]
)


def gained(query: str) -> list[str]:
    q = expand(query, SETS)
    return [c.term for c in q.clauses] if q is not None else []


def test_multi_way_each_term_stands_for_the_others() -> None:
    assert gained("tv") == ["television", "telly"]
    assert gained("telly repair") == ["tv", "television"]
    q = expand("telly repair", SETS)
    assert q is not None and q.terms == ("telli", "repair")  # the query's own terms are kept, as BM25 scores them


def test_one_way_is_not_reversed() -> None:
    assert gained("cheap smartphone") == ["iphone", "android phone"]
    assert gained("iphone") == [] and expand("iphone", SETS) is None
    assert gained("android phone") == []


def test_stems_match_in_queries_and_sets() -> None:
    assert gained("televisions") == ["tv", "telly"]  # plural → the set's "television"
    assert gained("smartphones") == ["iphone", "android phone"]
    runs = SynonymSets.model_validate([{"type": "oneway", "input": "running shoes", "synonyms": ["sneakers"]}])
    q = expand("run shoe", runs)
    assert q is not None and [c.term for c in q.clauses] == ["sneakers"]


def test_multi_word_inputs_need_adjacent_words_and_outputs_are_phrases() -> None:
    assert gained("new york city hotels") == ["ny"]
    assert gained("city of new york") == []  # the words, not the phrase
    assert gained("hotels in york") == []
    q = expand("ny", SETS)
    assert q is not None and q.clauses[0].stems == ("new", "york", "citi")
    # stop words inside a phrase are dropped on both sides, as documents are analysed
    assert bm25_terms("statue of liberty") == ["statu", "liberti"]


def test_a_synonym_the_query_already_says_is_not_added_twice() -> None:
    assert gained("tv television") == ["telly"]


def test_matched_synonyms_are_those_the_result_holds() -> None:
    q = expand("ny", SETS)
    assert matched_synonyms(bm25_terms("Hotels in New York City"), q) == ["new york city"]
    assert matched_synonyms(bm25_terms("A city in New York state"), q) is None  # words apart: no phrase
    assert matched_synonyms(bm25_terms("anything"), None) is None


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ([{"type": "synonym", "synonyms": ["tv"]}], "at least 2"),
        ([{"type": "synonym", "synonyms": ["run", "running"]}], "differ after stemming"),
        ([{"type": "synonym", "synonyms": ["the", "tv"]}], "no searchable word"),
        ([{"type": "oneway", "input": "", "synonyms": ["tv"]}], "must not be empty"),
        ([{"type": "oneway", "input": "tv", "synonyms": ["x" * (MAX_TERM_CHARS + 1)]}], "longer than"),
        ([{"type": "oneway", "input": "tv", "synonyms": ["one two three four five six seven"]}], "at most"),
        ([{"type": "synonym", "synonyms": [f"w{i}x" for i in range(MAX_TERMS + 1)]}], "at most"),
        ([{"type": "synonym", "synonyms": ["ab", "cd"]}] * (MAX_SETS + 1), "at most"),
        ([{"type": "twoway", "synonyms": ["ab", "cd"]}], "does not match any of the expected tags"),
        ([{"type": "oneway", "synonyms": ["ab"]}], "input"),
        ([{"type": "synonym", "id": "a", "synonyms": ["ab", "cd"]}] * 2, "unique"),
        ([{"type": "synonym", "synonyms": ["ab\ud800", "cd"]}], "printable"),  # could be stored, never read back
        ([{"type": "synonym", "id": "a\x00", "synonyms": ["ab", "cd"]}], "printable"),
    ],
)
def test_bad_sets_are_refused_with_a_message(body: list[dict[str, object]], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        SynonymSets.model_validate(body)


class _Counting:
    """A SynonymStore double that counts reads."""

    def __init__(self) -> None:
        self.stored = StoredSynonyms(index="x", version=0)
        self.reads = 0

    def get(self, index: str) -> StoredSynonyms:
        self.reads += 1
        return self.stored

    def put(self, index: str, sets: SynonymSets) -> StoredSynonyms:
        self.stored = StoredSynonyms(index=index, version=self.stored.version + 1, sets=sets.sets)
        return self.stored

    def delete(self, index: str) -> bool:
        self.put(index, SynonymSets())
        return True


def test_cache_rereads_after_its_ttl_and_at_once_after_its_own_change() -> None:
    now = [0.0]
    store = _Counting()
    cache = CachedSynonyms(store, ttl_s=2.0, clock=lambda: now[0])
    assert cache.expand("x", "tv") is None
    cache.put("x", SETS)  # this replica's own change: the next search sees it
    assert cache.expand("x", "tv") is not None
    store.put("x", SynonymSets())  # another replica's change
    now[0] = 1.0
    assert cache.expand("x", "tv") is not None  # within the TTL: the known sets
    now[0] = 3.5
    assert cache.expand("x", "tv") is None  # past it: re-read
    reads = store.reads
    cache.expand("x", "tv")
    assert store.reads == reads  # cached again


def test_indexing_config_sets_synonyms_for_the_alias(tmp_path: Path) -> None:
    from indexing.pipeline import IndexingConfig, IndexingPipeline
    from search.stores.embedded import EmbeddedStore
    from search.stores.synonym_stores import synonym_store

    src = tmp_path / "docs.jsonl"
    src.write_text(json.dumps({"id": "d1", "title": "Television repair", "text": "fixing a television"}) + "\n")
    store = EmbeddedStore(tmp_path / "data")
    cfg = IndexingConfig.model_validate(
        {"embed": False, "progress": False, "dead_letter_dir": str(tmp_path / "dead"), "synonyms": SETS.model_dump()}
    )
    IndexingPipeline(store, None, cfg).build(src, "shop")
    syn = synonym_store(store)
    assert syn is not None and syn.get("shop").sets == SETS.sets and syn.get("shop").version == 1
    IndexingPipeline(store, None, cfg).build(src, "shop")  # the same sets again: no new version
    assert syn.get("shop").version == 1
    # a config without `synonyms:` leaves them alone
    IndexingPipeline(store, None, cfg.model_copy(update={"synonyms": None})).build(src, "shop")
    assert syn.get("shop").sets == SETS.sets
    store.close()


def test_cli_sets_lists_and_deletes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from sift.cli import app

    monkeypatch.setenv("SIFT_DATA_DIR", str(tmp_path))
    f = tmp_path / "syn.yaml"
    f.write_text("- type: synonym\n  synonyms: [tv, television]\n")
    runner = CliRunner()
    r = runner.invoke(app, ["synonyms", "set", "--index", "shop", "--file", str(f)])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["version"] == 1
    r = runner.invoke(app, ["synonyms", "list", "--index", "shop"])
    assert json.loads(r.stdout)["sets"] == [{"type": "synonym", "synonyms": ["tv", "television"]}]
    f.write_text("- type: synonym\n  synonyms: [the, tv]\n")
    r = runner.invoke(app, ["synonyms", "set", "--index", "shop", "--file", str(f)])
    assert r.exit_code == 2 and "no searchable word" in r.output
    r = runner.invoke(app, ["synonyms", "delete", "--index", "shop"])
    assert r.exit_code == 0 and json.loads(r.stdout)["deleted"] is True


@pytest.mark.parametrize("filtered", [False, True])
def test_embedded_phrase_plan_and_single_statement_agree(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, filtered: bool
) -> None:
    """The embedded store's two plans for phrase synonyms (phrase rows scored apart and merged with FTS5's own
    top; one UNION ALL statement) return the same ids, order and scores."""
    import search.stores.embedded_synonyms as es
    from search.filters import TermFilter
    from search.schema import IndexSchema
    from search.stores.contract import rec
    from search.stores.embedded import EmbeddedStore

    rng = random.Random(7)
    words = ["new", "york", "city", "hotel", "cheap", "room", "tv", "stand", "garden", "tool", "ny", "winter"]
    docs = [
        rec(f"d{i}", " ".join(rng.choices(words, k=3)), " ".join(rng.choices(words, k=12)), lang=rng.choice("ab"))
        for i in range(300)
    ]
    store = EmbeddedStore(tmp_path / "data")
    version = store.create_version("mix", 4, IndexSchema(fields={"lang": "keyword"}))
    assert store.upsert(version, docs).failures == []
    store.switch_alias("mix", version)
    sets = SynonymSets.model_validate(
        [
            {"type": "synonym", "synonyms": ["ny", "new york city"]},
            {"type": "oneway", "input": "hotel", "synonyms": ["cheap room", "tv"]},
        ]
    )
    filters = [TermFilter(field="lang", value="a")] if filtered else []
    for query in ["ny", "ny hotel", "hotel garden", "winter ny ny"]:
        q = expand(query, sets)
        assert q is not None
        merged = store.bm25_synonym_search("mix", q, 10, filters)
        monkeypatch.setattr(es, "MAX_PHRASE_ROWS", -1)  # forces the single statement
        single = store.bm25_synonym_search("mix", q, 10, filters)
        monkeypatch.undo()
        assert [h.id for h in merged] == [h.id for h in single], query
        assert [h.score for h in merged] == pytest.approx([h.score for h in single], rel=1e-9)
    store.close()
