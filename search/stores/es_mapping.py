"""The mapping of one Elasticsearch index version: what each field is and how BM25's text is analysed.

Apart from the store class so that file stays a readable size; `ElasticsearchStore.create_version` is its one
caller.
"""

from __future__ import annotations

from typing import Any

from search.schema import IndexSchema


def version_mappings(dims: int, schema: IndexSchema, analyzer: str, vector_index: str) -> dict[str, Any]:
    """`analyzer`: `snowball` (Python's stems in `content_stems`) or Elasticsearch's own (`content`)."""
    text = {"type": "text", "analyzer": "sift_text", "fields": {"std": {"type": "text", "analyzer": "standard"}}}
    extra = {name: {"type": t} for name, t in schema.fields.items()}
    # BM25's one field: Python's terms split on whitespace, or title and body copied for Elasticsearch to analyse.
    stems, copy = analyzer == "snowball", {}
    bm25 = {"content_stems": {"type": "text", "analyzer": "whitespace"}}
    if not stems:
        bm25, copy = {"content": {"type": "text", "analyzer": "sift_text"}}, {"copy_to": "content"}
    return {
        "dynamic": "false",
        # Vectors live in the HNSW graph; keeping them in _source too made every fetch parse 384 floats per
        # chunk (most of an mget's time) for values no reader uses: rebuilds re-embed from the cache.
        "_source": {"excludes": ["chunks.vector", "content_stems"]},
        "_meta": {"sift": {"schema": schema.model_dump(), "dims": dims, "complete": False, "stems": stems}},
        "properties": {
            "id": {"type": "keyword"},
            "title": {**text, **copy},
            "body": {**text, **copy},
            **bm25,
            "url": {"type": "keyword"},
            "published_at": {"type": "date"},
            "updated_at": {"type": "date"},
            "content_hash": {"type": "keyword"},
            "fields": {"type": "object", "dynamic": "false", "properties": extra},
            "chunks": {
                "type": "nested",
                "properties": {
                    "vector": {
                        "type": "dense_vector",
                        "dims": dims,
                        "index": True,
                        "similarity": "cosine",
                        "index_options": {"type": vector_index},
                    },
                    "start": {"type": "integer", "index": False},
                    "end": {"type": "integer", "index": False},
                },
            },
        },
    }
