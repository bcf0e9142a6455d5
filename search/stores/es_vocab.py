"""Elasticsearch's vocabulary (`search.vocabulary`): read from the version's `_source`.

The words are not read from Lucene's terms: `content_stems` holds stems, and a text field's terms cannot be
listed without fielddata. Each document's title, body and doc2query queries are scrolled instead (`_source`
filtering: no vectors) and go through `bm25_text` and `vocabulary_words`, exactly as the embedded store's side
does, so both stores give identical corrections. The stamp is one `_stats` call: the version behind the alias
and its primaries' document and indexing counters (an update or delete moves one of them; a refresh that made
new documents visible moves `docs.count`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from elasticsearch import helpers

from search.documents import EXPANSION_FIELD, Document, bm25_text
from search.vocabulary import Vocabulary, count_words

if TYPE_CHECKING:
    from search.stores.elasticsearch import ElasticsearchStore


class EsVocabulary:
    """`VocabularySource` over an `ElasticsearchStore`."""

    def __init__(self, store: ElasticsearchStore, page: int = 2000) -> None:
        self.store = store
        self.page = page

    def stamp(self, target: str) -> tuple[object, ...]:
        from search.stores.elasticsearch import _es_guard

        version = self.store._resolve(target)
        resp = _es_guard(lambda: self.store.client.indices.stats(index=version, metric=["docs", "indexing"]))
        prim = resp["indices"][version]["primaries"]
        docs, ix = prim.get("docs", {}), prim.get("indexing", {})
        return (
            version,
            int(docs.get("count", 0)),
            int(docs.get("deleted", 0)),
            int(ix.get("index_total", 0)),
            int(ix.get("delete_total", 0)),
        )

    def vocabulary(self, target: str) -> Vocabulary:
        from search.stores.elasticsearch import _es_guard

        version = self.store._resolve(target)
        df, n = _es_guard(lambda: count_words(self._texts(version)))
        return Vocabulary(version=version, df=df, n_docs=n)

    def _texts(self, version: str) -> Iterator[str]:
        hits = helpers.scan(
            self.store.client,
            index=version,
            _source=["id", "title", "body", f"fields.{EXPANSION_FIELD}"],
            size=self.page,
            scroll="2m",
            preserve_order=False,
        )
        for h in hits:
            src = h.get("_source", {})
            yield bm25_text(Document.model_construct(**{k: v for k, v in src.items() if k in Document.model_fields}))
