"""Elasticsearch's vocabulary (`search.vocabulary`): stored in `sift-vocabulary`, or read from `_source`.

A build stores the vocabulary it counted (`save`) as a few documents of the `sift-vocabulary` index (one per
20,000 words, `enabled: false`: nothing indexed but the version), read back by one search. A version built
before that, or changed since (its stamp moved), is read from its documents:
The words are not read from Lucene's terms: `content_stems` holds stems, and a text field's terms cannot be
listed without fielddata. Each document's title, body and doc2query queries are scrolled instead (`_source`
filtering: no vectors) and go through `bm25_text` and `vocabulary_words`, exactly as the embedded store's side
does, so both stores give identical corrections. The stamp is one `_stats` call: the version behind the alias
and its primaries' document and indexing counters (an update or delete moves one of them; a refresh that made
new documents visible moves `docs.count`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from elasticsearch import helpers

from search.documents import EXPANSION_FIELD, Document, bm25_text
from search.vocabulary import Vocabulary, count_words

if TYPE_CHECKING:
    from search.stores.elasticsearch import ElasticsearchStore


VOCAB_INDEX = "sift-vocabulary"
_CHUNK = 20_000  # words per stored document (about 300 KB of JSON)
_MAX_CHUNKS = 500
_MAPPINGS: dict[str, Any] = {
    "dynamic": False,
    "properties": {
        "of_version": {"type": "keyword"},
        "part": {"type": "integer"},
        "words": {"type": "object", "enabled": False},
    },
}


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

    def stored(self, target: str) -> Vocabulary | None:

        version = self.store._resolve(target)
        hits = self._parts(version, with_source=True)
        if hits is None:
            return None
        parts = [h["_source"] for h in hits]
        meta = next((p for p in parts if p.get("part") == -1), None)
        if meta is None or len(parts) != int(meta["parts"]) + 1:
            return None  # never saved, or a save that did not finish
        df: dict[str, int] = {}
        for p in parts:
            if p.get("part", -1) >= 0:
                df.update(p["words"])
        return Vocabulary(version=version, df=df, n_docs=int(meta["n_docs"]), stamp=tuple(json.loads(meta["stamp"])))

    def forget(self, version: str) -> None:
        """Delete a dropped version's stored vocabulary (`ElasticsearchStore.drop_version`): nothing else would."""
        from search.stores.elasticsearch import _es_guard

        # Ids, then a bulk delete (a node may run without the reindex module that `_delete_by_query` needs).
        actions = [
            {"_op_type": "delete", "_index": VOCAB_INDEX, "_id": h["_id"]}
            for h in self._parts(version, with_source=False) or []
        ]
        if actions:
            _es_guard(lambda: helpers.bulk(self.store.client, actions, refresh="wait_for", raise_on_error=False))

    def _parts(self, version: str, *, with_source: bool) -> list[dict[str, Any]] | None:
        """The stored documents of `version`'s vocabulary (None: no vocabulary was ever stored on this cluster)."""
        from search.stores.elasticsearch import _es_guard

        client = self.store.client
        if not _es_guard(lambda: client.indices.exists(index=VOCAB_INDEX)):
            return None
        resp = _es_guard(
            lambda: client.search(
                index=VOCAB_INDEX,
                query={"term": {"of_version": version}},
                size=_MAX_CHUNKS + 1,
                source=with_source,
                track_total_hits=False,
            )
        )
        return list(resp["hits"]["hits"])

    def save(self, vocab: Vocabulary) -> None:
        from elasticsearch import BadRequestError

        from search.stores.elasticsearch import _es_guard

        client = self.store.client
        if not _es_guard(lambda: client.indices.exists(index=VOCAB_INDEX)):
            try:
                _es_guard(
                    lambda: client.indices.create(
                        index=VOCAB_INDEX,
                        mappings=_MAPPINGS,
                        settings={"number_of_shards": 1, "auto_expand_replicas": "0-1"},
                    )
                )
            except BadRequestError:  # created meanwhile by another writer
                pass
        words = sorted(vocab.df.items())
        chunks = [dict(words[i : i + _CHUNK]) for i in range(0, len(words), _CHUNK)]
        if len(chunks) > _MAX_CHUNKS:
            return  # an implausible vocabulary: left to the scan
        v = vocab.version
        old = _es_guard(lambda: client.options(ignore_status=404).get(index=VOCAB_INDEX, id=f"{v}:meta"))
        old_parts = int(old.get("_source", {}).get("parts", 0)) if old.get("found") else 0
        actions: list[dict[str, Any]] = [
            {"_index": VOCAB_INDEX, "_id": f"{v}:{i}", "of_version": v, "part": i, "words": c}
            for i, c in enumerate(chunks)
        ]
        gone = range(len(chunks), old_parts)  # parts of a larger vocabulary saved before
        actions += [{"_op_type": "delete", "_index": VOCAB_INDEX, "_id": f"{v}:{i}"} for i in gone]
        meta = {"parts": len(chunks), "n_docs": vocab.n_docs, "stamp": json.dumps(list(vocab.stamp))}
        actions.append({"_index": VOCAB_INDEX, "_id": f"{v}:meta", "of_version": v, "part": -1, **meta})
        _es_guard(lambda: helpers.bulk(client, actions, refresh="wait_for"))
