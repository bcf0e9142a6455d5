"""Which `SynonymStore` a search store keeps its sets in, and BM25 with synonyms over any store.

The embedded store's sets are files beside its versions (re-read on every change: a `stat` per search); the
Elasticsearch store's are documents in `sift-synonyms`, cached per process for `es_ttl_s` (other replicas see a
change within that; the one that made it at once).
"""

from __future__ import annotations

from collections.abc import Sequence

from search.documents import Hit
from search.filters import Filter
from search.stores.base import IndexStore
from search.synonyms import CachedSynonyms, SynonymQuery, SynonymSearchStore, SynonymSets, SynonymStore

ES_TTL_S = 2.0


def synonym_store(store: object) -> SynonymStore | None:
    """The sets' storage for `store` (None: a store kind without synonyms, such as a test double)."""
    from search.stores.elasticsearch import ElasticsearchStore
    from search.stores.embedded import EmbeddedStore

    if isinstance(store, EmbeddedStore):
        from search.stores.embedded_synonyms import EmbeddedSynonymStore

        return EmbeddedSynonymStore(store.data_dir)
    if isinstance(store, ElasticsearchStore):
        from search.stores.es_synonyms import EsSynonymStore

        return EsSynonymStore(lambda: store.client)
    return None


def synonyms_for(store: object, es_ttl_s: float = ES_TTL_S) -> CachedSynonyms | None:
    """What a search service reads its sets through (None where the store has no synonyms)."""
    syn = synonym_store(store)
    if syn is None or not isinstance(store, SynonymSearchStore):
        return None
    from search.stores.embedded import EmbeddedStore

    return CachedSynonyms(syn, ttl_s=0.0 if isinstance(store, EmbeddedStore) else es_ttl_s)


def bm25_with_synonyms(
    store: IndexStore, index: str, query: str, k: int, filters: Sequence[Filter], syn: SynonymQuery | None
) -> list[Hit]:
    """The BM25 side's ids and scores: with the synonym clauses when `syn` has any, else plain `bm25_search`."""
    if syn is not None and syn.clauses and isinstance(store, SynonymSearchStore):
        return store.bm25_synonym_search(index, syn, k, filters)
    return store.bm25_search(index, query, k, filters, with_docs=False)


def apply_config_synonyms(store: IndexStore, index: str, sets: SynonymSets | None) -> bool:
    """The indexing config's `synonyms:` written for `index` (None: the stored sets are left alone); whether it
    wrote them. Sets the API or the CLI wrote since are replaced: the config, once given, is what the index has."""
    if sets is None:
        return False
    syn = synonym_store(store)
    if syn is None:
        raise ValueError(f"{type(store).__name__} keeps no synonym sets; remove `synonyms:` from the config")
    if syn.get(index).sets != sets.sets:
        syn.put(index, sets)
    return True
