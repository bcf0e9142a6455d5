"""Synonyms on a real Elasticsearch node through two search services (two replicas): a change made through one
reaches its next search at once and the other's within its cache TTL, with no restart; the explanation names the
synonym; the sets outlive a reindex (a new version behind the alias)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from indexing.pipeline import IndexingConfig, IndexingPipeline
from search.service import SearchConfig, SearchRequest, SearchService
from search.synonyms import CachedSynonyms, SynonymSets
from search.wiring import build_service

pytestmark = [pytest.mark.es, pytest.mark.slow]

DOCS = [
    ("d1", "Television repair", "We repair every television in town."),
    ("d2", "New York hotels", "Cheap rooms in New York for a weekend."),
    ("d3", "York minster", "An old church in York with a new roof."),
]


@pytest.fixture
def two_replicas(es_url: str, index_name: str, tmp_path: Path) -> Iterator[tuple[SearchService, SearchService]]:
    from search.stores.elasticsearch import ElasticsearchStore

    src = tmp_path / "docs.jsonl"
    src.write_text("".join(json.dumps({"id": i, "title": t, "text": b}) + "\n" for i, t, b in DOCS))
    stores = [ElasticsearchStore(es_url), ElasticsearchStore(es_url)]
    cfg = IndexingConfig(embed=False, dead_letter_dir=tmp_path / "dead", progress=False)
    assert IndexingPipeline(stores[0], None, cfg).build(src, index_name).indexed == 3
    search = SearchConfig.model_validate({"default_index": index_name, "retrieval": {"mode": "bm25"}})
    services = (build_service(stores[0], search), build_service(stores[1], search))
    yield services
    syn = services[0].retriever.synonyms
    assert syn is not None
    syn.delete(index_name)
    stores[0].client.indices.delete(index=f"{index_name}-v*", ignore_unavailable=True, allow_no_indices=True)
    for s in stores:
        s.close()


def _hits(service: SearchService, query: str) -> dict[str, list[str] | None]:
    resp = asyncio.run(service.search(SearchRequest(query=query, rerank=False, highlight=False)))
    return {r.id: r.explanation.synonyms for r in resp.results}


def test_a_change_reaches_both_replicas_and_survives_a_reindex(
    two_replicas: tuple[SearchService, SearchService], index_name: str, tmp_path: Path
) -> None:
    one, two = two_replicas
    assert isinstance(one.retriever.synonyms, CachedSynonyms) and isinstance(two.retriever.synonyms, CachedSynonyms)
    two.retriever.synonyms.ttl_s = 1.0
    assert _hits(one, "telly") == {} and _hits(two, "telly") == {}  # both have read (and cached) no sets
    sets = SynonymSets.model_validate(
        [
            {"type": "synonym", "synonyms": ["telly", "television"]},
            {"type": "oneway", "input": "ny", "synonyms": ["new york"]},
        ]
    )
    one.retriever.synonyms.put(index_name, sets)
    assert _hits(one, "telly") == {"d1": ["television"]}  # the replica that took the change: at once
    assert _hits(one, "ny") == {"d2": ["new york"]}  # a phrase: York minster's words apart do not match
    deadline = time.monotonic() + 5
    while _hits(two, "telly") != {"d1": ["television"]}:  # the other: within its TTL
        assert time.monotonic() < deadline, "the second replica never saw the change"
        time.sleep(0.2)
    # a reindex: a new version behind the alias keeps the alias's sets
    src = tmp_path / "more.jsonl"
    src.write_text(json.dumps({"id": "d9", "title": "Telly stands", "text": "A stand for the television."}) + "\n")
    cfg = IndexingConfig(embed=False, dead_letter_dir=tmp_path / "dead2", progress=False)
    assert IndexingPipeline(one.store, None, cfg).build(src, index_name).indexed == 1
    assert _hits(one, "television") == {"d9": ["telly"]}
