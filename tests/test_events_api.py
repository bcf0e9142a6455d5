"""Impressions and POST /v1/events over real HTTP (uvicorn): the embedded setup (JSONL logs) and the
Elasticsearch setup (ES store, ES query and click logs), each with two API replicas sharing the logs."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from indexing.pipeline import IndexingConfig, IndexingPipeline
from tests.widget_server import serve_in_thread

INDEX = "events-docs"
TOPICS = ["protein folding", "insulin resistance", "vitamin d", "zebrafish heart", "sleep memory", "gut bacteria"]


# The load tests send 10,000 clicks from one address onto 40 responses: far past the click caps, which would refuse
# them (tests/test_click_caps.py tests that); here the caps are out of the way of what is measured, exactly-once.
LOAD_TEST_LOG = {"max_body_bytes": 300_000, "max_clicks_per_impression": 1000, "max_clicks_per_identity_query": 5000}


def write_corpus(path: Path) -> Path:
    with open(path, "w") as f:
        for i in range(60):
            topic = TOPICS[i % len(TOPICS)]
            f.write(json.dumps({"id": f"d{i}", "title": f"{topic} study {i}", "text": f"{topic} results {i}"}) + "\n")
    return path


def app_config(data_dir: Path, **extra: Any) -> Any:
    from serving.config import AppConfig

    return AppConfig.model_validate(
        {
            "data_dir": str(data_dir),
            "search": {"default_index": INDEX, "retrieval": {"mode": "bm25"}},
            "reranker": {"model": None},
            "suggest": {"lm": {"enabled": False}, "prefetch_top": 0, "min_sessions": 1},
            "summarizer": None,
            **extra,
        }
    )


def serve_replicas(stack: ExitStack, config: Any, n: int = 2) -> tuple[list[str], list[Any]]:
    """`n` API processes' worth of backends (each its own logs and caches) on one set of log files/indices."""
    from search.settings import Settings
    from serving.api import create_api
    from serving.local import local_backend

    urls, backends = [], []
    for _ in range(n):
        backend = local_backend(config, Settings())
        stack.callback(backend.store.close)
        stack.callback(backend.suggest.close)
        backends.append(backend)
        urls.append(stack.enter_context(serve_in_thread(create_api(backend, backend.metrics))))
    return urls, backends


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[list[str], list[Any], Path]]:
    from search.stores.embedded import EmbeddedStore

    tmp = tmp_path_factory.mktemp("events-embedded")
    cfg = IndexingConfig(embed=False, dead_letter_dir=tmp / "dead", progress=False)
    IndexingPipeline(EmbeddedStore(tmp / "data" / "indices"), None, cfg).build(write_corpus(tmp / "d.jsonl"), INDEX)
    with ExitStack() as stack:
        urls, backends = serve_replicas(stack, app_config(tmp / "data", click_log=LOAD_TEST_LOG))
        yield urls, backends, tmp / "data"


def search(url: str, query: str, **body: Any) -> dict[str, Any]:
    r = httpx.post(f"{url}/v1/search", json={"query": query, **body}, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def click(resp: dict[str, Any], pos: int, **extra: Any) -> dict[str, Any]:
    """A click on absolute position `pos` of a search response."""
    doc = resp["results"][pos - 1 - resp["offset"]]["id"]
    ev = {"type": "click", "event_name": "Result clicked", "query_id": resp["query_id"]}
    return {**ev, "object_ids": [doc], "positions": [pos], **extra}


def post(url: str, events: list[dict[str, Any]], **kw: Any) -> httpx.Response:
    return httpx.post(f"{url}/v1/events", json={"events": events}, timeout=60, **kw)


def click_log_lines(data_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for p in sorted((data_dir / "clicklog").glob("*.jsonl")) for line in p.open()]


def test_search_logs_an_impression_and_a_click_is_stored_once(embedded: Any) -> None:
    urls, backends, data_dir = embedded
    resp = search(urls[0], "insulin resistance", session_id="s-1", user_token="u-1", limit=5, offset=5)
    assert len(resp["query_id"]) == 32 and resp["offset"] == 5 and len(resp["results"]) == 5
    imp = backends[1].suggest.query_log.impressions([resp["query_id"]])[resp["query_id"]]  # the other replica
    assert imp.shown == [r["id"] for r in resp["results"]] and imp.offset == 5 and imp.user_token == "u-1"
    assert imp.versions == {"retrieval": "bm25", "stages": "bm25"} and imp.index == INDEX

    ev = click(resp, 7, event_id=f"e-{uuid.uuid4().hex}")
    first = post(urls[1], [ev])
    assert first.status_code == 202, first.text
    assert first.json() == {"accepted": 1, "duplicates": 0, "event_ids": [ev["event_id"]]}
    retry = post(urls[0], [ev])  # a retried batch, at another replica
    assert retry.status_code == 202 and retry.json()["accepted"] == 0 and retry.json()["duplicates"] == 1
    stored = [r for r in click_log_lines(data_dir) if r["event_id"] == ev["event_id"]]
    assert len(stored) == 1
    rec = stored[0]
    assert rec["positions"] == [7] and rec["object_ids"] == ev["object_ids"] and rec["query"] == "insulin resistance"
    assert rec["session_id"] == "s-1" and rec["user_token"] == "u-1" and rec["index"] == INDEX

    # Without an event_id, the content is the idempotency key: the same event twice is stored once.
    ts = int(datetime.now(UTC).timestamp() * 1000)
    plain = click(resp, 6, timestamp=ts)
    a, b = post(urls[0], [plain, plain]).json(), post(urls[1], [plain]).json()
    assert (a["accepted"], a["duplicates"], b["accepted"], b["duplicates"]) == (1, 1, 0, 1)


def test_bad_events_get_422_with_a_message_each_and_nothing_is_written(embedded: Any) -> None:
    urls, _, data_dir = embedded
    resp = search(urls[0], "vitamin d", limit=10)
    before = len(click_log_lines(data_dir))
    future = int((datetime.now(UTC) + timedelta(hours=1)).timestamp() * 1000)
    good = click(resp, 1)
    wrong_doc = {**click(resp, 2), "object_ids": [resp["results"][0]["id"]]}
    bad = [
        good,
        {**good, "query_id": "0" * 32},
        {**good, "positions": [11]},
        wrong_doc,
        {**good, "timestamp": future},
    ]
    r = post(urls[0], bad)
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    by_event = {d["loc"][2]: d["msg"] for d in detail}
    assert set(by_event) == {1, 2, 3, 4}  # one message per bad event, none for the good one
    assert "unknown query_id" in by_event[1]
    assert "position 11 was never shown" in by_event[2] and "1–10" in by_event[2]
    assert "position 2 showed" in by_event[3]
    assert "in the future" in by_event[4]
    assert len(click_log_lines(data_dir)) == before  # not even the good event of the rejected batch

    no_positions = {k: v for k, v in good.items() if k != "positions"}
    r = post(urls[0], [no_positions])
    assert r.status_code == 422 and "needs positions" in r.json()["detail"][0]["msg"]
    r = post(urls[0], [good] * 1001)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "events"]
    r = httpx.post(f"{urls[0]}/v1/events", content=b"{not json", timeout=30)
    assert r.status_code == 422 and "not JSON" in r.json()["detail"][0]["msg"]
    r = httpx.post(f"{urls[0]}/v1/events", content=b" " * 300_001, timeout=30)
    assert r.status_code == 413 and "300000 bytes" in r.json()["detail"]
    assert len(click_log_lines(data_dir)) == before


def test_a_beacon_body_and_a_suggestion_click(embedded: Any) -> None:
    urls, _, data_dir = embedded
    for _ in range(2):
        search(urls[0], "zebrafish heart regeneration", session_id="s-2")
    sug = httpx.get(f"{urls[0]}/v1/suggest", params={"q": "zebra", "session_id": "s-2"}, timeout=30).json()
    assert sug["query_id"] and sug["suggestions"][0]["text"] == "zebrafish heart regeneration"
    ev = {
        "type": "click",
        "event_name": "Suggestion clicked",
        "query_id": sug["query_id"],
        "object_ids": ["zebrafish heart regeneration"],
        "positions": [1],
        "event_id": f"e-{uuid.uuid4().hex}",
    }
    # navigator.sendBeacon sends a CORS-safe text/plain body: it is accepted as JSON.
    r = httpx.post(
        f"{urls[1]}/v1/events",
        content=json.dumps({"events": [ev]}),
        headers={"Content-Type": "text/plain;charset=UTF-8"},
        timeout=30,
    )
    assert r.status_code == 202, r.text
    rec = next(r for r in click_log_lines(data_dir) if r["event_id"] == ev["event_id"])
    assert rec["source"] == "suggest" and rec["query"] == "zebra" and rec["session_id"] == "s-2"
    # The suggestions come from the default index's searches: the impression names it, so the events API checks
    # the caller may read it, as for a search.
    assert rec["index"] == INDEX


def send_concurrently(urls: list[str], responses: list[dict[str, Any]], n_events: int) -> set[str]:
    """`n_events` distinct clicks from 4 clients (batches of 250 spread over the replicas), every 10th batch
    sent twice (a retry after a lost answer); returns the event ids."""
    events = []
    for i in range(n_events):
        resp = responses[i % len(responses)]
        events.append(click(resp, 1 + (i // len(responses)) % len(resp["results"]), event_id=f"c-{i}"))
    batches = [events[i : i + 250] for i in range(0, n_events, 250)]
    jobs = [(urls[j % len(urls)], b) for j, b in enumerate(batches)] + [(urls[0], b) for b in batches[::10]]

    def run(client_no: int) -> list[int]:
        with httpx.Client(timeout=120) as http:
            return [http.post(f"{url}/v1/events", json={"events": b}).status_code for url, b in jobs[client_no::4]]

    with ThreadPoolExecutor(4) as pool:
        codes = [c for cs in pool.map(run, range(4)) for c in cs]
    assert codes == [202] * len(jobs)
    return {e["event_id"] for e in events}


@pytest.mark.slow
def test_ten_thousand_concurrent_events_land_exactly_once_jsonl(embedded: Any) -> None:
    urls, backends, data_dir = embedded
    responses = [search(urls[i % 2], TOPICS[i % len(TOPICS)], session_id=f"c{i}") for i in range(40)]
    ids = send_concurrently(urls, responses, 10_000)
    stored = [r["event_id"] for r in click_log_lines(data_dir) if r["event_id"].startswith("c-")]
    assert len(stored) == 10_000 and set(stored) == ids
    replayed = [r for r in backends[0].events.clicks.read() if r.event_id.startswith("c-")]
    assert len(replayed) == 10_000


@pytest.mark.es
@pytest.mark.slow
def test_ten_thousand_concurrent_events_land_exactly_once_elasticsearch(
    es_url: str, index_name: str, tmp_path: Path
) -> None:
    from search.stores.elasticsearch import ElasticsearchStore

    store = ElasticsearchStore(es_url)
    cfg = IndexingConfig(embed=False, dead_letter_dir=tmp_path / "dead", progress=False)
    IndexingPipeline(store, None, cfg).build(write_corpus(tmp_path / "d.jsonl"), INDEX + "-" + index_name)
    store.close()
    config = app_config(
        tmp_path / "data",
        store="es",
        elasticsearch_url=es_url,
        search={"default_index": INDEX + "-" + index_name, "retrieval": {"mode": "bm25"}},
        query_log={"es_index": f"ql-{index_name}", "es_flush_interval_s": 0.2},
        click_log={"es_index": f"cl-{index_name}", **LOAD_TEST_LOG},
    )
    with ExitStack() as stack:
        urls, backends = serve_replicas(stack, config)
        # An impression served by replica 0 and still in its write buffer is found by replica 1.
        resp = search(urls[0], "sleep memory")
        r = post(urls[1], [click(resp, 1, event_id="first")])
        assert r.status_code == 202 and r.json()["accepted"] == 1, r.text
        responses = [search(urls[i % 2], TOPICS[i % len(TOPICS)], session_id=f"c{i}") for i in range(40)]
        ids = send_concurrently(urls, responses, 10_000)
        records = list(backends[1].events.clicks.read())
        stored = [r.event_id for r in records if r.event_id.startswith("c-")]
        assert len(stored) == 10_000 and set(stored) == ids
        assert {r.index for r in records} == {INDEX + "-" + index_name}
