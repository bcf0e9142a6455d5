"""The synonym behaviour every store must show (mixed into `search.stores.contract.StoreContract`, so it runs for
the embedded store and a real Elasticsearch node alike): sets stored per alias, and BM25 with synonym clauses
that matches the same documents, with the same scores, in both. Imports pytest: import it from tests only."""

from __future__ import annotations

import pytest

from search.filters import TermFilter
from search.stores.base import IndexStore
from search.stores.synonym_stores import bm25_with_synonyms, synonym_store
from search.synonyms import SynonymSearchStore, SynonymSets, expand

SCHEMA_FIELDS = {"lang": "keyword"}

# (id, title, body, lang): "new york" adjacent in s1 and s2, its words apart in s3
SYN_DOCS = [
    ("s1", "New York hotels", "Cheap rooms in New York for a weekend.", "en"),
    ("s2", "Visiting NY", "The city of New York in winter.", "en"),
    ("s3", "York minster", "An old church in York, a new roof in spring.", "en"),
    ("s4", "Television repair", "We repair every television, fast.", "de"),
    ("s5", "TV stands", "Stands for a tv and a sound bar.", "en"),
    ("s6", "Smartphone cases", "Cases for any smartphone.", "en"),
    ("s7", "iPhone chargers", "Chargers for the iPhone.", "en"),
]

SETS = SynonymSets.model_validate(
    {
        "sets": [
            {"type": "synonym", "synonyms": ["tv", "television"]},
            {"type": "oneway", "input": "smartphone", "synonyms": ["iphone"]},
            {"type": "synonym", "synonyms": ["ny", "new york"]},
        ]
    }
)


class SynonymContract:
    """Subclasses (through `StoreContract`) provide `store` and `index_name`."""

    @pytest.fixture
    def syn_built(self, store: IndexStore, index_name: str) -> str:
        from search.schema import IndexSchema
        from search.stores.contract import DIMS, rec

        version = store.create_version(index_name, DIMS, IndexSchema(fields=SCHEMA_FIELDS))  # type: ignore[arg-type]
        assert store.upsert(version, [rec(i, t, b, lang=lang) for i, t, b, lang in SYN_DOCS]).failures == []
        store.refresh(version)
        store.mark_complete(version)
        store.switch_alias(index_name, version)
        return index_name

    def _search(self, store: IndexStore, index: str, query: str, filters: list[TermFilter] | None = None) -> list:
        return bm25_with_synonyms(store, index, query, 10, filters or [], expand(query, SETS))

    def test_synonym_sets_are_stored_per_alias(self, store: IndexStore, syn_built: str) -> None:
        syn = synonym_store(store)
        assert syn is not None and isinstance(store, SynonymSearchStore)
        assert syn.get(syn_built).version == 0 and syn.get(syn_built).sets == []
        first = syn.put(syn_built, SETS)
        assert first.version == 1 and syn.get(syn_built).sets == SETS.sets
        version = store.current_version(syn_built)
        assert version is not None and syn.get(version).sets == SETS.sets  # a version name reads its alias's sets
        # a reindex (a new version behind the alias) keeps them
        from search.schema import IndexSchema
        from search.stores.contract import DIMS, rec

        v2 = store.create_version(syn_built, DIMS, IndexSchema(fields=SCHEMA_FIELDS))  # type: ignore[arg-type]
        store.upsert(v2, [rec("s1", "New York hotels", "Rooms in New York.", lang="en")])
        store.refresh(v2)
        store.switch_alias(syn_built, v2)
        assert syn.get(syn_built).sets == SETS.sets
        assert syn.delete(syn_built) is True and syn.get(syn_built).sets == []
        assert syn.delete(syn_built) is False
        again = syn.put(syn_built, SETS)
        assert again.version > first.version + 1  # the counter never goes back: caches can compare it
        syn.delete(syn_built)

    def test_multi_way_synonyms_match_both_ways(self, store: IndexStore, syn_built: str) -> None:
        assert {h.id for h in self._search(store, syn_built, "tv")} == {"s4", "s5"}
        assert {h.id for h in self._search(store, syn_built, "televisions")} == {"s4", "s5"}  # stems
        # without synonyms, each finds only its own word
        assert {h.id for h in store.bm25_search(syn_built, "tv", 10, with_docs=False)} == {"s5"}

    def test_one_way_synonyms_are_not_reversed(self, store: IndexStore, syn_built: str) -> None:
        assert {h.id for h in self._search(store, syn_built, "smartphones")} == {"s6", "s7"}
        assert {h.id for h in self._search(store, syn_built, "iphone")} == {"s7"}

    def test_multi_word_synonym_is_a_phrase(self, store: IndexStore, syn_built: str) -> None:
        # "ny" → "new york" as adjacent words: s3 holds both words apart and is not matched through it
        assert [h.id for h in self._search(store, syn_built, "ny")][:2] in (["s2", "s1"], ["s1", "s2"])
        assert {h.id for h in self._search(store, syn_built, "ny")} == {"s1", "s2"}
        # and "new york" gains "ny" (s2's title), keeping its own word matches (s3)
        assert {h.id for h in self._search(store, syn_built, "new york")} == {"s1", "s2", "s3"}

    def test_synonym_scores_are_the_synonyms_bm25(self, store: IndexStore, syn_built: str) -> None:
        """A document matched only through a one-word synonym scores as that word's BM25 (weight 1): the same
        figure in both stores, as plain BM25 is."""
        via = {h.id: h.score for h in self._search(store, syn_built, "tv")}
        plain = {h.id: h.score for h in store.bm25_search(syn_built, "television", 10, with_docs=False)}
        assert via["s4"] == pytest.approx(plain["s4"], rel=1e-4)
        own = {h.id: h.score for h in store.bm25_search(syn_built, "tv", 10, with_docs=False)}
        assert via["s5"] == pytest.approx(own["s5"], rel=1e-4)

    def test_synonym_search_applies_filters(self, store: IndexStore, syn_built: str) -> None:
        en = [TermFilter(field="lang", value="en")]
        assert {h.id for h in self._search(store, syn_built, "television", en)} == {"s5"}
