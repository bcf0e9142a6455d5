"""The typo-tolerance behaviour every store must show (mixed into `search.stores.contract.StoreContract`, so it
runs for the embedded store and a real Elasticsearch node alike): the same vocabulary, document frequencies and
corrections for the same corpus, and a vocabulary that follows updates. Imports pytest: import it from tests
only."""

from __future__ import annotations

import pytest

from search.documents import bm25_text
from search.schema import IndexSchema
from search.stores.base import IndexStore
from search.typo import TypoConfig, TypoTolerance
from search.vocabulary import StoredVocabularySource, VocabularyCounter, count_words, save_vocabulary, vocabulary_source

TYPO_DOCS = [
    ("t1", "Receiving packages", "How to receive a package when you are away."),
    ("t2", "Python argparse", "Parse command line arguments with argparse in Python."),
    ("t3", "Protein structures", "Protein folding decides the structure of proteins."),
    ("t4", "Receipts", "Keep the receipt of every purchase, 2024 model X200 and snake_case names."),
    ("t5", "Python packaging", "Build and publish a Python package."),
]

# query → what is searched (both stores must give exactly these)
CORRECTIONS = {
    "how to recieve a pakage": "how to receive a package",
    "Pyhton argprase": "Python argparse",
    "protien foldnig": "protein folding",
    "x201 2025 recipt": "x201 2025 receipt",
    "pkg receives packages": "pkg receives packages",  # short, a known stem, a known word: untouched
    "PROTIEN": "PROTEIN",
}


class TypoContract:
    """Subclasses (through `StoreContract`) provide `store` and `index_name`."""

    @pytest.fixture
    def typo_built(self, store: IndexStore, index_name: str) -> str:
        from search.stores.contract import DIMS, rec

        version = store.create_version(index_name, DIMS, IndexSchema())
        assert store.upsert(version, [rec(i, t, b) for i, t, b in TYPO_DOCS]).failures == []
        store.refresh(version)
        store.mark_complete(version)
        store.switch_alias(index_name, version)
        return index_name

    def test_vocabulary_is_the_corpus_words_with_document_frequencies(self, store: IndexStore, typo_built: str) -> None:
        source = vocabulary_source(store)
        assert source is not None
        vocab = source.vocabulary(typo_built)
        df, n = count_words(bm25_text(store.get(typo_built, i)) for i, _, _ in TYPO_DOCS)  # type: ignore[arg-type]
        assert dict(vocab.df) == df and vocab.n_docs == n == 5
        assert vocab.df["python"] == 2 and vocab.df["package"] == 2 and vocab.df["protein"] == 1
        assert "x200" not in vocab.df and "2024" not in vocab.df and "snake_case" not in vocab.df
        assert "the" not in vocab.df and vocab.version == store.current_version(typo_built)

    def test_corrections_are_the_same_in_every_store(self, store: IndexStore, typo_built: str) -> None:
        typos = TypoTolerance(store, TypoConfig(recheck_s=0, scan_wait_s=30))
        got = {q: typos.correct(typo_built, q).searched for q in CORRECTIONS}
        assert got == CORRECTIONS
        fix = typos.correct(typo_built, "Pyhton argprase")
        assert fix.corrected_query == "Python argparse" and fix.did_you_mean is None
        off = typos.correct(typo_built, "Pyhton argprase", enabled=False)
        assert off.searched == "Pyhton argprase" and off.corrected_query is None
        assert off.did_you_mean == "Python argparse"
        assert typos.correct_prefix(typo_built, "how to recei") == []  # a vocabulary prefix already
        assert typos.correct_prefix(typo_built, "pyhto")[0] == "pytho"
        assert typos.correct_prefix(typo_built, "recipt ") == ["receipt "]

    def test_vocabulary_follows_updates(self, store: IndexStore, typo_built: str) -> None:
        from search.stores.contract import rec

        typos = TypoTolerance(store, TypoConfig(recheck_s=0, scan_wait_s=30))
        assert typos.correct(typo_built, "protien").searched == "protein"
        store.delete(typo_built, ["t3"])
        store.upsert(typo_built, [rec("t6", "Proton beams", "Proton therapy with beams.")])
        store.refresh(typo_built)
        assert typos.correct(typo_built, "protien").searched == "protien"  # no protein left
        assert typos.correct(typo_built, "protn beams").searched == "proton beams"

    def test_stored_vocabulary_is_read_without_a_scan(self, store: IndexStore, typo_built: str) -> None:
        """What a build counted and stored is what a scan reads, and a search uses it without scanning; an update
        makes it stale (read again from the documents, in the background, and stored again)."""
        from search.stores.contract import rec

        source = vocabulary_source(store)
        assert isinstance(source, StoredVocabularySource)
        version = store.current_version(typo_built)
        assert version is not None and source.stored(typo_built) is None
        counter = VocabularyCounter()
        counter.add(bm25_text(store.get(typo_built, i)) for i, _, _ in TYPO_DOCS)  # type: ignore[arg-type]
        assert save_vocabulary(store, version, counter)
        stored = source.stored(typo_built)
        assert stored is not None and stored.stamp == source.stamp(typo_built)
        assert dict(stored.df) == dict(source.vocabulary(typo_built).df) and stored.n_docs == 5
        scans: list[str] = []
        scan = source.vocabulary
        source.vocabulary = lambda t: scans.append(t) or scan(t)  # type: ignore[method-assign, assignment, func-returns-value]
        typos = TypoTolerance(source, TypoConfig(recheck_s=0))  # scan_wait_s 0: a scan would mean no correction
        assert typos.correct(typo_built, "protien").searched == "protein" and scans == []
        store.upsert(typo_built, [rec("t6", "Proton beams", "Proton therapy with beams.")])
        store.refresh(typo_built)
        assert typos.correct(typo_built, "protn").searched == "protn"  # the old vocabulary while the scan runs
        thread = typos.vocabularies._scans[typo_built]  # type: ignore[union-attr]
        thread.join(30)
        assert scans == [typo_built] and typos.correct(typo_built, "protn").searched == "proton"
        again = source.stored(typo_built)
        assert again is not None and again.stamp == source.stamp(typo_built) and again.df["proton"] == 1
