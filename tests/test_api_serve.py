"""The real Serve app on a local Ray, the real Elasticsearch store, tiny models, over HTTP."""

from __future__ import annotations

import json
import math
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest

from indexing.pipeline import IndexingConfig, IndexingPipeline
from models.ray_session import shutdown_ray
from ranking.fusion import ranked, rrf
from search.schema import IndexSchema
from search.stores.elasticsearch import ElasticsearchStore
from tests.widget_server import wait_ready

pytestmark = [pytest.mark.es, pytest.mark.slow]

INDEX = "serve-api"
TOPICS = [
    ("loops", "The for statement iterates over the items of any sequence, such as a list or a string."),
    ("exceptions", "Exceptions are raised when errors occur; try and except statements handle them."),
    ("classes", "Classes bundle data and functionality; creating a class creates a new type of object."),
    ("files", "Use open() to read and write files; the with statement closes the file for you."),
    ("modules", "A module is a file containing Python definitions; import makes them available."),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def node() -> Iterator[Any]:
    """A node of this module's own: the test stops and restarts it."""
    from sift.es_node import LocalElasticsearch

    n = LocalElasticsearch(port=int(os.environ.get("SIFT_TEST_OUTAGE_ES_PORT", "9252")))
    n.wipe()
    n.start()
    yield n
    n.stop()


@pytest.fixture(scope="module")
def indexed(node: Any, tiny_embedder: Any, tmp_path_factory: pytest.TempPathFactory) -> str:
    tmp = tmp_path_factory.mktemp("serve-corpus")
    src = tmp / "docs.jsonl"
    with open(src, "w") as f:
        for i in range(40):
            name, text = TOPICS[i % len(TOPICS)]
            row = {
                "id": f"d{i}",
                "title": f"{name.title()} note {i}",
                "text": f"{text} Example number {i} about {name}.",
                "lang": "en" if i % 2 == 0 else "de",
                "year": 2000 + i,
                "url": f"https://example.org/{i}",
            }
            f.write(json.dumps(row) + "\n")
    cfg = IndexingConfig(
        schema=IndexSchema(fields={"lang": "keyword", "year": "long"}),
        dead_letter_dir=tmp / "dead",
        progress=False,
    )
    store = ElasticsearchStore(node.url)
    report = IndexingPipeline(store, tiny_embedder, cfg).build(src, INDEX)
    assert report.indexed == 40
    store.close()
    return str(node.url)


def app_config(
    es_url: str,
    embedder: Path,
    reranker: Path,
    name: str,
    summarizer_lm: Path | None = None,
    placement: str = "deployment",
    rerank_deadline_ms: int | None = None,
    **search: Any,
) -> Any:
    """Suggestions are tested in test_suggest_api.py: their LM is off here, to fit 2 CPUs and start faster."""
    from serving.config import AppConfig, Resources

    small = {"num_cpus": 0.1, "max_batch_size": 8}
    summarizer = None
    if summarizer_lm is not None:
        summarizer = {
            "lm": {"model": str(summarizer_lm), "device": "cpu"},
            "max_new_tokens": 8,
            "deadline_s": None,
            "cache_sentence_vectors": False,
            "max_sentences": None,
        }
    return AppConfig.model_validate(
        {
            "app_name": name,
            "store": "es",
            "elasticsearch_url": es_url,
            "es_request_timeout_s": 3,
            "search": {"default_index": INDEX, **search},
            "embedder": {"model": str(embedder), "device": "cpu"},
            "reranker": {
                "model": str(reranker),
                "device": "cpu",
                **({"deadline_ms": rerank_deadline_ms} if rerank_deadline_ms is not None else {}),
            },
            "ingress": Resources(**small).model_dump(),
            "encoder_resources": Resources(**small).model_dump(),
            "encoder_placement": placement,
            "reranker_resources": Resources(**small).model_dump(),
            "suggest": {"lm": {"enabled": False}, "prefetch_top": 0, "min_sessions": 1},
            "summarizer": summarizer,
            "summarizer_resources": Resources(**small).model_dump(),
        }
    )


@pytest.fixture(scope="module")
def serve_url(
    indexed: str, tiny_embedder_path: Path, tiny_reranker_path: Path, tiny_chat_lm_path: Path
) -> Iterator[str]:
    import ray
    from ray import serve

    from search.settings import Settings
    from serving.builder import build_app

    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    from serving.ray_env import prepare_ray_env

    prepare_ray_env()  # as `sift serve` starts Ray
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=200 * 1024 * 1024, log_to_driver=False)
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        serve.run(
            build_app(
                app_config(indexed, tiny_embedder_path, tiny_reranker_path, "main", tiny_chat_lm_path), Settings()
            ),
            name="main",
            route_prefix="/",
        )
        # A second app whose reranker can never meet its deadline, encoding queries in its ingress.
        slow = app_config(
            indexed, tiny_embedder_path, tiny_reranker_path, "slow", placement="ingress", rerank_deadline_ms=1
        )
        serve.run(
            build_app(slow, Settings()),
            name="slow",
            route_prefix="/slow",
        )
        url = f"http://127.0.0.1:{port}"
        wait_ready(url)
        wait_ready(url + "/slow")
        yield url
    finally:
        serve.shutdown()
        shutdown_ray()


@pytest.fixture(scope="module")
def http(serve_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=serve_url, timeout=30) as c:
        yield c


def search(http: httpx.Client, **body: Any) -> dict[str, Any]:
    r = http.post("/v1/search", json=body)
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def test_fusion_order_matches_hand_computed_rrf(http: httpx.Client, indexed: str, tiny_embedder: Any) -> None:
    q = "how do exceptions handle errors"
    resp = search(http, query=q, limit=10, rerank=False, fusion="rrf")
    store = ElasticsearchStore(indexed)
    lex = store.bm25_search(INDEX, q, 100)
    den = store.knn_search(INDEX, tiny_embedder.embed([q])[0].tolist(), 100)
    expected = [doc_id for doc_id, _ in ranked(rrf([lex, den], k=60))[:10]]
    assert [r["id"] for r in resp["results"]] == expected
    assert resp["reranked"] is False and resp["rerank_note"] == "reranking not requested"
    assert resp["stages"] == ["encode", "bm25", "dense", "fusion:rrf"]
    store.close()


def test_rerank_explanations_and_highlights(http: httpx.Client) -> None:
    # the whole reranked head (top_n = 20): the tiny cross-encoder's scores follow its tokenizer, whose WordPiece
    # vocabulary is not the same from run to run, so any shorter page may happen to hold no BM25 match
    resp = search(http, query="exceptions errors", limit=20)
    assert resp["reranked"] is True and "rerank" in resp["stages"], resp["rerank_note"]
    results = resp["results"]
    scores = [r["explanation"]["rerank_score"] for r in results]
    assert all(s is not None for s in scores)
    assert scores == sorted(scores, reverse=True)
    for r in results:
        ex = r["explanation"]
        assert r["score"] == ex["rerank_score"]
        assert math.isfinite(ex["fused_score"])  # z-scored linear fusion (the default) may be below 0
        assert ex["bm25_rank"] is not None or ex["dense_rank"] is not None
        assert ex["stages"] == ["bm25", "dense", "fusion:linear", "rerank"]  # the default fusion; ES: no dense-prf
    lexical = [r for r in results if r["explanation"]["bm25_rank"] is not None]
    assert lexical, [(r["id"], r["explanation"]) for r in results]
    for r in lexical:  # every lexical match shows where it matched
        assert "<em>" in "".join(r["highlights"]["body"] + r["highlights"]["title"]), r["highlights"]


def test_filters(http: httpx.Client) -> None:
    resp = search(
        http, query="files modules classes", limit=20, filters=[{"type": "term", "field": "lang", "value": "de"}]
    )
    assert resp["results"] and all(r["fields"]["lang"] == "de" for r in resp["results"])
    resp = search(
        http,
        query="files",
        limit=50,
        rerank=False,
        filters=[{"type": "range", "field": "year", "gte": 2010, "lt": 2015}],
    )
    assert sorted(r["fields"]["year"] for r in resp["results"]) == [2010, 2011, 2012, 2013, 2014]
    resp = search(http, query="files", limit=50, filters=[{"type": "terms", "field": "lang", "values": ["xx"]}])
    assert resp["results"] == []


def test_pagination(http: httpx.Client) -> None:
    full = search(http, query="statement sequence list", limit=6, rerank=False)
    p1 = search(http, query="statement sequence list", limit=3, offset=0, rerank=False)
    p2 = search(http, query="statement sequence list", limit=3, offset=3, rerank=False)
    ids = [r["id"] for r in full["results"]]
    assert len(ids) == 6
    assert [r["id"] for r in p1["results"]] + [r["id"] for r in p2["results"]] == ids
    # With reranking, pages cut the same reranked list.
    full = search(http, query="statement sequence list", limit=6)
    p2 = search(http, query="statement sequence list", limit=3, offset=3)
    assert [r["id"] for r in p2["results"]] == [r["id"] for r in full["results"]][3:]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"query": ""}, "query"),
        ({"query": "   "}, "query"),
        ({"query": "x" * 1001}, "query"),
        ({"query": "ok", "limit": 101}, "limit"),
        ({"query": "ok", "limit": 0}, "limit"),
        ({"query": "ok", "filters": [{"type": "term", "field": "colour", "value": "red"}]}, "field"),
        ({"query": "ok", "unknown": 1}, "unknown"),
        ({}, "query"),
    ],
)
def test_422(http: httpx.Client, body: dict[str, Any], field: str) -> None:
    r = http.post("/v1/search", json=body)
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert any(field in [str(x) for x in d["loc"]] for d in detail), detail
    assert all(d["msg"] for d in detail)


def test_unknown_filter_field_message(http: httpx.Client) -> None:
    r = http.post("/v1/search", json={"query": "ok", "filters": [{"type": "term", "field": "colour", "value": "x"}]})
    assert r.status_code == 422
    assert "unknown filter field 'colour'" in r.json()["detail"][0]["msg"]


def test_unknown_index_404(http: httpx.Client) -> None:
    r = http.post("/v1/search", json={"query": "ok", "index": "no-such-index"})
    assert r.status_code == 404 and "no-such-index" in r.text


def test_encoder_in_the_ingress_gives_the_same_results(http: httpx.Client) -> None:
    """encoder_placement: ingress (the "slow" app) builds no query-encoder deployment and ranks identically."""
    from ray import serve

    deployments = serve.status().applications["slow"].deployments
    assert "query_encoder" not in deployments and "query_encoder" in serve.status().applications["main"].deployments
    assert http.get("/slow/readyz").json()["checks"]["query_encoder"] is True
    for q in ("loops over a list", "read files"):
        here = http.post("/slow/v1/search", json={"query": q, "rerank": False, "mode": "dense"}).json()
        there = search(http, query=q, rerank=False, mode="dense")
        assert [r["id"] for r in here["results"]] == [r["id"] for r in there["results"]]
        got = [r["explanation"]["dense_score"] for r in here["results"]]
        assert got == pytest.approx([r["explanation"]["dense_score"] for r in there["results"]], abs=1e-5)


def test_rerank_deadline_keeps_fused_order(http: httpx.Client) -> None:
    slow = http.post("/slow/v1/search", json={"query": "exceptions errors", "limit": 10})
    assert slow.status_code == 200, slow.text
    body = slow.json()
    assert body["reranked"] is False and "deadline" in body["rerank_note"]
    plain = search(http, query="exceptions errors", limit=10, rerank=False)
    assert [r["id"] for r in body["results"]] == [r["id"] for r in plain["results"]]
    assert all(r["explanation"]["rerank_score"] is None for r in body["results"])


def test_search_with_summarize_streams_from_the_summarizer_deployment(http: httpx.Client) -> None:
    """`summarize: true` → results at once plus `summary_url`; GET it → SSE from the summarizer deployment."""
    body = search(http, query="exceptions errors", limit=10, summarize=True)
    url = body["summary_url"]
    assert url and url.startswith("/v1/summarize?")
    top5 = [r["id"] for r in body["results"][:5]]
    assert [v for k, v in parse_qsl(urlsplit(url).query) if k == "ids"] == top5
    assert search(http, query="exceptions errors")["summary_url"] is None  # only when asked
    events: list[tuple[str, Any]] = []
    with http.stream("GET", url, timeout=120) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        name = None
        for line in r.iter_lines():
            if line.startswith("event: "):
                name = line[len("event: ") :]
            elif line.startswith("data: "):
                events.append((str(name), json.loads(line[len("data: ") :])))
    kinds = [e for e, _ in events]
    assert kinds[-1] == "summary" and kinds.count("summary") == 1, kinds
    summary = events[-1][1]
    assert [s["id"] for s in summary["sources"]] == top5
    assert summary["generated_tokens"] <= 8  # the deployment's max_new_tokens cap
    assert all(set(s["citations"]) <= set(range(1, 6)) for s in summary["sentences"])
    metrics = http.get("/metrics").text
    assert "sift_summary_ttft_seconds_count 1.0" in metrics and "sift_summary_total_seconds_count 1.0" in metrics


def test_health_ready_metrics_docs(http: httpx.Client) -> None:
    assert http.get("/healthz").json() == {"status": "ok"}
    ready = http.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"] == {
        "store": True,
        "query_encoder": True,
        "reranker": True,
        "summarizer": True,
    }
    search(http, query="loops")
    metrics = http.get("/metrics").text
    assert 'sift_stage_seconds_count{stage="retrieve"}' in metrics
    assert 'sift_stage_seconds_count{stage="rerank"}' in metrics
    assert 'sift_http_requests_total{method="POST",route="/v1/search",status="200"}' in metrics
    assert http.get("/docs").status_code == 200
    assert "/v1/search" in http.get("/openapi.json").json()["paths"]


def test_store_outage_503_then_recovers(http: httpx.Client, node: Any) -> None:
    assert search(http, query="loops")["results"]
    node.stop()
    try:
        r = http.post("/v1/search", json={"query": "loops"})
        assert r.status_code == 503, r.text
        assert r.headers["Retry-After"] == "5"
        assert "unreachable" in r.json()["detail"]
        ready = http.get("/readyz")
        assert ready.status_code == 503 and ready.json()["checks"]["store"] is False
    finally:
        node.start()
    deadline = time.monotonic() + 60
    while True:
        r = http.post("/v1/search", json={"query": "loops"})
        if r.status_code == 200:
            break
        assert time.monotonic() < deadline, f"no recovery: {r.status_code} {r.text}"
        time.sleep(1)
    assert r.json()["results"]
    assert http.get("/readyz").status_code == 200
