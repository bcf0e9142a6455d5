"""`SiftClient` and `AsyncSiftClient` against the real app: the FastAPI app of `sift serve --no-ray` (the
embedded store, tiny models, the JSONL logs, API keys) served by uvicorn on a loopback port. Search, suggest,
related, a click on a search's result, a streamed summary, the admin routes, a wrong key (401), and retries: a
key over its quota (429) is retried after Retry-After, a search past its deadline (503) within the policy's
bounds."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest

from indexing.pipeline import IndexingConfig, IndexingPipeline
from search.service import SearchRequest, SearchResponse
from search.stores.embedded import EmbeddedStore
from search.summarize.schemas import SummaryEvent, TokenEvent
from serving.security import hash_key
from sift.client import AsyncSiftClient, RetryPolicy, SiftClient, SiftError
from tests.widget_server import serve_in_thread

INDEX = "client-docs"
ADMIN, WEB = "sk_client_admin", "sk_client_web"
TOPICS = ["decorators wrap functions", "exceptions stop a program", "generators yield values", "files open and read"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory, tiny_embedder: Any) -> Path:
    tmp = tmp_path_factory.mktemp("client")
    src = tmp / "docs.jsonl"
    rows = [{"id": f"d{i}", "title": f"{TOPICS[i % 4].split()[0]} {i}", "text": TOPICS[i % 4]} for i in range(24)]
    src.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    cfg = IndexingConfig(dead_letter_dir=tmp / "dead", progress=False)
    IndexingPipeline(EmbeddedStore(tmp / "data" / "indices"), tiny_embedder, cfg).build(src, INDEX)
    return tmp / "data"


def serve(stack: ExitStack, data_dir: Path, embedder: Path, **extra: Any) -> str:
    """The app `sift serve --no-ray` runs for this config, on a free loopback port."""
    from search.settings import Settings
    from serving.api import create_api
    from serving.config import AppConfig
    from serving.local import local_backend

    keys = [
        {"name": "admin", "sha256": hash_key(ADMIN), "scopes": ["admin"]},
        {"name": "web", "sha256": hash_key(WEB), "scopes": ["search", "suggest", "events", "summarize"]},
    ]
    config = {
        "data_dir": str(data_dir),
        "embedder": {"model": str(embedder), "device": "cpu"},
        "search": {"default_index": INDEX},
        "reranker": {"model": None},
        "suggest": {"lm": {"enabled": False}, "prefetch_top": 0, "min_sessions": 1},
        "summarizer": None,
        "security": {"keys": keys, "rate_limits": None},
    }
    backend = local_backend(AppConfig.model_validate({**config, **extra}), Settings())
    stack.callback(backend.store.close)
    if backend.suggest is not None:
        stack.callback(backend.suggest.close)
    return stack.enter_context(serve_in_thread(create_api(backend, backend.metrics)))


@pytest.fixture(scope="module")
def url(data_dir: Path, tiny_embedder_path: Path, tiny_chat_lm_path: Path) -> Iterator[str]:
    summarizer = {
        "lm": {"model": str(tiny_chat_lm_path), "device": "cpu"},
        "max_new_tokens": 6,
        "cache_sentence_vectors": False,
    }
    with ExitStack() as stack:
        yield serve(stack, data_dir, tiny_embedder_path, summarizer=summarizer)


def recording(statuses: list[int]) -> httpx.Client:
    """An httpx client that notes each answer's status: what the retries did, seen on the wire."""
    return httpx.Client(event_hooks={"response": [lambda r: statuses.append(r.status_code)]})


def test_search_suggest_related(url: str) -> None:
    with SiftClient(url, api_key=WEB) as sift:
        page = sift.search("decorators wrap", limit=3, session_id="s-client", mode="bm25")
        assert isinstance(page, SearchResponse) and page.index == INDEX and len(page.results) == 3
        assert all(r.title.startswith("decorators") for r in page.results)
        typed = sift.search(SearchRequest(query="generators", limit=2, offset=2, mode="bm25"))
        assert typed.offset == 2 and [r.title.split()[0] for r in typed.results] == ["generators"] * 2
        sift.search("exceptions stop", session_id="s-client", mode="bm25")

        suggested = sift.suggest("decor", k=3)
        assert suggested.query == "decor" and suggested.query_id
        top = suggested.suggestions[0]  # the logged query, which the corpus may also hold ("log+corpus")
        assert top.text == "decorators wrap" and "log" in top.source.split("+")
        related = sift.related("decorators wrap", k=3)
        assert related.query == "decorators wrap" and "exceptions stop" in [r.text for r in related.related]

        with pytest.raises(SiftError) as bad:  # the server's own validation, as a typed error
            sift.search(SearchRequest(query="x", index="no-such-index"))
        assert bad.value.status == 404 and "no-such-index" in str(bad.value.detail)


def test_click_round_trip(url: str) -> None:
    with SiftClient(url, api_key=WEB) as sift:
        page = sift.search("files open", limit=5, offset=1, user_token="u-1", mode="bm25")
        clicked = page.results[2].id
        accepted = sift.click(page, clicked, user_token="u-1")
        assert accepted.accepted == 1 and accepted.duplicates == 0
        again = sift.click(page, clicked, user_token="u-1")  # a retried click is stored once
        assert again.accepted == 0 and again.duplicates == 1 and again.event_ids == accepted.event_ids
        wrong = {"type": "click", "event_name": "x", "query_id": page.query_id, "object_ids": [clicked]}
        with pytest.raises(SiftError) as refused:  # shown at position 4 (offset 1 + index 2 + 1), not 1
            sift.events([{**wrong, "positions": [1]}])
        assert refused.value.status == 422 and isinstance(refused.value.detail, list)
        other = {**wrong, "object_ids": [page.results[3].id], "positions": [5]}  # where it was shown
        assert sift.events([other]).accepted == 1


def test_summary_stream_and_admin_routes(url: str) -> None:
    with SiftClient(url, api_key=WEB) as sift:
        ids = [r.id for r in sift.search("exceptions", limit=2, mode="bm25").results]
        events = list(sift.summarize_stream("why do exceptions stop a program", ids, max_new_tokens=4))
        assert events and isinstance(events[-1], SummaryEvent)
        assert all(isinstance(e, TokenEvent) for e in events[:-1]) and len(events) > 1
        summary = events[-1].summary
        assert summary.generated_tokens == 4 and {s.id for s in summary.sources} <= set(ids)
        tokens: list[str] = []
        of_search = sift.summarize(search=SearchRequest(query="generators", mode="bm25"), k=2, on_token=tokens.append)
        assert of_search.query == "generators" and len(of_search.sources) <= 2 and tokens
        linked = sift.search("generators yield", limit=2, mode="bm25", summarize=True)
        assert linked.summary_url and "query_id=" in linked.summary_url
        last = list(sift.summary_of(linked))[-1]  # GET summary_url: the query read back from the impression
        assert isinstance(last, SummaryEvent) and last.summary.query == "generators yield"
        with pytest.raises(ValueError, match="no summary_url"):
            sift.summary_of(sift.search("generators", mode="bm25"))
        with pytest.raises(SiftError) as forbidden:
            sift.metrics()  # the web key has no admin scope
        assert forbidden.value.status == 403
        assert sift.healthz().status == "ok"
    with SiftClient(url, api_key=ADMIN) as admin:
        assert admin.readyz().ready
        assert "/v1/summarize" in admin.metrics()  # Prometheus text, per route


def test_async_client(url: str) -> None:
    async def run() -> None:
        async with AsyncSiftClient(url, api_key=WEB) as sift:
            page = await sift.search("generators yield", limit=2, mode="bm25")
            assert page.results and page.results[0].title.startswith("generators")
            assert (await sift.click(page, page.results[0].id)).accepted == 1
            streamed = [e async for e in sift.summarize_stream("generators", [page.results[0].id], max_new_tokens=3)]
            assert isinstance(streamed[-1], SummaryEvent) and streamed[-1].summary.generated_tokens == 3
            linked = await sift.search("files open", limit=2, mode="bm25", summarize=True)
            assert isinstance([e async for e in sift.summary_of(linked)][-1], SummaryEvent)
            assert "generators yield" in [s.text for s in (await sift.suggest("gener")).suggestions]
            with pytest.raises(SiftError) as wrong:
                await AsyncSiftClient(url, api_key="sk_wrong").search("x")
            assert wrong.value.status == 401

    asyncio.run(run())


def test_wrong_key_is_401_and_not_retried(url: str) -> None:
    statuses: list[int] = []
    with pytest.raises(SiftError) as err:
        SiftClient(url, api_key="sk_not_a_key", http=recording(statuses)).search("decorators")
    assert err.value.status == 401 and err.value.detail == "unknown API key" and statuses == [401]
    with pytest.raises(SiftError) as none:
        SiftClient(url).suggest("deco")
    assert none.value.status == 401 and "required" in none.value.detail


def test_quota_429_waits_retry_after_and_succeeds(data_dir: Path, tiny_embedder_path: Path) -> None:
    """A key allowed one request a second: the second search gets 429 + Retry-After (1 s), the client waits
    that long and the retry succeeds; without retries the 429 is the error, with its Retry-After."""
    with ExitStack() as stack:
        url = serve(
            stack,
            data_dir,
            tiny_embedder_path,
            security={
                "keys": [{"name": "tiny", "sha256": hash_key(WEB), "scopes": ["search"]}],
                "rate_limits": {"per_key": "1/second"},
            },
        )
        statuses: list[int] = []
        sift = SiftClient(url, api_key=WEB, retry=RetryPolicy(max_wait_s=2.0), http=recording(statuses))
        sift.search("decorators", mode="bm25")
        started = time.monotonic()
        page = sift.search("exceptions", mode="bm25")
        assert page.results and statuses == [200, 429, 200]
        assert time.monotonic() - started >= 0.9  # it waited the Retry-After, not a blind immediate retry
        time.sleep(1.1)
        once = SiftClient(url, api_key=WEB, retry=RetryPolicy(max_attempts=1))
        once.search("files", mode="bm25")
        with pytest.raises(SiftError) as err:
            once.search("files", mode="bm25")
        assert err.value.status == 429 and err.value.retry_after is not None and err.value.retry_after >= 1


def test_503_retried_within_the_policy_then_raised(data_dir: Path, tiny_embedder_path: Path) -> None:
    """Every search passes its (tiny) deadline: 503 + Retry-After 5. The client retries, each wait cut to
    `max_wait_s`, and stops at `max_attempts`, or earlier when the next wait would pass `max_total_wait_s`."""
    with ExitStack() as stack:
        url = serve(stack, data_dir, tiny_embedder_path, search_deadline_s=1e-9)
        statuses: list[int] = []
        policy = RetryPolicy(max_attempts=3, max_wait_s=0.2, max_total_wait_s=10)
        started = time.monotonic()
        with pytest.raises(SiftError) as err:
            SiftClient(url, api_key=WEB, retry=policy, http=recording(statuses)).search("decorators")
        took = time.monotonic() - started
        assert statuses == [503, 503, 503] and err.value.status == 503 and err.value.retry_after == 5
        assert 0.4 <= took < 4  # two waits of 0.2 s, not of the 5 s the server asked
        statuses.clear()
        short = RetryPolicy(max_attempts=5, max_wait_s=0.2, max_total_wait_s=0.3)
        with pytest.raises(SiftError):
            SiftClient(url, api_key=WEB, retry=short, http=recording(statuses)).search("decorators")
        assert statuses == [503, 503]  # a second wait would make 0.4 s > 0.3 s
