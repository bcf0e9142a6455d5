"""The keystroke path end to end on a small embedded index: cold-start suggestions from the corpus through the API
(every one finds something), the API's caching headers, the keystroke ASGI server (same answers, caching, 4xx,
keys), and the per-version artifacts following the alias."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from indexing.pipeline import IndexingConfig, IndexingPipeline
from search.stores.embedded import EmbeddedStore
from search.suggest.artifacts import VersionArtifacts, corpus_path, lm_path
from search.suggest.precomputed import PrecomputedCompletions
from search.suggest.schemas import SuggestConfig
from search.suggest.suggester import Suggester
from serving.auth import Guard
from serving.keystroke import KeystrokeApp
from serving.security import SecurityConfig, new_key

INDEX = "docs"
TOPICS = [
    ("argparse", "Parser for command line options. Parse command line arguments with argparse."),
    ("csv", "CSV file reading and writing. Read a csv file row by row with the csv reader."),
    ("json", "JSON encoder and decoder. Pretty print JSON with indent; parse JSON documents."),
    ("re", "Regular expression operations. Match a regular expression against a string."),
    ("datetime", "Basic date and time types. Format a datetime as a string with strftime."),
    ("logging", "Logging facility. Configure logging handlers and log levels from a file."),
    ("subprocess", "Subprocess management. Run a command and capture its output with subprocess.run."),
    ("sqlite3", "DB-API interface for SQLite databases. Connect to a database file and run queries."),
]
# what people would type about this corpus; the test asks for 80% of their 3+ character prefixes
QUERIES = ["parse command line arguments", "read a csv file", "regular expression match", "capture output"]


def _docs(tmp: Path, extra: list[tuple[str, str]] = ()) -> Path:  # type: ignore[assignment]
    src = tmp / f"docs{len(extra)}.jsonl"
    rows = []
    for i, (title, text) in enumerate(TOPICS + list(extra)):
        for j in range(3):  # three sections per module: phrases reach the corpus's document frequency
            rows.append({"id": f"{i}-{j}", "title": f"{title} section {j}", "text": text})
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return src


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, TestClient, Path]]:
    from search.settings import Settings
    from serving.api import create_api
    from serving.config import AppConfig
    from serving.local import local_backend

    tmp = tmp_path_factory.mktemp("keystroke")
    cfg = IndexingConfig(embed=False, dead_letter_dir=tmp / "dead", progress=False)
    IndexingPipeline(EmbeddedStore(tmp / "data" / "indices"), None, cfg).build(_docs(tmp), INDEX)
    config = AppConfig.model_validate(
        {
            "data_dir": str(tmp / "data"),
            "search": {"default_index": INDEX, "retrieval": {"mode": "bm25"}},
            "reranker": {"model": None},
            "suggest": {"lm": {"enabled": False}, "prefetch_top": 0},
            "summarizer": None,
        }
    )
    backend = local_backend(config, Settings())
    with TestClient(create_api(backend, backend.metrics)) as c:
        yield backend, c, tmp
    backend.suggest.close()
    backend.store.close()


def _prefixes(queries: list[str]) -> list[str]:
    return [q[:i] for q in queries for i in range(3, len(q) + 1) if not q[i - 1].isspace()]


def test_cold_start_suggests_from_the_corpus_and_every_suggestion_finds_something(app: Any) -> None:
    backend, client, tmp = app
    assert backend.suggest.artifacts.version is not None  # loaded before the API answered
    assert corpus_path(tmp / "data", backend.suggest.artifacts.version).exists()  # saved for the next start
    covered, texts = 0, set[str]()
    prefixes = _prefixes(QUERIES)
    for p in prefixes:
        got = client.get("/v1/suggest", params={"q": p}).json()["suggestions"]
        covered += bool(got)
        texts.update(s["text"] for s in got)
        assert all(s["source"] == "corpus" for s in got)  # an empty log, no LM
    assert covered >= 0.8 * len(prefixes), (covered, len(prefixes))
    for t in texts:
        r = client.post("/v1/search", json={"query": t, "limit": 1})
        assert r.status_code == 200 and r.json()["results"], t


def test_api_answers_carry_caching_headers_and_revalidate_with_304(app: Any) -> None:
    _, client, _ = app
    first = client.get("/v1/suggest", params={"q": "regular"})
    assert first.status_code == 200 and first.json()["suggestions"]
    tag = first.headers["etag"]
    assert first.headers["cache-control"] == "private, max-age=30"
    again = client.get("/v1/suggest", params={"q": "regular"}, headers={"If-None-Match": tag})
    assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == tag
    other = client.get("/v1/suggest", params={"q": "csv"}, headers={"If-None-Match": tag})
    assert other.status_code == 200 and other.headers["etag"] != tag
    assert client.get("/v1/suggest", params={"q": "x" * 201}).status_code == 422
    assert client.get("/v1/suggest", params={"q": "re", "k": 0}).status_code == 422


def _keystroke(backend: Any, guard: Guard | None = None, record: Any = None) -> TestClient:
    return TestClient(KeystrokeApp(backend.suggest.suggester, INDEX, guard, generation="g1", record=record))


def test_keystroke_server_gives_the_apis_suggestions_and_caching(app: Any) -> None:
    backend, client, _ = app
    fast = _keystroke(backend)
    for q in ("pars", "regular expr", "csv"):
        mine = fast.get("/v1/suggest", params={"q": q, "k": 5})
        assert mine.status_code == 200
        api = client.get("/v1/suggest", params={"q": q, "k": 5}).json()
        assert [s["text"] for s in mine.json()["suggestions"]] == [s["text"] for s in api["suggestions"]]
        assert len(mine.json()["query_id"]) == 32 and mine.json()["partial"] is False
        assert mine.headers["cache-control"] == "private, max-age=30"  # the body names its impression
        tag = mine.headers["etag"]
        assert fast.get("/v1/suggest", params={"q": q, "k": 5}, headers={"If-None-Match": tag}).status_code == 304
    assert fast.get("/v1/suggest", params={"q": ""}).json()["suggestions"] == []
    assert fast.get("/healthz").status_code == 200


@pytest.mark.parametrize(
    ("query", "status"),
    [("q=" + "x" * 201, 422), ("q=ab&k=0", 422), ("q=ab&k=21", 422), ("q=ab&k=two", 422), ("q=%ff", 422)],
)
def test_keystroke_server_refuses_bad_input_with_4xx(app: Any, query: str, status: int) -> None:
    backend, _, _ = app
    r = _keystroke(backend).get(f"/v1/suggest?{query}")
    assert r.status_code == status and r.json()["detail"]


def test_keystroke_server_routes_methods_and_keys(app: Any) -> None:
    backend, _, _ = app
    open_app = _keystroke(backend)
    assert open_app.get("/v1/search").status_code == 404
    assert open_app.post("/v1/suggest?q=ab").status_code == 405
    suggest_key, suggest_entry = new_key(["suggest"], "widget")
    search_key, search_entry = new_key(["search"], "backend")
    other_key, other_entry = new_key(["suggest"], "other", indices=["elsewhere"])
    guard = Guard(SecurityConfig(keys=[suggest_entry, search_entry, other_entry]))
    guarded = _keystroke(backend, guard)
    assert guarded.get("/v1/suggest?q=csv").status_code == 401
    assert guarded.get("/v1/suggest?q=csv", headers={"X-API-Key": "sift_wrong"}).status_code == 401
    assert guarded.get("/v1/suggest?q=csv", headers={"X-API-Key": search_key}).status_code == 403
    assert guarded.get("/v1/suggest?q=csv", headers={"X-API-Key": other_key}).status_code == 403
    ok = guarded.get("/v1/suggest?q=csv", headers={"Authorization": f"Bearer {suggest_key}"})
    assert ok.status_code == 200 and ok.json()["suggestions"]


def test_a_click_on_a_keystroke_suggestion_is_accepted_by_the_apis_events(app: Any) -> None:
    """The keystroke server appends the API's suggest impression to the API's query log: the widget's click on a
    suggestion it served carries a query_id that /v1/events knows, exactly as for the API's own /v1/suggest."""
    backend, client, _ = app
    fast = _keystroke(backend, record=backend.suggest.query_log.append)
    sug = fast.get("/v1/suggest", params={"q": "regular expr", "session_id": "s-ks"}).json()
    assert sug["suggestions"], sug
    api = client.get("/v1/suggest", params={"q": "regular expr", "session_id": "s-ks"}).json()
    mine = backend.suggest.query_log.impressions([sug["query_id"]])[sug["query_id"]]
    ref = backend.suggest.query_log.impressions([api["query_id"]])[api["query_id"]]
    same = ("type", "query", "result_count", "shown", "session_id", "index")
    assert {f: getattr(mine, f) for f in same} == {f: getattr(ref, f) for f in same}
    assert mine.request_id == mine.query_id == sug["query_id"] and mine.client and mine.client.startswith("c-")
    ev = {
        "type": "click",
        "event_name": "Suggestion clicked",
        "query_id": sug["query_id"],
        "object_ids": [sug["suggestions"][0]["text"]],
        "positions": [1],
    }
    r = client.post("/v1/events", json={"events": [ev]})
    assert r.status_code == 202, r.text
    unknown = client.post("/v1/events", json={"events": [{**ev, "query_id": "f" * 32}]})
    assert unknown.status_code == 422  # what a null or made-up query_id got before


def test_a_swap_drops_cached_answers(app: Any) -> None:
    backend, _, _ = app
    ks = KeystrokeApp(backend.suggest.suggester, INDEX, generation="g1")
    fast = TestClient(ks)
    before = fast.get("/v1/suggest?q=csv")
    empty = Suggester(SuggestConfig(lm={"enabled": False}))  # type: ignore[arg-type]
    ks.swap(empty, "g2")
    after = fast.get("/v1/suggest?q=csv")
    assert before.json()["suggestions"] and after.json()["suggestions"] == []
    assert after.headers["etag"] != before.headers["etag"]


def test_artifacts_follow_the_alias_and_pick_up_a_precomputed_table(tmp_path: Path) -> None:
    store = EmbeddedStore(tmp_path / "data" / "indices")
    cfg = IndexingConfig(embed=False, dead_letter_dir=tmp_path / "dead", progress=False)
    IndexingPipeline(store, None, cfg).build(_docs(tmp_path), INDEX)
    s = Suggester(SuggestConfig(lm={"enabled": False}))  # type: ignore[arg-type]
    arts = VersionArtifacts(s, store, INDEX, tmp_path / "data", interval_s=0)
    assert arts.refresh() and s.corpus is not None and s.precomputed is None
    assert not s.corpus.top("zebrafish", 3)
    assert not arts.refresh()  # nothing changed
    v1 = arts.version
    assert v1 is not None
    PrecomputedCompletions({"cap": [("capture output", 0.9)]}, v1).save(lm_path(tmp_path / "data", v1))
    assert arts.refresh() and s.precomputed is not None and s.precomputed.get("cap")
    extra = [("zebrafish", "Zebrafish heart regeneration studies."), ("zebrafish", "Zebrafish heart genes.")]
    IndexingPipeline(store, None, cfg).build(_docs(tmp_path, extra), INDEX)
    assert arts.refresh() and arts.version != v1
    assert s.corpus.top("zebrafish", 3) and s.precomputed is None  # the new version has no table yet
    arts.close()
    store.close()


@pytest.mark.es
def test_corpus_suggestions_read_an_elasticsearch_version(es_url: str, index_name: str, tmp_path: Path) -> None:
    from search.stores.elasticsearch import ElasticsearchStore
    from search.suggest.artifacts import corpus_for
    from search.suggest.corpus import CorpusSuggestConfig

    store = ElasticsearchStore(es_url)
    store.warm_up()
    try:
        cfg = IndexingConfig(embed=False, dead_letter_dir=tmp_path / "dead", progress=False)
        IndexingPipeline(store, None, cfg).build(_docs(tmp_path), index_name)
        version = store.current_version(index_name)
        assert version is not None
        corpus = corpus_for(store, version, tmp_path, CorpusSuggestConfig())
        got = [t for t, _ in corpus.top("regular expr", 3)]
        assert "regular expression" in got and corpus_path(tmp_path, version).exists()
        assert store.bm25_search(index_name, got[0], 1, with_docs=False)  # it finds something there too
    finally:
        store.client.indices.delete(index=f"{index_name}-v*", ignore_unavailable=True, allow_no_indices=True)
        store.close()
