"""ElasticsearchStore: versioned indices behind an alias on an Elasticsearch 8.x cluster.

BM25 scores one title + body field: `content_stems` (`analyzer: snowball`, the default), analysed in Python by
`search.text.bm25_terms` as the embedded store and bm25s are, or `content`, analysed by Elasticsearch (hunspell;
`english` on a full cluster). A version has one of the two. Nested chunk vectors: a document scores as its best.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal, TypeVar

from elastic_transport.client_utils import DEFAULT
from elasticsearch import ApiError, BadRequestError, Elasticsearch, NotFoundError, TransportError, helpers
from elasticsearch import ConnectionError as EsConnectionError
from pydantic import BaseModel, ConfigDict, Field
from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_exponential

from search.documents import Document, Hit, StoredRecord, bm25_text
from search.filters import Filter, RangeFilter, TermFilter, TermsFilter
from search.naming import new_version_name, validate_index_name, version_alias
from search.schema import BUILTIN_FIELDS, IndexSchema, coerce
from search.stores.base import BuildLock, IndexNotFound, StoreError, StoreUnavailable, VersionInfo, WriteResult
from search.stores.es_bulk import bulk_delete, bulk_failures
from search.stores.es_facets import EsFacets
from search.stores.es_feedback import EsFeedback
from search.stores.es_locks import acquire_es_lock, es_swap_alias
from search.stores.es_mapping import version_mappings
from search.stores.es_synonyms import EsSynonymSearch
from search.text import bm25_terms

T = TypeVar("T")

_ANALYZERS: dict[str, dict[str, Any]] = {
    "hunspell_en": {
        "analyzer": {"sift_text": {"tokenizer": "standard", "filter": ["lowercase", "sift_stop", "sift_hunspell"]}},
        "filter": {
            "sift_stop": {"type": "stop", "stopwords": "_english_"},
            "sift_hunspell": {"type": "hunspell", "locale": "en_US", "dedup": True},
        },
    },
    "english": {"analyzer": {"sift_text": {"type": "english"}}},
    "standard": {"analyzer": {"sift_text": {"type": "standard", "stopwords": "_english_"}}},
    "snowball": {"analyzer": {"sift_text": {"type": "standard", "stopwords": "_english_"}}},  # BM25: content_stems
}


_SOURCE_EXCLUDES = ["chunks", "content_hash", "content_stems"]  # vectors and bookkeeping: never part of a Document


class EsIndexConfig(BaseModel):
    """How physical indices are laid out."""

    model_config = ConfigDict(extra="forbid")

    analyzer: Literal["snowball", "hunspell_en", "english", "standard"] = Field(
        default="snowball",
        description="BM25 text: `snowball` = `search.text.bm25_terms` in `content_stems` (the embedded store's "
        "terms); the others: Elasticsearch's analysis of title/body copied into `content`.",
    )
    vector_index: Literal["hnsw", "int8_hnsw"] = Field(
        default="hnsw", description="HNSW over float32, or int8-quantized HNSW (4x less memory)."
    )
    shards: int = Field(default=1, ge=1, description="Primary shards per version.")
    replicas: int = Field(default=0, ge=0, description="Replicas per version.")
    num_candidates_factor: float = Field(
        default=2.0, ge=1.0, description="kNN candidates per shard as a multiple of k (at least 100)."
    )


def _es_guard(fn: Callable[[], T]) -> T:
    """Translate client errors into store errors callers understand."""
    try:
        return fn()
    except EsConnectionError as exc:
        raise StoreUnavailable(f"Elasticsearch unreachable: {exc}") from exc
    except NotFoundError as exc:
        raise IndexNotFound(str(exc)) from exc
    except BadRequestError as exc:
        raise ValueError(f"Elasticsearch rejected the request: {exc}") from exc
    except TransportError as exc:
        raise StoreUnavailable(f"Elasticsearch transport error: {exc}") from exc
    except ApiError as exc:  # 429 (queue full, circuit breaker) and 5xx: overloaded or failing, retry later
        if exc.status_code == 429 or exc.status_code >= 500:
            raise StoreUnavailable(f"Elasticsearch answered {exc.status_code}: {exc.message}") from exc
        raise


class ElasticsearchStore(EsFeedback, EsSynonymSearch, EsFacets):
    """IndexStore over an Elasticsearch 8.x cluster (RM3's term statistics and weighted BM25: `EsFeedback`)."""

    def __init__(
        self,
        url: str,
        config: EsIndexConfig | None = None,
        *,
        basic_auth: tuple[str, str] | None = None,
        api_key: str | None = None,
        request_timeout: float = 30.0,
        ca_certs: str | None = None,
        retry_busy: bool = True,
    ) -> None:
        self.url = url
        self._retry_busy = retry_busy  # serving: no retry past the deadline, nor extra load on a recovering node
        self._ca_certs = ca_certs  # a private CA's PEM (ECK's self-signed HTTP certificate)
        self.config = config or EsIndexConfig()
        self._auth, self._api_key = basic_auth, api_key
        self._timeout = request_timeout
        self._client: Elasticsearch | None = None
        self._schemas: dict[str, IndexSchema] = {}
        self._stems: dict[str, bool] = {}  # version → BM25 terms analysed in Python (`content_stems`)

    # -- lifecycle -----------------------------------------------------------------------------------
    def warm_up(self) -> None:
        if self._client is None:
            self._client = Elasticsearch(
                self.url,
                basic_auth=self._auth,
                api_key=self._api_key,
                request_timeout=self._timeout,
                ca_certs=self._ca_certs or DEFAULT,
                max_retries=2,
                retry_on_timeout=self._retry_busy,
                retry_on_status=DEFAULT if self._retry_busy else (),  # the client's default: 429, 502-504
            )

    @property
    def client(self) -> Elasticsearch:
        self.warm_up()
        assert self._client is not None
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def ping(self) -> bool:
        """Liveness via cluster health (`GET /` is not served by every distribution)."""
        try:
            self.client.cluster.health(timeout="2s")
            return True
        except (EsConnectionError, TransportError, ApiError):
            return False

    # -- versions and aliases -------------------------------------------------------------------------
    def create_version(self, name: str, dims: int, schema: IndexSchema) -> str:
        validate_index_name(name)
        version = new_version_name(name)
        settings = {
            "number_of_shards": self.config.shards,
            "number_of_replicas": self.config.replicas,
            "analysis": _ANALYZERS[self.config.analyzer],
            # A version under construction is not searched: skip periodic refreshes until it is complete.
            "refresh_interval": "-1",
        }
        mappings = version_mappings(dims, schema, self.config.analyzer, self.config.vector_index)
        _es_guard(lambda: self.client.indices.create(index=version, settings=settings, mappings=mappings))
        self._schemas[version] = schema
        self._stems[version] = self.config.analyzer == "snowball"
        return version

    def _meta(self, target: str) -> dict[str, Any]:
        resp = _es_guard(lambda: self.client.indices.get_mapping(index=target))
        if not resp:
            raise IndexNotFound(f"no index or version named {target!r}")
        body = next(iter(resp.body.values()))
        return dict(body["mappings"].get("_meta", {}).get("sift", {}))

    def mark_complete(self, version: str) -> None:
        meta = self._meta(version)
        meta["complete"] = True
        _es_guard(lambda: self.client.indices.put_mapping(index=version, meta={"sift": meta}))
        _es_guard(lambda: self.client.indices.put_settings(index=version, settings={"refresh_interval": None}))

    def switch_alias(self, name: str, version: str) -> None:
        validate_index_name(name)
        actions: list[dict[str, Any]] = [{"add": {"index": version, "alias": name}}]
        current = self.current_version(name)
        if current and current != version:
            actions.insert(0, {"remove": {"index": current, "alias": name}})
        _es_guard(lambda: self.client.indices.update_aliases(actions=actions))

    def swap_alias(self, name: str, version: str, expected: str | None) -> None:
        validate_index_name(name)
        es_swap_alias(self.client, name, version, expected, lambda: self.current_version(name))

    def acquire_build_lock(self, index: str, owner: str, lease_s: float) -> BuildLock:
        validate_index_name(index)
        return acquire_es_lock(self.client, index, owner, lease_s)

    def current_version(self, name: str) -> str | None:
        try:
            resp = _es_guard(lambda: self.client.indices.get_alias(name=name))
        except IndexNotFound:
            return None
        versions = sorted(resp.body)
        return versions[-1] if versions else None

    def list_versions(self, name: str) -> list[VersionInfo]:
        resp = _es_guard(
            lambda: self.client.indices.get_mapping(index=f"{name}-v*", allow_no_indices=True, expand_wildcards="open")
        )
        out = []
        for version in sorted(resp.body):
            if version_alias(version) != name:
                continue
            meta = resp.body[version]["mappings"].get("_meta", {}).get("sift", {})
            out.append(VersionInfo(name=name, version=version, complete=bool(meta.get("complete")), count=None))
        return out

    def drop_version(self, version: str) -> None:
        name = version_alias(version)
        if name is None:
            raise ValueError(f"{version!r} is not a version name")
        if self.current_version(name) == version:
            raise StoreError(f"refusing to drop {version!r}: the alias {name!r} points at it")
        _es_guard(lambda: self.client.indices.delete(index=version, ignore_unavailable=True))
        from search.stores.es_vocab import EsVocabulary

        EsVocabulary(self).forget(version)
        self._schemas.pop(version, None)
        self._stems.pop(version, None)

    def schema(self, target: str) -> IndexSchema:
        version = self._resolve(target)
        if version not in self._schemas:
            self._schemas[version] = IndexSchema.model_validate(self._meta(version).get("schema", {}))
        return self._schemas[version]

    def _has_stems(self, target: str) -> bool:
        """Whether the version writes `content_stems` (versions built before it have `content` only)."""
        version = self._resolve(target)
        if version not in self._stems:
            self._stems[version] = bool(self._meta(version).get("stems"))
        return self._stems[version]

    def _resolve(self, target: str) -> str:
        if version_alias(target) is not None:
            return target
        current = self.current_version(target)
        if current is None:
            raise IndexNotFound(f"index {target!r} does not exist (no version has been built yet)")
        return current

    # -- writes ---------------------------------------------------------------------------------------
    @staticmethod
    def _source(rec: StoredRecord, stems: bool) -> dict[str, Any]:
        doc = rec.doc
        src: dict[str, Any] = doc.model_dump(mode="json", exclude={"deleted"})
        src["content_hash"] = rec.content_hash or doc.content_hash()
        if stems:
            src["content_stems"] = " ".join(bm25_terms(bm25_text(doc)))
        spans = rec.chunk_spans or [(0, 0)] * len(rec.vectors)
        src["chunks"] = [{"vector": vec, "start": s, "end": e} for vec, (s, e) in zip(rec.vectors, spans, strict=True)]
        return src

    @retry(
        retry=retry_if_exception_type(StoreUnavailable),
        stop=stop_after_attempt(4),
        wait=wait_exponential(multiplier=0.5, max=8),
        reraise=True,
    )
    def upsert(self, target: str, records: Sequence[StoredRecord]) -> WriteResult:
        """Bulk index; items the cluster rejects come back as failures with Elasticsearch's reason.

        Whole-request transport failures are retried (index ops are idempotent by id); per-item 429s are
        retried inside `helpers.bulk`, and those left come back marked `transient` for the pipeline's retries.
        """
        if not records:
            return WriteResult()
        stems = self._has_stems(target)
        sources = [(r.doc.id, self._source(r, stems)) for r in records]
        actions = [{"_op_type": "index", "_index": target, "_id": i, "_source": src} for i, src in sources]
        ok, errors = _es_guard(
            lambda: helpers.bulk(
                self.client,
                actions,
                raise_on_error=False,
                raise_on_exception=True,
                max_retries=1,  # one quick retry here; `indexing.writes` retries what is left, with backoff
                initial_backoff=1,
                chunk_size=500,
            )
        )
        return WriteResult(written=int(ok), failures=bulk_failures(errors))

    def delete(self, target: str, ids: Sequence[str]) -> int:
        return _es_guard(lambda: bulk_delete(self.client, target, ids)) if ids else 0

    def refresh(self, target: str) -> None:
        _es_guard(lambda: self.client.indices.refresh(index=target))

    # -- reads ----------------------------------------------------------------------------------------
    def get(self, target: str, doc_id: str) -> Document | None:
        try:
            resp = _es_guard(lambda: self.client.get(index=target, id=doc_id, source_excludes=_SOURCE_EXCLUDES))
        except IndexNotFound:
            if self.current_version(target) is None and version_alias(target) is None:
                raise
            return None
        return Document.model_validate(resp["_source"]) if resp.get("found") else None

    def get_hashes(self, target: str, ids: Sequence[str]) -> dict[str, str]:
        out: dict[str, str] = {}
        ids = list(ids)
        for i in range(0, len(ids), 1000):
            resp = _es_guard(
                lambda part=ids[i : i + 1000]: self.client.mget(
                    index=target, ids=part, source_includes=["content_hash"]
                )  # type: ignore[misc]
            )
            for d in resp["docs"]:
                if d.get("found"):
                    out[d["_id"]] = d["_source"].get("content_hash", "")
        return out

    def count(self, target: str) -> int:
        return int(_es_guard(lambda: self.client.count(index=target))["count"])

    def _filter_clauses(self, target: str, filters: Sequence[Filter]) -> list[dict[str, Any]]:
        if not filters:
            return []
        schema = self.schema(target)
        clauses: list[dict[str, Any]] = []
        for f in filters:
            ftype = schema.field_type(f.field)
            path = f.field if f.field in BUILTIN_FIELDS else f"fields.{f.field}"
            if isinstance(f, TermFilter):
                clauses.append({"term": {path: (coerce(f.value, ftype, f.field))}})
            elif isinstance(f, TermsFilter):
                clauses.append({"terms": {path: [(coerce(v, ftype, f.field)) for v in f.values]}})
            elif isinstance(f, RangeFilter):
                rng = {
                    op: (coerce(b, ftype, f.field))
                    for op, b in (("gte", f.gte), ("gt", f.gt), ("lte", f.lte), ("lt", f.lt))
                    if b is not None
                }
                if rng:
                    clauses.append({"range": {path: rng}})
        return clauses

    def get_many(self, target: str, ids: Sequence[str]) -> dict[str, Document]:
        out: dict[str, Document] = {}
        ids = list(dict.fromkeys(ids))
        for i in range(0, len(ids), 1000):
            resp = _es_guard(
                lambda part=ids[i : i + 1000]: self.client.mget(
                    index=target, ids=part, source_excludes=_SOURCE_EXCLUDES
                )  # type: ignore[misc]
            )
            for d in resp["docs"]:
                if d.get("found"):
                    out[d["_id"]] = Document.model_validate(d["_source"])
        return out

    def _hits(self, resp: Any, with_docs: bool) -> list[Hit]:
        hits = resp["hits"]["hits"]
        if not with_docs:
            return [Hit(id=h["fields"]["id"][0], score=float(h["_score"])) for h in hits]
        return [Hit(id=h["_id"], score=float(h["_score"]), doc=Document.model_validate(h["_source"])) for h in hits]

    def _source_opts(self, with_docs: bool) -> dict[str, Any]:
        """What hits carry. Ids-only searches read the `id` doc value and no stored field at all: loading `_id`
        for 100 hits was most of a query's time (fetch 9 ms of 10; 1.9 ms per BM25 query without it)."""
        if with_docs:
            return {"source_excludes": _SOURCE_EXCLUDES}
        return {"source": False, "stored_fields": "_none_", "docvalue_fields": ["id"]}

    def bm25_clauses(self, target: str, query: str) -> dict[str, Any]:
        """BM25's scoring bool clauses, no filters (faceting counts over what they match: `es_facets`)."""
        # A version has one of the two fields (the other matches nothing); `match` counts each repeat of a term.
        should: list[dict[str, Any]] = [{"match": {"content": {"query": query}}}]
        terms = bm25_terms(query)
        if terms:
            should.append({"match": {"content_stems": {"query": " ".join(terms)}}})
        return {"should": should, "minimum_should_match": 1}

    def bm25_search(
        self, target: str, query: str, k: int, filters: Sequence[Filter] = (), *, with_docs: bool = True
    ) -> list[Hit]:
        if not query.strip() or k <= 0:
            return []
        body_query: dict[str, Any] = {
            "bool": {**self.bm25_clauses(target, query), "filter": self._filter_clauses(target, filters)}
        }
        resp = _es_guard(
            lambda: self.client.search(
                index=target,
                query=body_query,
                size=k,
                track_total_hits=False,
                **self._source_opts(with_docs),
            )
        )
        return self._hits(resp, with_docs)

    def knn_search(
        self, target: str, vector: Sequence[float], k: int, filters: Sequence[Filter] = (), *, with_docs: bool = True
    ) -> list[Hit]:
        if k <= 0:
            return []
        knn: dict[str, Any] = {
            "field": "chunks.vector",
            "query_vector": [float(x) for x in vector],
            "k": k,
            "num_candidates": max(100, int(k * self.config.num_candidates_factor)),
        }
        clauses = self._filter_clauses(target, filters)
        if clauses:
            knn["filter"] = clauses
        resp = _es_guard(
            lambda: self.client.search(
                index=target, knn=knn, size=k, track_total_hits=False, **self._source_opts(with_docs)
            )
        )
        return self._hits(resp, with_docs)
