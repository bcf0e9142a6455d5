"""/v1/suggest and /v1/related over HTTP: the in-process app (embedded store, JSONL query log) and the real
Ray Serve app (Elasticsearch store and query log, the LM in its own deployment), both with a tiny causal LM."""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from indexing.pipeline import IndexingConfig, IndexingPipeline
from models.ray_session import shutdown_ray
from search.stores.embedded import EmbeddedStore
from tests.tiny_lm import TINY_EXAMPLES, build_tiny_query_lm
from tests.widget_server import wait_ready

INDEX = "suggest-docs"
ORIGIN = "https://shop.example"
DOCS = [
    ("Protein folding", "How proteins fold in cells; misfolding causes diseases such as amyloidosis."),
    ("Insulin resistance", "Insulin resistance in mice fed a high-fat diet, and in humans with obesity."),
    ("Vitamin D", "Vitamin D deficiency and bone fractures in older adults."),
    ("Zebrafish", "Zebrafish heart regeneration after injury: cardiomyocytes proliferate."),
    ("Sleep", "Sleep deprivation impairs memory consolidation."),
]


def write_corpus(path: Path) -> Path:
    with open(path, "w") as f:
        for i, (title, text) in enumerate(DOCS * 4):
            f.write(json.dumps({"id": f"d{i}", "title": f"{title} {i}", "text": text}) + "\n")
    return path


def config_dict(tiny_lm: Path, **extra: Any) -> dict[str, Any]:
    return {
        "search": {"default_index": INDEX, "retrieval": {"mode": "bm25"}},
        "reranker": {"model": None},
        "cors_origins": [ORIGIN],
        "suggest": {
            "min_sessions": 1,  # one session's searches are suggested here (the k-sessions rule: test_log_privacy)
            "deadline_ms": 30,
            "prefetch_top": 0,
            "blocklist": ["amyloidosis"],
            "lm": {"lm": {"model": str(tiny_lm), "device": "cpu"}, "examples": TINY_EXAMPLES, "max_new_tokens": 12},
        },
        "summarizer": None,
        **extra,
    }


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_query_lm(tmp_path_factory.mktemp("tiny-lm"))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("suggest-api")
    cfg = IndexingConfig(embed=False, dead_letter_dir=tmp / "dead", progress=False)
    report = IndexingPipeline(EmbeddedStore(tmp / "data" / "indices"), None, cfg).build(
        write_corpus(tmp / "docs.jsonl"), INDEX
    )
    assert report.indexed == len(DOCS) * 4
    return tmp / "data"


def local_client(data_dir: Path, tiny_lm: Path) -> tuple[Any, TestClient]:
    from search.settings import Settings
    from serving.api import create_api
    from serving.config import AppConfig
    from serving.local import local_backend

    backend = local_backend(AppConfig.model_validate(config_dict(tiny_lm, data_dir=str(data_dir))), Settings())
    return backend, TestClient(create_api(backend, backend.metrics, [ORIGIN]))


@pytest.fixture(scope="module")
def local(data_dir: Path, tiny_lm: Path) -> Iterator[TestClient]:
    backend, client = local_client(data_dir, tiny_lm)
    with client:
        yield client
    backend.suggest.close()
    backend.store.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(fn: Any, timeout: float = 60.0, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        assert time.monotonic() < deadline, "condition never held"
        time.sleep(interval)


def test_contract_and_validation(local: TestClient) -> None:
    body = local.get("/v1/suggest", params={"q": "zzz unseen", "k": 3}).json()
    assert set(body) == {"query", "query_id", "suggestions", "partial", "took_ms"}
    assert body["query"] == "zzz unseen" and isinstance(body["partial"], bool)
    assert len(body["query_id"]) == 32 and int(body["query_id"], 16) >= 0  # names the logged impression
    for q in ["", "   "]:
        r = local.get("/v1/suggest", params={"q": q})
        assert r.status_code == 200 and r.json()["suggestions"] == [] and r.json()["partial"] is False
    assert local.get("/v1/suggest").json()["suggestions"] == []
    for params in [{"q": "x" * 201}, {"q": "ok", "k": 0}, {"q": "ok", "k": 21}, {"q": "ok", "k": "many"}]:
        assert local.get("/v1/suggest", params=params).status_code == 422, params
    assert local.get("/v1/suggest", params={"q": "x" * 200, "k": 20}).status_code == 200
    assert local.get("/v1/related", params={"q": ""}).json() == {"query": "", "related": []}
    assert local.get("/v1/related", params={"q": "x" * 201}).status_code == 422
    paths = local.get("/openapi.json").json()["paths"]
    assert "/v1/suggest" in paths and "/v1/related" in paths and "/v1/search" in paths


def test_search_is_logged_then_suggested(local: TestClient, data_dir: Path) -> None:
    for q in ["Sleep deprivation memory", "sleep   DEPRIVATION memory", "Sleep apnea"]:
        r = local.post("/v1/search", json={"query": q, "session_id": "s-1"})
        assert r.status_code == 200 and r.json()["results"], r.text
    blocked = local.post("/v1/search", json={"query": "sleep amyloidosis"})  # blocklisted in this config
    assert blocked.status_code == 200 and blocked.json()["results"]
    miss = local.post("/v1/search", json={"query": "sleepwalking quokkas", "session_id": "s-1"})
    assert miss.status_code == 200 and miss.json()["results"] == []
    logged = [json.loads(line) for f in sorted((data_dir / "querylog").glob("querylog-*.jsonl")) for line in f.open()]
    mine = [e for e in logged if e.get("session_id") == "s-1"]
    assert [e["query"] for e in mine] == [
        "Sleep deprivation memory",
        "sleep   DEPRIVATION memory",
        "Sleep apnea",
        "sleepwalking quokkas",
    ]
    assert all(e["type"] == "search" and e["request_id"] and e["ts"] for e in mine)
    assert [e["result_count"] for e in mine][-1] == 0
    body = local.get("/v1/suggest", params={"q": "SLEEP  d", "session_id": "s-1"}).json()
    top = {"text": "sleep deprivation memory", "source": "log", "score": pytest.approx(2 / 3, rel=1e-3)}
    assert body["suggestions"][0] == top
    texts = [s["text"] for s in local.get("/v1/suggest", params={"q": "sleep"}).json()["suggestions"]]
    assert texts[:2] == ["sleep deprivation memory", "sleep apnea"]
    assert "sleepwalking quokkas" not in texts  # no results: never suggested
    assert "sleep amyloidosis" not in texts


def test_lm_suggestions_arrive_filtered(local: TestClient) -> None:
    """The first request returns at the deadline; the LM finishes in the background and later requests get its
    candidates, each of which returns results and none of which is blocklisted."""
    first = local.get("/v1/suggest", params={"q": "protein fo"}).json()
    assert first["took_ms"] < 1000
    body = wait_for(
        lambda: (b := local.get("/v1/suggest", params={"q": "protein fo"}).json())["partial"] is False and b, 120
    )
    lm = [s for s in body["suggestions"] if s["source"] == "lm"]
    assert lm and all(s["text"].startswith("protein fo") for s in lm)
    for s in lm:
        hits = local.post("/v1/search", json={"query": s["text"], "limit": 1}).json()["results"]
        assert hits, s
    assert "protein folding in cells" in [s["text"] for s in lm]


def test_related_from_sessions(local: TestClient) -> None:
    for q in ["vitamin d deficiency", "bone fractures"]:
        assert local.post("/v1/search", json={"query": q, "session_id": "s-rel"}).status_code == 200
    body = local.get("/v1/related", params={"q": "Vitamin D deficiency", "k": 5}).json()
    assert body["query"] == "Vitamin D deficiency"
    assert {"text": "bone fractures", "source": "session", "score": pytest.approx(0.5, rel=1e-3)} in body["related"]


def test_cors_for_the_widget(local: TestClient) -> None:
    r = local.get("/v1/suggest", params={"q": "sle"}, headers={"Origin": ORIGIN})
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == ORIGIN
    pre = local.options(
        "/v1/suggest", headers={"Origin": ORIGIN, "Access-Control-Request-Method": "GET"}, params={"q": "s"}
    )
    assert pre.status_code == 200 and pre.headers["access-control-allow-origin"] == ORIGIN
    other = local.get("/v1/suggest", params={"q": "sle"}, headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in other.headers


def test_restart_replays_the_log(local: TestClient, data_dir: Path, tiny_lm: Path) -> None:
    local.post("/v1/search", json={"query": "zebrafish heart regeneration"}).raise_for_status()
    backend, client = local_client(data_dir, tiny_lm)
    try:
        with client:
            texts = [s["text"] for s in client.get("/v1/suggest", params={"q": "zebra"}).json()["suggestions"]]
            assert "zebrafish heart regeneration" in texts
    finally:
        backend.suggest.close()
        backend.store.close()


# -- the real Serve app on Elasticsearch ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def serve_url(es_url: str, tiny_lm: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    import ray
    from ray import serve

    from search.settings import Settings
    from search.stores.elasticsearch import ElasticsearchStore
    from serving.builder import build_app
    from serving.config import AppConfig, Resources

    tmp = tmp_path_factory.mktemp("suggest-serve")
    store = ElasticsearchStore(es_url)
    cfg = IndexingConfig(embed=False, dead_letter_dir=tmp / "dead", progress=False)
    IndexingPipeline(store, None, cfg).build(write_corpus(tmp / "docs.jsonl"), INDEX)
    store.close()
    log_index = f"ql-{os.getpid()}-{int(time.time())}"
    small = Resources(num_cpus=0.1, max_batch_size=8).model_dump()
    app_cfg = AppConfig.model_validate(
        config_dict(
            tiny_lm,
            app_name="suggest",
            store="es",
            elasticsearch_url=es_url,
            query_log={"es_index": log_index, "es_flush_interval_s": 0.2},
            ingress=small,
            suggest_lm_resources=small,
        )
    )
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    from serving.ray_env import prepare_ray_env

    prepare_ray_env()  # as `sift serve` starts Ray
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=200 * 1024 * 1024, log_to_driver=False)
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        serve.run(build_app(app_cfg, Settings()), name="suggest", route_prefix="/")
        url = f"http://127.0.0.1:{port}"
        wait_ready(url)
        yield url, log_index
    finally:
        serve.shutdown()
        shutdown_ray()


@pytest.mark.es
@pytest.mark.slow
def test_serve_app_logs_to_elasticsearch_and_suggests(serve_url: tuple[str, str], es_url: str) -> None:
    from elasticsearch import Elasticsearch

    url, log_index = serve_url
    with httpx.Client(base_url=url, timeout=30) as http:
        assert http.get("/readyz").json()["checks"] == {"store": True}
        for q in ["Insulin resistance in mice", "vitamin d deficiency"]:
            r = http.post("/v1/search", json={"query": q, "session_id": "serve-1"})
            assert r.status_code == 200 and r.json()["results"], r.text
        # Logged to the Elasticsearch index by the background writer.
        es = Elasticsearch(es_url)
        try:

            def logged() -> list[dict[str, Any]]:
                es.indices.refresh(index=log_index, ignore_unavailable=True)
                if not es.indices.exists(index=log_index):
                    return []
                hits = es.search(index=log_index, query={"term": {"session_id": "serve-1"}}, sort=[{"ts": "asc"}])
                return [h["_source"] for h in hits["hits"]["hits"]]

            events = wait_for(lambda: len(logged()) == 2 and logged(), 30, 0.3)
            assert [e["query"] for e in events] == ["Insulin resistance in mice", "vitamin d deficiency"]
            assert all(e["type"] == "search" and e["result_count"] > 0 for e in events)
        finally:
            es.close()
        t = time.perf_counter()
        body = http.get("/v1/suggest", params={"q": "insulin r", "k": 5}, headers={"Origin": ORIGIN}).json()
        assert time.perf_counter() - t < 2
        assert body["suggestions"][0]["text"] == "insulin resistance in mice"
        assert body["suggestions"][0]["source"] in ("log", "log+lm")
        # The LM deployment completes unseen prefixes; the answer is cached for the next request.
        lm_body = wait_for(
            lambda: (b := http.get("/v1/suggest", params={"q": "zebraf"}).json())["partial"] is False and b, 120, 0.3
        )
        assert any(s["source"] == "lm" and s["text"].startswith("zebraf") for s in lm_body["suggestions"]), lm_body
        related = http.get("/v1/related", params={"q": "insulin resistance in mice"}).json()["related"]
        assert {"text": "vitamin d deficiency", "source": "session", "score": pytest.approx(0.5, rel=1e-3)} in related
        cors = http.get("/v1/suggest", params={"q": "vit"}, headers={"Origin": ORIGIN})
        assert cors.headers["access-control-allow-origin"] == ORIGIN
