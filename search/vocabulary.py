"""A per-index vocabulary with document frequencies: what typo tolerance corrects query words against.

The words are the ones BM25 sees (`search.text`'s tokens: two or more word characters, lower-cased, Lucene's
English stop words out) before the Snowball stemmer, so a correction is a word a reader recognises and the dense
encoder understands ("recieve" → "receive", not the stem "receiv"). Words holding a digit or an underscore
(numbers, codes, identifiers) and words longer than `MAX_WORD_CHARS` are left out: the corrector never touches
such query words, and never turns a query word into one.

Both stores derive it the same way, from each stored document's `bm25_text` (title, body, doc2query queries),
so the two give identical corrections for the same corpus (the contract suite checks it).

Where it comes from, cheapest first: a full build counts it while writing (`VocabularyCounter`, fed by
`indexing.pipeline`) and stores it with the version (`save_vocabulary`: the embedded store's version file, the
`sift-vocabulary` index on Elasticsearch), so a search reads it in one request. It is stored with the version's
`stamp` (its name and write counters); when the stamp has moved since (an incremental update, or on
Elasticsearch a node restart, which resets its counters) or a version was built before this, the vocabulary is
read from the stored documents (`search.stores.embedded_vocab`, `search.stores.es_vocab`: one pass over the
corpus, seconds on a large one) in a background thread, and stored again. Searches never wait for that pass
(`CachedVocabulary.get` returns what it holds, or None: the search goes uncorrected, with a log line).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from search.text import ENGLISH_STOPWORDS

log = logging.getLogger("sift.typo")

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


@runtime_checkable
class StoredVocabularySource(VocabularySource, Protocol):
    """A store that keeps a version's vocabulary next to it (written by a build, read in one request)."""

    def stored(self, target: str) -> Vocabulary | None:
        """The vocabulary saved for the version `target` names, with the stamp it was saved at; None: none."""

    def save(self, vocab: Vocabulary) -> None:
        """Keep `vocab` (its `stamp` says which state of `vocab.version` it counts) for `stored`."""


class VocabularyCounter:
    """Counts the vocabulary of the documents a build writes (each document's `bm25_text`, once)."""

    def __init__(self) -> None:
        self.df: Counter[str] = Counter()
        self.n_docs = 0
        self._lock = threading.Lock()

    def add(self, texts: Iterable[str]) -> None:
        df, n = count_words(texts)
        with self._lock:
            self.df.update(df)
            self.n_docs += n


def save_vocabulary(store: object, version: str, counter: VocabularyCounter) -> bool:
    """Store a finished build's counted vocabulary with `version` (call after its last write and refresh, so the
    stamp is the one searches will see). False when the store keeps none or the write failed: searches then
    read it from the documents, as for a version built before this."""
    source = vocabulary_source(store)
    if not isinstance(source, StoredVocabularySource):
        return False
    try:
        stamp = source.stamp(version)
        source.save(Vocabulary(version, dict(counter.df), counter.n_docs, stamp))
    except Exception as exc:  # the build succeeded; the first search will read the vocabulary instead
        log.warning("the vocabulary of %s was not stored (%s): searches will read it", version, exc)
        return False
    return True


class CachedVocabulary:
    """The vocabulary of each alias in memory. A search costs a dict lookup; at most every `recheck_s` a search
    asks the store's `stamp` (one small request). When the stamp moved (an alias swap, an update), the vocabulary
    stored with the version is read (one request) if it was saved at that stamp; otherwise one background thread
    per alias reads it from the documents and stores it, and searches meanwhile get what is held for the same
    version (the state before the update) or None, after waiting at most `wait_s`. `on_change(alias,
    vocabulary)` lets a caller drop what it derived."""

    def __init__(
        self,
        source: VocabularySource,
        recheck_s: float = 30.0,
        on_change: Callable[[str, Vocabulary], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        wait_s: float = 0.0,
    ) -> None:
        self.source = source
        self.recheck_s = recheck_s
        self.wait_s = wait_s
        self._on_change = on_change
        self._clock = clock
        self._held: dict[str, tuple[float, Vocabulary]] = {}  # alias → (checked at, vocabulary)
        self._locks: dict[str, threading.Lock] = {}
        self._scans: dict[str, threading.Thread] = {}  # alias → its running background read
        self._guard = threading.Lock()

    def get(self, target: str) -> Vocabulary | None:
        """The vocabulary of `target`, or None while it is being read from the documents."""
        now = self._clock()
        held = self._held.get(target)
        if held is not None and now - held[0] < self.recheck_s:
            return held[1]
        with self._guard:
            lock = self._locks.setdefault(target, threading.Lock())
        with lock:  # one stamp check per alias at a time
            held = self._held.get(target)
            if held is not None and self._clock() - held[0] < self.recheck_s:
                return held[1]
            stamp = self.source.stamp(target)
            if held is not None and held[1].stamp == stamp:
                self._held[target] = (self._clock(), held[1])
                return held[1]
            stored = self.source.stored(target) if isinstance(self.source, StoredVocabularySource) else None
            if stored is not None and stored.stamp == stamp:
                self._hold(target, stored)
                return stored
            scan = self._scan(target, stamp)
        if self.wait_s > 0:
            scan.join(self.wait_s)
            fresh = self._held.get(target)
            if fresh is not None and fresh[1].stamp == stamp:
                return fresh[1]
        version = stamp[0] if stamp else None
        if held is not None and held[1].version == version:
            return held[1]  # the same version before its update: better than no correction
        log.info("typo tolerance off for %r until its vocabulary is read from the documents", target)
        return None

    def _hold(self, target: str, vocab: Vocabulary) -> None:
        self._held[target] = (self._clock(), vocab)
        if self._on_change is not None:
            self._on_change(target, vocab)

    def _scan(self, target: str, stamp: tuple[object, ...]) -> threading.Thread:
        """Start (or join) the background read of `target`'s vocabulary; it is held and stored when done."""
        with self._guard:
            running = self._scans.get(target)
            if running is not None and running.is_alive():
                return running

            def read() -> None:
                try:
                    vocab = self.source.vocabulary(target)
                    vocab = Vocabulary(vocab.version, vocab.df, vocab.n_docs, stamp)
                except Exception as exc:
                    log.warning("the vocabulary of %r could not be read (%s)", target, type(exc).__name__)
                    return
                self._hold(target, vocab)
                if isinstance(self.source, StoredVocabularySource) and stamp and stamp[0] == vocab.version:
                    try:
                        self.source.save(vocab)  # the next process reads it in one request
                    except Exception as exc:
                        log.warning("the vocabulary of %s was not stored (%s)", vocab.version, type(exc).__name__)

            thread = threading.Thread(target=read, name=f"sift-vocab-{target}", daemon=True)
            self._scans[target] = thread
            thread.start()
            return thread

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
