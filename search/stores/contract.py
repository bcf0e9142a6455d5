"""The behaviour every `IndexStore` must show, as a reusable test suite (Haystack-style).

An implementation's test module subclasses `StoreContract` in a class whose name starts with ``Test`` and
supplies a ``store`` fixture (a warmed-up, empty store) and an ``index_name`` fixture (a fresh index name);
every test here then runs against it unchanged. Imports pytest, so import it from tests only.
"""

from __future__ import annotations

import itertools
import time

import numpy as np
import pytest

from search.documents import Document, StoredRecord
from search.filters import Filter, RangeFilter, TermFilter, TermsFilter
from search.schema import IndexSchema
from search.stores.base import AliasConflict, IndexNotFound, IndexStore, LockHeld, LockLost, StoreError
from search.stores.facet_contract import FacetContract
from search.stores.synonym_contract import SynonymContract
from search.stores.typo_contract import TypoContract

DIMS = 4
SCHEMA = IndexSchema(fields={"lang": "keyword", "year": "long", "score": "double", "draft": "boolean"})


def vec(*xs: float) -> list[float]:
    v = np.asarray(xs, dtype=np.float32)
    return (v / np.linalg.norm(v)).tolist()


def rec(doc_id: str, title: str, body: str, vectors: list[list[float]] | None = None, **fields: object) -> StoredRecord:
    published = fields.pop("published_at", None)
    doc = Document(id=doc_id, title=title, body=body, fields=dict(fields), published_at=published)  # type: ignore[arg-type]
    return StoredRecord(doc=doc, vectors=vectors if vectors is not None else [vec(1, 0, 0, 0)])


CORPUS = [
    rec(
        "d1",
        "Marathon runners",
        "Runners train for long distance races.",
        [vec(1, 0, 0, 0)],
        lang="en",
        year=2019,
        published_at="2019-05-01T00:00:00Z",
    ),
    rec(
        "d2",
        "Cooking pasta",
        "Boil water, add salt and pasta.",
        [vec(0, 1, 0, 0)],
        lang="en",
        year=2021,
        published_at="2021-01-10T00:00:00Z",
    ),
    rec(
        "d3",
        "Studies of sleep",
        "Several studies show sleep helps memory.",
        [vec(0, 0, 1, 0), vec(0.1, 0.9, 0, 0)],
        lang="de",
        year=2023,
        score=0.5,
        published_at="2023-03-03T00:00:00Z",
    ),
    rec(
        "d4",
        "Protein folding",
        "Proteins fold into shapes that decide their function.",
        [vec(0, 0, 0, 1)],
        lang="fr",
        year=2020,
        draft=True,
    ),
]


class StoreContract(SynonymContract, TypoContract, FacetContract):
    """Behaviour every IndexStore must show. Subclasses provide `store`."""

    @pytest.fixture
    def built(self, store: IndexStore, index_name: str) -> str:
        version = store.create_version(index_name, DIMS, SCHEMA)
        result = store.upsert(version, CORPUS)
        assert result.failures == []
        assert result.written == len(CORPUS)
        store.refresh(version)
        store.mark_complete(version)
        store.switch_alias(index_name, version)
        return index_name

    def test_count_and_get(self, store: IndexStore, built: str) -> None:
        assert store.count(built) == 4
        doc = store.get(built, "d2")
        assert doc is not None and doc.title == "Cooking pasta" and doc.fields["year"] == 2021
        assert store.get(built, "nope") is None

    def test_get_many(self, store: IndexStore, built: str) -> None:
        docs = store.get_many(built, ["d3", "nope", "d1", "d3"])
        assert set(docs) == {"d1", "d3"}
        assert docs["d3"].title == "Studies of sleep" and docs["d3"].fields["lang"] == "de"
        assert store.get_many(built, []) == {}

    def test_ids_only_searches_match_full_ones(self, store: IndexStore, built: str) -> None:
        """`with_docs=False` (what hybrid retrieval uses) returns the same ids, order and scores, no documents."""
        full = store.bm25_search(built, "studies runners", 10)
        bare = store.bm25_search(built, "studies runners", 10, with_docs=False)
        assert [h.id for h in full] == ["d3", "d1"] or [h.id for h in full] == ["d1", "d3"]
        assert [(h.id, pytest.approx(h.score)) for h in bare] == [(h.id, h.score) for h in full]
        assert all(h.doc is None for h in bare) and all(h.doc is not None for h in full)
        en = [TermFilter(field="lang", value="en")]
        assert [h.id for h in store.bm25_search(built, "studies runners", 10, en, with_docs=False)] == ["d1"]
        q = vec(0.1, 0.9, 0.05, 0)
        full_k = store.knn_search(built, q, 3)
        bare_k = store.knn_search(built, q, 3, with_docs=False)
        assert [h.id for h in bare_k] == [h.id for h in full_k] and bare_k[0].id in {"d2", "d3"}
        assert [h.score for h in bare_k] == pytest.approx([h.score for h in full_k])
        assert all(h.doc is None for h in bare_k)

    def test_unknown_index(self, store: IndexStore, index_name: str) -> None:
        assert store.current_version(index_name) is None
        with pytest.raises(IndexNotFound):
            store.count(index_name)

    def test_alias_and_versions(self, store: IndexStore, built: str) -> None:
        first = store.current_version(built)
        assert first is not None and first.startswith(f"{built}-v")
        second = store.create_version(built, DIMS, SCHEMA)
        store.upsert(second, CORPUS[:1])
        store.refresh(second)
        # The alias still serves the first version until switched.
        assert store.count(built) == 4
        versions = store.list_versions(built)
        assert [v.version for v in versions] == [first, second]
        assert [v.complete for v in versions] == [True, False]
        store.mark_complete(second)
        store.switch_alias(built, second)
        assert store.current_version(built) == second
        assert store.count(built) == 1
        with pytest.raises(StoreError):
            store.drop_version(second)
        store.drop_version(first)
        assert [v.version for v in store.list_versions(built)] == [second]

    def test_upsert_replaces(self, store: IndexStore, built: str) -> None:
        store.upsert(built, [rec("d2", "Cooking rice", "Rinse rice first.", [vec(0, 1, 0, 0)], lang="en", year=2022)])
        store.refresh(built)
        assert store.count(built) == 4
        doc = store.get(built, "d2")
        assert doc is not None and doc.title == "Cooking rice"
        assert [h.id for h in store.bm25_search(built, "rice", 5)] == ["d2"]
        assert store.bm25_search(built, "pasta", 5) == []

    def test_delete(self, store: IndexStore, built: str) -> None:
        assert store.delete(built, ["d1", "missing"]) == 1
        store.refresh(built)
        assert store.count(built) == 3
        assert store.get(built, "d1") is None
        assert "d1" not in [h.id for h in store.bm25_search(built, "runners", 5)]

    def test_bm25_ranks_and_stems(self, store: IndexStore, built: str) -> None:
        hits = store.bm25_search(built, "runner", 10)  # stemmed: matches "runners"
        assert hits and hits[0].id == "d1"
        hits = store.bm25_search(built, "study of the sleeping", 10)
        assert hits[0].id == "d3"
        assert hits[0].doc is not None and hits[0].doc.title == "Studies of sleep"
        assert all(a.score >= b.score for a, b in itertools.pairwise(hits))
        assert store.bm25_search(built, "the of", 10) == []  # stop words only
        assert store.bm25_search(built, "zzzunknownword", 10) == []

    def test_knn_own_vector_first_and_best_chunk(self, store: IndexStore, built: str) -> None:
        for r in CORPUS:
            hits = store.knn_search(built, r.vectors[0], 2)
            assert hits[0].id == r.doc.id
        # d3's second chunk is close to d2's vector: best-chunk scoring ranks d3 second, not last.
        hits = store.knn_search(built, vec(0, 1, 0, 0), 4)
        assert [h.id for h in hits[:2]] == ["d2", "d3"]
        assert hits[0].score == pytest.approx(1.0, abs=1e-3)  # (1 + cos) / 2
        assert len({h.id for h in hits}) == len(hits)

    def test_filters(self, store: IndexStore, built: str) -> None:
        def ids(hits: list) -> set[str]:  # type: ignore[type-arg]
            return {h.id for h in hits}

        q = "runners pasta sleep proteins"
        assert ids(store.bm25_search(built, q, 10, [TermFilter(field="lang", value="en")])) == {"d1", "d2"}
        assert ids(store.bm25_search(built, q, 10, [TermsFilter(field="lang", values=["de", "fr"])])) == {"d3", "d4"}
        assert ids(store.bm25_search(built, q, 10, [RangeFilter(field="year", gte=2020, lt=2023)])) == {"d2", "d4"}
        assert ids(store.bm25_search(built, q, 10, [RangeFilter(field="published_at", gte="2020-01-01")])) == {
            "d2",
            "d3",
        }
        assert ids(store.bm25_search(built, q, 10, [TermFilter(field="draft", value=True)])) == {"d4"}
        both: list[Filter] = [TermFilter(field="lang", value="en"), RangeFilter(field="year", gt=2020)]
        assert ids(store.bm25_search(built, q, 10, both)) == {"d2"}
        knn = store.knn_search(built, vec(1, 0, 0, 0), 4, [TermFilter(field="lang", value="fr")])
        assert ids(knn) == {"d4"}
        with pytest.raises(KeyError, match="unknown filter field"):
            store.bm25_search(built, q, 10, [TermFilter(field="colour", value="red")])

    def test_schema_violation_is_a_per_doc_failure(self, store: IndexStore, built: str) -> None:
        bad = rec("bad", "Bad year", "This one has a year that is not a number.", year="not-a-year")
        good = rec("good", "Good year", "Fine document.", year=2001)
        result = store.upsert(built, [bad, good])
        assert result.written == 1
        assert [f.id for f in result.failures] == ["bad"]
        assert "year" in result.failures[0].reason
        store.refresh(built)
        assert store.get(built, "good") is not None and store.get(built, "bad") is None

    def test_hashes(self, store: IndexStore, built: str) -> None:
        hashes = store.get_hashes(built, ["d1", "d2", "zz"])
        assert set(hashes) == {"d1", "d2"}
        assert hashes["d1"] == CORPUS[0].doc.content_hash()

    def test_schema_roundtrip(self, store: IndexStore, built: str) -> None:
        assert store.schema(built) == SCHEMA

    def test_repeated_query_term_counts(self, store: IndexStore, index_name: str) -> None:
        """A word said twice weighs twice (bm25s, Lucene's `match`): long, verbose queries repeat what matters."""
        docs = [rec("alpha", "Alpha", "alpha gamma"), rec("beta", "Beta", "beta gamma")]
        docs += [rec(f"other{i}", "Other", "delta epsilon") for i in range(4)]
        version = store.create_version(index_name, DIMS, SCHEMA)
        assert store.upsert(version, docs).written == len(docs)
        store.refresh(version)
        # The two documents mirror each other: only the query's repeats can order them.
        assert [h.id for h in store.bm25_search(version, "alpha beta beta", 2)] == ["beta", "alpha"]
        assert [h.id for h in store.bm25_search(version, "alpha alpha beta", 2)] == ["alpha", "beta"]

    def test_swap_alias_compares_before_it_swaps(self, store: IndexStore, built: str) -> None:
        first = store.current_version(built)
        second = store.create_version(built, DIMS, SCHEMA)
        third = store.create_version(built, DIMS, SCHEMA)
        store.swap_alias(built, second, expected=first)
        assert store.current_version(built) == second
        # A build that started when `first` was live must not overwrite `second`.
        with pytest.raises(AliasConflict, match=built):
            store.swap_alias(built, third, expected=first)
        with pytest.raises(AliasConflict):
            store.swap_alias(built, third, expected=None)
        assert store.current_version(built) == second and store.count(built) == 0

    def test_swap_alias_on_a_new_index(self, store: IndexStore, index_name: str) -> None:
        version = store.create_version(index_name, DIMS, SCHEMA)
        store.swap_alias(index_name, version, expected=None)
        assert store.current_version(index_name) == version
        other = store.create_version(index_name, DIMS, SCHEMA)
        with pytest.raises(AliasConflict):
            store.swap_alias(index_name, other, expected=None)
        assert store.current_version(index_name) == version

    def test_build_lock_is_exclusive_until_released(self, store: IndexStore, index_name: str) -> None:
        lock = store.acquire_build_lock(index_name, "builder-a", 60)
        try:
            assert lock.lease.owner == "builder-a" and lock.lease.index == index_name
            with pytest.raises(LockHeld, match="builder-a") as err:
                store.acquire_build_lock(index_name, "builder-b", 60)
            assert str(lock.lease.pid) in str(err.value) and lock.lease.host in str(err.value)
            other = store.acquire_build_lock(f"{index_name}-x", "builder-b", 60)  # other indices are free
            other.release()
            before = lock.lease.expires
            lock.renew()
            assert lock.lease.expires > before
        finally:
            lock.release()
        lock.release()  # idempotent
        again = store.acquire_build_lock(index_name, "builder-b", 60)
        again.release()

    def test_expired_lease_is_taken_over(self, store: IndexStore, index_name: str) -> None:
        old = store.acquire_build_lock(index_name, "crashed", 0.3)
        time.sleep(0.5)
        new = store.acquire_build_lock(index_name, "rerun", 60)
        try:
            with pytest.raises(LockLost, match="rerun"):
                old.renew()
            old.release()  # not the holder any more: must leave the new lease alone
            with pytest.raises(LockHeld, match="rerun"):
                store.acquire_build_lock(index_name, "third", 60)
        finally:
            new.release()

    def test_renewed_lease_does_not_expire(self, store: IndexStore, index_name: str) -> None:
        lock = store.acquire_build_lock(index_name, "long-build", 2.0)
        try:
            for _ in range(3):  # 2.4 s in all, past the lease; each renewal has 1.2 s to spare on a loaded machine
                time.sleep(0.8)
                lock.renew()
            with pytest.raises(LockHeld):
                store.acquire_build_lock(index_name, "second", 60)
        finally:
            lock.release()
