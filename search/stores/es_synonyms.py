"""Elasticsearch's synonyms: the sets in a small system index, and BM25 with synonym clauses in one `bool`.

Sets: one document per index alias in `sift-synonyms` (its `sets` kept in `_source`, not indexed), written with
compare-and-set (`if_seq_no`/`if_primary_term`) so two writers never reuse a version; reads are realtime GETs.

Search: the query's own terms are the `match` on `content_stems` that `bm25_search` runs (the same score), and
each synonym clause is a `should` beside it: a one-word clause a boosted `term`, a multi-word one a boosted
`bool` whose `must` sums its words' BM25 and whose `filter` is the phrase (its stems adjacent). Lucene sums the
clauses, as the embedded store's SQL does. Versions whose BM25 field Elasticsearch analyses (`content`) get plain
BM25 without synonyms.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from elasticsearch import ConflictError, NotFoundError

from search.documents import Hit
from search.filters import Filter
from search.naming import validate_index_name, version_alias
from search.stores.base import IndexNotFound
from search.synonyms import StoredSynonyms, SynonymQuery, SynonymSets

if TYPE_CHECKING:
    from elasticsearch import Elasticsearch

SYNONYM_INDEX = "sift-synonyms"
_MAPPINGS: dict[str, Any] = {
    "dynamic": False,
    "properties": {
        "index": {"type": "keyword"},
        "version": {"type": "long"},
        "updated": {"type": "date"},
        "sets": {"type": "object", "enabled": False},
    },
}


class EsSynonymSearch:
    """Mixed into `ElasticsearchStore` (which provides the client, filters, the stems check and `bm25_search`)."""

    _has_stems: Callable[[str], bool]
    _filter_clauses: Callable[[str, Sequence[Filter]], list[dict[str, Any]]]
    bm25_search: Callable[..., list[Hit]]

    @property
    def client(self) -> Elasticsearch:  # overridden by ElasticsearchStore
        raise NotImplementedError

    def bm25_synonym_search(
        self, target: str, query: SynonymQuery, k: int, filters: Sequence[Filter] = ()
    ) -> list[Hit]:
        """Top `k` (ids and scores) by the query's own BM25 plus its synonym clauses'."""
        from search.stores.elasticsearch import _es_guard

        if not self._has_stems(target):
            return self.bm25_search(target, " ".join(query.terms), k, filters, with_docs=False)
        if k <= 0 or not (query.terms or query.clauses):
            return []
        should: list[dict[str, Any]] = []
        if query.terms:
            should.append({"match": {"content_stems": {"query": " ".join(query.terms)}}})
        for c in query.clauses:
            if len(c.stems) == 1:
                should.append({"term": {"content_stems": {"value": c.stems[0], "boost": float(c.weight)}}})
                continue
            words = [{"term": {"content_stems": s}} for s in c.stems]
            phrase = {"match_phrase": {"content_stems": " ".join(c.stems)}}
            should.append({"bool": {"must": words, "filter": [phrase], "boost": float(c.weight)}})
        body = {"bool": {"should": should, "minimum_should_match": 1, "filter": self._filter_clauses(target, filters)}}
        ids_only: dict[str, Any] = {"source": False, "stored_fields": "_none_", "docvalue_fields": ["id"]}
        resp = _es_guard(
            lambda: self.client.search(index=target, query=body, size=k, track_total_hits=False, **ids_only)
        )
        return [Hit(id=h["fields"]["id"][0], score=float(h["_score"])) for h in resp["hits"]["hits"]]


class EsSynonymStore:
    """`SynonymStore` over the `sift-synonyms` index (`client`: the store's, read when first needed)."""

    def __init__(self, client: Callable[[], Elasticsearch], index: str = SYNONYM_INDEX) -> None:
        self._client = client
        self.index = index

    @staticmethod
    def _key(index: str) -> str:
        return validate_index_name(version_alias(index) or index)

    def _read(self, key: str) -> tuple[StoredSynonyms, tuple[int, int] | None]:
        from search.stores.elasticsearch import _es_guard

        try:
            resp = _es_guard(lambda: self._client().get(index=self.index, id=key))
        except (NotFoundError, IndexNotFound):  # no such document, or no index yet
            return StoredSynonyms(index=key, version=0), None
        src = resp["_source"]
        stored = StoredSynonyms(
            index=key,
            version=int(src.get("version", 0)),
            sets=SynonymSets.model_validate(src.get("sets") or []).sets,
            updated=src.get("updated"),
        )
        return stored, (int(resp["_seq_no"]), int(resp["_primary_term"]))

    def get(self, index: str) -> StoredSynonyms:
        return self._read(self._key(index))[0]

    def _ensure_index(self) -> None:
        from search.stores.elasticsearch import _es_guard

        client = self._client()
        if not _es_guard(lambda: client.indices.exists(index=self.index)):
            settings = {"number_of_shards": 1, "auto_expand_replicas": "0-1"}
            try:
                _es_guard(lambda: client.indices.create(index=self.index, mappings=_MAPPINGS, settings=settings))
            except Exception as exc:  # created meanwhile by another writer
                if "resource_already_exists" not in str(exc):
                    raise

    def put(self, index: str, sets: SynonymSets) -> StoredSynonyms:
        from search.stores.elasticsearch import _es_guard

        key = self._key(index)
        self._ensure_index()
        for _ in range(10):  # compare-and-set: a concurrent writer makes us re-read and retry
            before, seq = self._read(key)
            stored = StoredSynonyms(
                index=key, version=before.version + 1, sets=sets.sets, updated=datetime.now(UTC).isoformat()
            )
            doc = {"index": key, "version": stored.version, "updated": stored.updated, "sets": sets.model_dump()}
            cas: dict[str, Any] = {"if_seq_no": seq[0], "if_primary_term": seq[1]} if seq else {"op_type": "create"}
            try:
                _es_guard(lambda d=doc, c=cas: self._client().index(index=self.index, id=key, document=d, **c))  # type: ignore[misc]
            except ConflictError:
                continue
            return stored
        raise RuntimeError(f"the synonyms of {key!r} kept changing while being written; retry")

    def delete(self, index: str) -> bool:
        """Clears the sets, keeping the document and its counter (a later put must not reuse a version)."""
        existed = bool(self.get(index).sets)
        if existed:
            self.put(index, SynonymSets())
        return existed
