"""A per-index vocabulary with document frequencies: what typo tolerance corrects query words against.

The words are the ones BM25 sees (`search.text`'s tokens: two or more word characters, lower-cased, Lucene's
English stop words out) before the Snowball stemmer, so a correction is a word a reader recognises and the dense
encoder understands ("recieve" → "receive", not the stem "receiv"). Words holding a digit or an underscore
(numbers, codes, identifiers) and words longer than `MAX_WORD_CHARS` are left out: the corrector never touches
such query words, and never turns a query word into one.

Both stores derive it the same way, from each stored document's `bm25_text` (title, body, doc2query queries),
so the two give identical corrections for the same corpus (the contract suite checks it): the embedded store
reads its `docs` table (`search.stores.embedded_vocab`), Elasticsearch scrolls the version's `_source`
(`search.stores.es_vocab`). That is one pass over the corpus per version, paid by the first search that needs it
and then held in memory (`CachedVocabulary`); a cheap `stamp` (a version's name and write counters) says when
an incremental update changed the version, and the vocabulary is read again.
"""

from __future__ import annotations

import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from search.text import ENGLISH_STOPWORDS

MAX_WORD_CHARS = 40  # longer tokens are hashes, URLs' parts, chemical names: never a typo target
_WORD = re.compile(r"\w\w+", re.UNICODE)  # the BM25 token pattern (search.text.bm25_terms)


def vocabulary_words(text: str) -> set[str]:
    """The distinct words a document adds to the vocabulary (each counts once: document frequency)."""
    return {
        w
        for w in _WORD.findall(text.lower())
        if len(w) <= MAX_WORD_CHARS and w.isalpha() and w not in ENGLISH_STOPWORDS
    }


def count_words(texts: Iterable[str]) -> tuple[dict[str, int], int]:
    """Document frequency of every vocabulary word over `texts` (one per document), and the number of texts."""
    df: Counter[str] = Counter()
    n = 0
    for text in texts:
        df.update(vocabulary_words(text))
        n += 1
    return dict(df), n


@dataclass(frozen=True)
class Vocabulary:
    """One version's words and their document frequencies."""

    version: str
    df: Mapping[str, int]
    n_docs: int
    stamp: tuple[object, ...] = field(default=())

    def __contains__(self, word: object) -> bool:
        return word in self.df


@runtime_checkable
class VocabularySource(Protocol):
    """A store's vocabulary, read from what the version stores. `target`: an alias or a version name."""

    def vocabulary(self, target: str) -> Vocabulary:
        """Every word of the version `target` names, with its document frequency (a pass over the corpus)."""

    def stamp(self, target: str) -> tuple[object, ...]:
        """Cheap: the version `target` names and counters that change when it is written to."""


class CachedVocabulary:
    """The vocabulary of each alias in memory. A search costs a dict lookup; at most every `recheck_s` a search
    asks the store's `stamp` (one small request) and reads the vocabulary again only when the stamp moved (an
    alias swap, an incremental update). `on_change(alias, vocabulary)` lets a caller drop what it derived."""

    def __init__(
        self,
        source: VocabularySource,
        recheck_s: float = 30.0,
        on_change: Callable[[str, Vocabulary], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.source = source
        self.recheck_s = recheck_s
        self._on_change = on_change
        self._clock = clock
        self._held: dict[str, tuple[float, Vocabulary]] = {}  # alias → (checked at, vocabulary)
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def get(self, target: str) -> Vocabulary:
        now = self._clock()
        held = self._held.get(target)
        if held is not None and now - held[0] < self.recheck_s:
            return held[1]
        with self._guard:
            lock = self._locks.setdefault(target, threading.Lock())
        with lock:  # one reader per alias: concurrent searches of a cold alias wait for the same pass
            held = self._held.get(target)
            if held is not None and self._clock() - held[0] < self.recheck_s:
                return held[1]
            stamp = self.source.stamp(target)
            if held is not None and held[1].stamp == stamp:
                self._held[target] = (self._clock(), held[1])
                return held[1]
            vocab = self.source.vocabulary(target)
            vocab = Vocabulary(vocab.version, vocab.df, vocab.n_docs, stamp)
            self._held[target] = (self._clock(), vocab)
        if self._on_change is not None:
            self._on_change(target, vocab)
        return vocab

    def forget(self, target: str | None = None) -> None:
        """Drop the vocabulary of `target` (all when None): the next search reads it again."""
        if target is None:
            self._held.clear()
        else:
            self._held.pop(target, None)


def vocabulary_source(store: object) -> VocabularySource | None:
    """The vocabulary reader for a store, or None for a store that has none (typo tolerance is then off)."""
    if isinstance(store, VocabularySource):
        return store
    from search.stores.embedded import EmbeddedStore

    if isinstance(store, EmbeddedStore):
        from search.stores.embedded_vocab import EmbeddedVocabulary

        return EmbeddedVocabulary(store)
    from search.stores.elasticsearch import ElasticsearchStore

    if isinstance(store, ElasticsearchStore):
        from search.stores.es_vocab import EsVocabulary

        return EsVocabulary(store)
    return None
