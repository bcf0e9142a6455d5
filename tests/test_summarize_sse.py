"""/v1/summarize over real HTTP: SSE framing, both request forms, errors, metrics, cache, and generation
stopping when the client disconnects; then the Ray Serve deployment streaming and cancelling."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from models.ray_session import shutdown_ray
from search.documents import Document
from search.summarize.config import SummarizerConfig
from search.summarize.schemas import Summary
from search.summarize.summarizer import Summarizer

TOPICS = [
    ("loops", "The for statement iterates over the items of any sequence. The while loop repeats on a condition."),
    ("exceptions", "Exceptions are raised when errors occur. Try and except statements handle them."),
    ("classes", "Classes bundle data and functionality. Creating a class creates a new type of object."),
    ("files", "Use open to read and write files. The with statement closes the file for you."),
]
INDEX = "sse-docs"
QUERY = "how does the for statement work"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def tiny_lm_path(tiny_chat_lm_path: Path) -> Path:
    return tiny_chat_lm_path


def summarizer_config(lm: Path, **kw: Any) -> SummarizerConfig:
    return SummarizerConfig.model_validate(
        {
            "lm": {"model": str(lm), "device": "cpu"},
            "max_new_tokens": 4000,  # the cap; requests ask for less, the disconnect test for all of it
            "deadline_s": None,
            "cache_sentence_vectors": False,  # never write test vectors into the user's embedding cache
            "max_sentences": None,  # the random LM's text decides nothing: only the token cap or the client ends it
            "grounding": {"threshold": 0.999},
            **kw,
        }
    )


class _Backend:
    """What create_api needs: a search service and, for the summarize routes, a summary client."""

    suggest = None  # serving.backend.Backend: this server has no suggestions, no events
    events = None
    versions: dict[str, str] = {}  # noqa: RUF012 - read only
    summary_top_k = 5

    def __init__(self, service: Any, summary_client: Any) -> None:
        self.service = service
        self.summary_client = summary_client

    async def readiness(self) -> dict[str, bool]:
        return {"store": True}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, tiny_embedder: Any, tiny_lm_path: Path) -> Iterator[Any]:
    """create_api + the summarize routes, an embedded store, tiny models, uvicorn on a free port."""
    import uvicorn

    from indexing.pipeline import IndexingConfig, IndexingPipeline
    from search.retrieval import RetrievalConfig
    from search.service import SearchConfig, SearchService
    from search.stores.embedded import EmbeddedStore
    from serving.api import create_api
    from serving.metrics import Metrics
    from serving.summary_clients import LocalSummaryClient

    tmp = tmp_path_factory.mktemp("sse")
    src = tmp / "docs.jsonl"
    with open(src, "w") as f:
        for i in range(12):
            name, text = TOPICS[i % len(TOPICS)]
            f.write(
                json.dumps({"id": f"d{i}", "title": f"{name.title()} note {i}", "text": f"{text} Note {i}."}) + "\n"
            )
    store = EmbeddedStore(tmp / "store")
    cfg = IndexingConfig(embed=False, progress=False, dead_letter_dir=tmp / "dead")
    assert IndexingPipeline(store, None, cfg).build(src, INDEX).indexed == 12
    service = SearchService(
        store, None, None, SearchConfig(default_index=INDEX, retrieval=RetrievalConfig(mode="bm25"))
    )
    metrics = Metrics()
    summarizer = Summarizer(summarizer_config(tiny_lm_path), tiny_embedder)
    summarizer.warm_up()
    api = create_api(_Backend(service, LocalSummaryClient(summarizer)), metrics)

    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(api, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    th = threading.Thread(target=srv.run, daemon=True)
    th.start()
    deadline = time.monotonic() + 30
    while not srv.started:
        assert time.monotonic() < deadline and th.is_alive(), "uvicorn did not start"
        time.sleep(0.05)

    class S:
        url = f"http://127.0.0.1:{port}"

    S.summarizer = summarizer  # type: ignore[attr-defined]
    S.service = service  # type: ignore[attr-defined]
    try:
        yield S
    finally:
        srv.should_exit = True
        th.join(timeout=30)


def read_sse(resp: httpx.Response) -> list[tuple[str, Any]]:
    """Strict framing: every frame is `event: NAME` then one `data: JSON` line, ended by a blank line."""
    raw = b"".join(resp.iter_bytes()).decode()
    assert raw.endswith("\n\n")
    frames = raw[:-2].split("\n\n")
    out = []
    for frame in frames:
        lines = frame.split("\n")
        assert len(lines) == 2, frame
        assert lines[0].startswith("event: ") and lines[1].startswith("data: "), frame
        out.append((lines[0][len("event: ") :], json.loads(lines[1][len("data: ") :])))
    return out


def check_stream(events: list[tuple[str, Any]], ids: list[str]) -> Summary:
    names = [e for e, _ in events]
    assert names[-1] == "summary" and names.count("summary") == 1 and "error" not in names
    assert set(names[:-1]) == {"token"}
    summary = Summary.model_validate(events[-1][1])
    assert [s.id for s in summary.sources] == ids
    assert summary.sentences, "a summary always has sentences (generated or extractive)"
    for s in summary.sentences:
        assert s.citations and all(1 <= n <= len(ids) for n in s.citations)
    if not summary.cached:
        assert summary.generated_text == "".join(d["text"] for e, d in events if e == "token")
    return summary


def test_post_ids_streams_tokens_then_a_summary(server: Any) -> None:
    ids = ["d0", "d1", "d2"]
    body = {"query": QUERY, "ids": ids, "max_new_tokens": 6}
    with httpx.stream("POST", f"{server.url}/v1/summarize", json=body, timeout=120) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["cache-control"] == "no-cache"
        events = read_sse(r)
    assert len([e for e, _ in events if e == "token"]) >= 1
    summary = check_stream(events, ids)
    assert summary.generated_tokens == 6 and summary.stop_reason == "max_new_tokens"
    assert summary.extractive  # the random LM's text never passes the grounding check
    docs = {d: server.service.store.get(INDEX, d) for d in ids}
    for s in summary.sentences:  # extractive sentences are verbatim from the results they cite
        doc = docs[ids[s.citations[0] - 1]]
        assert s.text in doc.body

    with httpx.stream("POST", f"{server.url}/v1/summarize", json=body, timeout=120) as r:
        again = check_stream(read_sse(r), ids)
    assert again.cached and again.sentences == summary.sentences


def test_search_form_and_the_get_url_for_event_source(server: Any) -> None:
    from search.service import SearchResponse
    from serving.routers.summarize import summary_stream_url

    body = {"search": {"query": "exceptions errors", "limit": 3}, "k": 2, "max_new_tokens": 4}
    with httpx.stream("POST", f"{server.url}/v1/summarize", json=body, timeout=120) as r:
        assert r.status_code == 200
        events = read_sse(r)
    resp = SearchResponse.model_validate(
        httpx.post(f"{server.url}/v1/search", json={"query": "exceptions errors"}, timeout=30).json()
    )
    top2 = [x.id for x in resp.results[:2]]
    check_stream(events, top2)

    url = summary_stream_url(resp, k=2)
    assert url is not None and url.startswith("/v1/summarize?") and "ids=" in url
    assert f"query_id={resp.query_id}" in url and "exceptions" not in url  # an id in the URL, never the text
    with httpx.stream("GET", f"{server.url}{url}&max_new_tokens=4", timeout=120) as r:
        assert r.status_code == 404  # this server logs no searches: no impression to read the query from
    ids = "&".join(f"ids={i}" for i in top2)
    with httpx.stream("GET", f"{server.url}/v1/summarize?query=exceptions&{ids}&max_new_tokens=4", timeout=120) as r:
        assert r.status_code == 200
        check_stream(read_sse(r), top2)
    comma = f"{server.url}/v1/summarize?query=q+x&ids={','.join(top2)}&max_new_tokens=4"
    with httpx.stream("GET", comma, timeout=120) as r:
        check_stream(read_sse(r), top2)
    empty = resp.model_copy(update={"results": []})
    assert summary_stream_url(empty) is None


@pytest.mark.parametrize(
    ("method", "kwargs", "status"),
    [
        ("POST", {"json": {"query": QUERY, "ids": ["d0", "nope", "gone"]}}, 404),
        ("POST", {"json": {"query": QUERY, "ids": ["d0"], "index": "no-such-index"}}, 404),
        ("POST", {"json": {"search": {"query": "zzzqqq"}}}, 404),
        ("POST", {"json": {"query": QUERY}}, 422),
        ("POST", {"json": {"query": QUERY, "ids": ["d0"], "index": ".."}}, 422),
        ("GET", {"params": {"query": QUERY, "ids": "d0", "index": "../x"}}, 422),
        ("POST", {"json": {"ids": ["d0"]}}, 422),
        ("POST", {"json": {"query": "  ", "ids": ["d0"]}}, 422),
        ("POST", {"json": {"query": QUERY, "ids": []}}, 422),
        ("POST", {"json": {"query": QUERY, "ids": ["d0"], "search": {"query": "x"}}}, 422),
        ("POST", {"json": {"query": QUERY, "ids": ["d0"], "surprise": 1}}, 422),
        ("POST", {"json": {"query": QUERY, "ids": ["d0"], "max_new_tokens": 0}}, 422),
        ("GET", {"params": {"query": QUERY}}, 422),
        ("GET", {"params": {"query": " ", "ids": "d0"}}, 422),
        ("GET", {"params": {"query": QUERY, "ids": "unknown"}}, 404),
    ],
)
def test_bad_requests(server: Any, method: str, kwargs: dict[str, Any], status: int) -> None:
    r = httpx.request(method, f"{server.url}/v1/summarize", timeout=30, **kwargs)
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    if status == 404 and "ids" in kwargs.get("json", {}) and "index" not in kwargs["json"]:
        assert r.json()["detail"]["ids"] == ["nope", "gone"]


def test_client_disconnect_stops_generation(server: Any) -> None:
    s: Summarizer = server.summarizer
    before = len(s.generations)
    body = {"query": "disconnect test " + str(time.time()), "ids": ["d3", "d4"]}  # uncached, no token cap
    with httpx.stream("POST", f"{server.url}/v1/summarize", json=body, timeout=120) as r:
        assert r.status_code == 200
        lines = r.iter_lines()
        for line in lines:
            if line == "event: token":
                break
        assert next(lines).startswith("data: ")
        rec = s.generations[-1]
        assert len(s.generations) == before + 1 and not rec.finished.is_set()
    closed = time.monotonic()  # leaving the block closed the connection
    assert rec.finished.wait(timeout=30), "generation kept running after the client left"
    assert rec.reason == "cancelled"
    assert rec.tokens < rec.max_new_tokens == 4000
    assert time.monotonic() - closed < 30
    text = httpx.get(f"{server.url}/metrics", timeout=30).text
    assert 'sift_summaries_total{outcome="cancelled"}' in text


def test_metrics_record_time_to_first_token_and_total(server: Any) -> None:
    with httpx.stream(
        "POST", f"{server.url}/v1/summarize", json={"query": "metrics", "ids": ["d5"], "max_new_tokens": 3}, timeout=120
    ) as r:
        read_sse(r)
    text = httpx.get(f"{server.url}/metrics", timeout=30).text
    counts = {
        line.split(" ")[0]: float(line.split(" ")[1])
        for line in text.splitlines()
        if line.startswith(("sift_summary_ttft_seconds_count", "sift_summary_total_seconds_count"))
    }
    assert counts["sift_summary_ttft_seconds_count"] >= 1
    assert counts["sift_summary_total_seconds_count"] >= 1
    assert 'sift_summaries_total{outcome="extractive"}' in text


# -- the Ray Serve deployment ---------------------------------------------------------------------------------
@pytest.mark.slow
def test_serve_app_streams_and_cancels_across_deployments(
    tmp_path: Path, tiny_embedder_path: Path, tiny_lm_path: Path
) -> None:
    """The app build_app makes: Serve's HTTP proxy → the ingress → the summarizer deployment (streaming)."""
    import ray
    from ray import serve

    from indexing.pipeline import IndexingConfig, IndexingPipeline
    from search.settings import Settings
    from search.stores.embedded import EmbeddedStore
    from serving.builder import build_app
    from serving.config import AppConfig, Resources
    from serving.summary_clients import ServeSummaryClient

    src = tmp_path / "docs.jsonl"
    src.write_text(
        "".join(json.dumps({"id": f"d{i}", "title": n.title(), "text": t}) + "\n" for i, (n, t) in enumerate(TOPICS))
    )
    cfg = IndexingConfig(embed=False, progress=False, dead_letter_dir=tmp_path / "dead")
    assert IndexingPipeline(EmbeddedStore(tmp_path / "data" / "indices"), None, cfg).build(src, INDEX).indexed == len(
        TOPICS
    )

    from serving.ray_env import prepare_ray_env

    prepare_ray_env()  # as `sift serve` starts Ray
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=200 * 1024 * 1024, log_to_driver=False)
    port = free_port()
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        small = Resources(num_cpus=0.1).model_dump()
        config = AppConfig.model_validate(
            {
                "app_name": "summ",
                "store": "embedded",
                "data_dir": str(tmp_path / "data"),
                "search": {"default_index": INDEX, "retrieval": {"mode": "bm25"}},
                "embedder": {"model": str(tiny_embedder_path), "device": "cpu"},
                "reranker": {"model": None},
                "suggest": {"enabled": False},
                "summarizer": summarizer_config(tiny_lm_path).model_dump(mode="json"),
                "ingress": small,
                "summarizer_resources": small,
            }
        )
        serve.run(build_app(config, Settings()), name="summ", route_prefix="/")
        handle = serve.get_deployment_handle("summarizer", app_name="summ")
        url = f"http://127.0.0.1:{port}"

        async def last_generation_finished() -> dict[str, Any]:
            deadline = time.monotonic() + 60
            while True:
                stats = await handle.stats.remote()
                if stats and stats[-1]["finished"]:
                    return stats[-1]  # type: ignore[no-any-return]
                assert time.monotonic() < deadline, f"generation still running after cancel: {stats[-1]}"
                await asyncio.sleep(0.2)

        # Over HTTP through the proxy: SSE framing, then a client that leaves after the first token.
        body = {"query": QUERY, "ids": ["d0", "d1"], "max_new_tokens": 5}
        with httpx.stream("POST", f"{url}/v1/summarize", json=body, timeout=120) as r:
            assert r.status_code == 200, r.read()
            summary = check_stream(read_sse(r), ["d0", "d1"])
        assert summary.generated_tokens == 5
        with httpx.stream(
            "POST", f"{url}/v1/summarize", json={"query": "leave early", "ids": ["d2"]}, timeout=120
        ) as r:
            lines = r.iter_lines()
            assert next(line for line in lines if line.startswith("event:")) == "event: token"
        last = asyncio.run(last_generation_finished())
        assert last["reason"] == "cancelled" and last["tokens"] < 4000

        # Through the handle directly: the stream's cancel() reaches the replica's generator.
        client = ServeSummaryClient(handle)
        docs = [Document(id=f"d{i}", title=n.title(), body=t) for i, (n, t) in enumerate(TOPICS)]

        async def via_handle() -> None:
            assert await client.ready()
            events = [ev async for ev in client.stream(QUERY, docs, 5)]
            assert [e["event"] for e in events][-1] == "summary"
            assert [s.id for s in Summary.model_validate(events[-1]["summary"]).sources] == [d.id for d in docs]
            stream = client.stream("cancel me", docs, None)  # up to 4,000 tokens
            assert (await stream.__anext__())["event"] == "token"
            stream.cancel()
            last = await last_generation_finished()
            assert last["reason"] == "cancelled" and last["tokens"] < 4000

        asyncio.run(via_handle())
    finally:
        serve.shutdown()
        shutdown_ray()
