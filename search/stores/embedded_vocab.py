"""The embedded store's vocabulary (`search.vocabulary`): stored in the version file, or read from its `docs`.

A build stores the vocabulary it counted (`save`) in the version file's own `vocab` and `vocab_meta` tables, so a
search reads it in two queries; a version built before that, or changed since (its stamp moved), is read from
the `docs` table: each stored document's `bm25_text` goes through `vocabulary_words`, exactly as Elasticsearch's
side does over its `_source`, so both stores give the same words and document frequencies for the same corpus.
The stamp is the version's name, its row count and the last row id handed out (`sqlite_sequence`: an upsert
deletes the old row and inserts a new one, so every write moves one of the two), two reads of a few pages;
writing the vocabulary tables moves neither.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import TYPE_CHECKING

from search.documents import Document, bm25_text
from search.vocabulary import Vocabulary, count_words

if TYPE_CHECKING:
    from search.stores.embedded import EmbeddedStore

_TABLES = (
    "CREATE TABLE IF NOT EXISTS vocab (word TEXT PRIMARY KEY, df INTEGER NOT NULL) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS vocab_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
)


class EmbeddedVocabulary:
    """`VocabularySource` and `StoredVocabularySource` over an `EmbeddedStore`."""

    def __init__(self, store: EmbeddedStore) -> None:
        self.store = store

    def _version(self, target: str) -> str:
        return self.store._resolve(target)

    def stamp(self, target: str) -> tuple[object, ...]:
        version = self._version(target)
        c = self.store._open(version).conn()
        n = c.execute("SELECT count(*) FROM docs").fetchone()[0]
        seq = c.execute("SELECT seq FROM sqlite_sequence WHERE name='docs'").fetchone()
        return (version, int(n), int(seq[0]) if seq else 0)

    def vocabulary(self, target: str) -> Vocabulary:
        version = self._version(target)
        df, n = count_words(self._texts(version))
        return Vocabulary(version=version, df=df, n_docs=n)

    def stored(self, target: str) -> Vocabulary | None:
        version = self._version(target)
        c = self.store._open(version).conn()
        has = c.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='vocab_meta'").fetchone()
        if not has:
            return None
        meta = dict(c.execute("SELECT key, value FROM vocab_meta").fetchall())
        if "stamp" not in meta:
            return None
        df = dict(c.execute("SELECT word, df FROM vocab").fetchall())
        stamp = tuple(json.loads(meta["stamp"]))
        return Vocabulary(version=version, df=df, n_docs=int(meta["n_docs"]), stamp=stamp)

    def save(self, vocab: Vocabulary) -> None:
        c = self.store._open(vocab.version).conn()
        c.executescript(_TABLES)
        c.execute("BEGIN IMMEDIATE")
        try:
            c.execute("DELETE FROM vocab")
            c.execute("DELETE FROM vocab_meta")
            c.executemany("INSERT INTO vocab VALUES (?, ?)", list(vocab.df.items()))
            meta = {"stamp": json.dumps(list(vocab.stamp)), "n_docs": str(vocab.n_docs)}
            c.executemany("INSERT INTO vocab_meta VALUES (?, ?)", list(meta.items()))
            c.execute("COMMIT")
        except BaseException:
            c.execute("ROLLBACK")
            raise

    def _texts(self, version: str) -> Iterator[str]:
        cur = self.store._open(version).conn().execute("SELECT doc FROM docs ORDER BY rid")
        while rows := cur.fetchmany(1000):
            for (raw,) in rows:
                # json.loads + model_construct: the stored JSON was validated when written, and a full
                # validation of every document doubled the pass.
                yield bm25_text(Document.model_construct(**json.loads(raw)))
