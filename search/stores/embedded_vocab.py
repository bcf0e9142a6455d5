"""The embedded store's vocabulary (`search.vocabulary`): read from the version file's `docs` table.

Each stored document's `bm25_text` goes through `vocabulary_words`, exactly as Elasticsearch's side does over
its `_source`, so both stores give the same words and document frequencies for the same corpus. The stamp is
the version's name, its row count and the last row id handed out (`sqlite_sequence`: an upsert deletes the old
row and inserts a new one, so every write moves one of the two), two reads of a few pages.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import TYPE_CHECKING

from search.documents import Document, bm25_text
from search.vocabulary import Vocabulary, count_words

if TYPE_CHECKING:
    from search.stores.embedded import EmbeddedStore


class EmbeddedVocabulary:
    """`VocabularySource` over an `EmbeddedStore`."""

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

    def _texts(self, version: str) -> Iterator[str]:
        cur = self.store._open(version).conn().execute("SELECT doc FROM docs ORDER BY rid")
        while rows := cur.fetchmany(1000):
            for (raw,) in rows:
                # json.loads + model_construct: the stored JSON was validated when written, and a full
                # validation of every document doubled the pass.
                yield bm25_text(Document.model_construct(**json.loads(raw)))
