"""The ingress's own thread pool and a store that does not retry timed-out calls on the serving path: a few
calls stuck on a slow node must not hold every worker thread, nor hold one past the deadline."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import httpx
import pytest
from fastapi import FastAPI

from search.stores.elasticsearch import ElasticsearchStore
from serving.executor import WorkerPoolMiddleware


def _app(threads: int, gate: threading.Event) -> FastAPI:
    app = FastAPI()

    @app.get("/slow")
    async def slow() -> dict[str, bool]:
        return {"ok": await asyncio.to_thread(gate.wait, 30)}

    @app.get("/fast")
    async def fast() -> dict[str, str]:
        return {"thread": await asyncio.to_thread(lambda: threading.current_thread().name)}

    app.add_middleware(WorkerPoolMiddleware, threads=threads)
    return app


async def _stuck_then_fast(threads: int, stuck: int) -> bool:
    """`stuck` requests blocked in worker threads, then one quick one: whether it answered within 3 s."""
    gate = threading.Event()
    app = _app(threads, gate)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        blocked = [asyncio.create_task(client.get("/slow")) for _ in range(stuck)]
        await asyncio.sleep(0.3)  # every slow request is in its thread by now
        try:
            r = await asyncio.wait_for(client.get("/fast"), 3.0)
            answered = r.status_code == 200 and r.json()["thread"].startswith("sift-io")
        except TimeoutError:
            answered = False
        gate.set()
        assert [r.json() for r in await asyncio.gather(*blocked)] == [{"ok": True}] * stuck
    return answered


def test_stuck_calls_leave_threads_for_other_requests() -> None:
    # 12 stuck calls would fill asyncio's default pool on a small machine (CPUs + 4); 32 threads leave room
    assert asyncio.run(_stuck_then_fast(threads=32, stuck=12))


def test_the_pool_is_bounded() -> None:
    # the same middleware with 2 threads and 2 stuck calls: the quick request waits (what the default pool did)
    assert not asyncio.run(_stuck_then_fast(threads=2, stuck=2))


def test_threads_must_be_positive() -> None:
    with pytest.raises(ValueError, match="threads must be >= 1"):
        WorkerPoolMiddleware(FastAPI(), threads=0)


def _silent_node() -> tuple[socket.socket, list[int]]:
    """A TCP listener that accepts and never answers (a node stuck in GC or on a full disk); counts accepts."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    accepted = [0]
    held: list[socket.socket] = []

    def loop() -> None:
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            accepted[0] += 1
            held.append(conn)

    threading.Thread(target=loop, daemon=True).start()
    return srv, accepted


@pytest.mark.parametrize(("retry", "attempts"), [(False, 1), (True, 3)])
def test_timed_out_calls_are_retried_only_when_asked(retry: bool, attempts: int) -> None:
    srv, accepted = _silent_node()
    url = f"http://127.0.0.1:{srv.getsockname()[1]}"
    store = ElasticsearchStore(url, request_timeout=0.5, retry_busy=retry)
    try:
        t = time.monotonic()
        with pytest.raises(Exception, match=r"(?i)timeout|timed out"):
            store.client.info()
        took = time.monotonic() - t
        assert accepted[0] == attempts  # max_retries=2: three tries when retrying, one otherwise
        assert took < 0.5 * attempts + 1.0
    finally:
        srv.close()


@pytest.mark.parametrize(("retry", "attempts"), [(False, 1), (True, 3)])
def test_busy_answers_are_retried_only_when_asked(retry: bool, attempts: int) -> None:
    """A node that answers 503 (recovering, or its queues full): the serving path passes it on at once."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    hits = [0]

    class Busy(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits[0] += 1
            body = b'{"error": {"type": "cluster_block_exception"}, "status": 503}'
            self.send_response(503)
            self.send_header("Content-Type", "application/json")
            self.send_header("X-Elastic-Product", "Elasticsearch")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Busy)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    store = ElasticsearchStore(f"http://127.0.0.1:{srv.server_address[1]}", request_timeout=5, retry_busy=retry)
    try:
        with pytest.raises(Exception, match="503"):
            store.client.info()
        assert hits[0] == attempts
    finally:
        srv.shutdown()
        srv.server_close()


class _SlowLexicalStore:
    """BM25 calls meet at a barrier: they all return only if `parties` of them run at the same time."""

    def __init__(self, parties: int) -> None:
        self.barrier = threading.Barrier(parties, timeout=3.0)

    def bm25_search(self, index: str, query: str, k: int, filters: object = (), *, with_docs: bool = True) -> list:
        self.barrier.wait()
        return []

    def knn_search(self, index: str, vector: object, k: int, filters: object = (), *, with_docs: bool = True) -> list:
        return []

    def get_many(self, index: str, ids: list[str]) -> dict:
        return {}


def test_concurrent_searches_run_their_bm25_calls_in_parallel() -> None:
    """Every concurrent search of a replica holds a retriever thread for its BM25 request; a narrow pool (it
    was 2) queues them behind a slow node, which turned a restarted node's cold seconds into deadlines."""
    import numpy as np

    from search.retrieval import HybridRetriever

    def run(threads: int) -> list[str]:
        retriever = HybridRetriever(_SlowLexicalStore(12), None, threads=threads)  # type: ignore[arg-type]
        errors: list[str] = []

        def one() -> None:
            try:
                retriever.run("docs", "query", 10, vector=np.zeros(4, dtype=np.float32))
            except threading.BrokenBarrierError:
                errors.append("broken")

        callers = [threading.Thread(target=one) for _ in range(12)]
        for c in callers:
            c.start()
        for c in callers:
            c.join(30)
        return errors

    assert run(threads=32) == []  # the default: all twelve at once
    assert run(threads=2) == ["broken"] * 12  # two at a time never gather twelve
