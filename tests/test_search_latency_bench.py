"""The latency bench's own machinery: percentiles, the open-loop scheduler, HTTP load, metrics parsing.

Fast and local: a fake coroutine and a tiny ASGI server on a free port stand in for the Serve app.
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest

from bench._latency import (
    Reply,
    cpu_ms_per_request,
    cpu_seconds,
    cpu_snapshot,
    descendants,
    dist,
    histogram_means_ms,
    histogram_totals,
    http_open_loop,
    open_loop,
    percentile,
    process_title,
)


@pytest.mark.parametrize("n", [1, 2, 7, 100, 1001])
def test_percentile_matches_numpy(n: int) -> None:
    rng = random.Random(n)
    xs = [rng.expovariate(1 / 30) for _ in range(n)]
    for q in (0, 1, 50, 95, 99, 99.9, 100):
        assert percentile(xs, q) == pytest.approx(float(np.percentile(xs, q)), rel=1e-12, abs=1e-12)


def test_percentile_edges() -> None:
    assert np.isnan(percentile([], 50))
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert percentile([10.0, 20.0], 99) == pytest.approx(19.9)
    with pytest.raises(ValueError):
        percentile([1.0], 101)
    d = dist([1.0, 2.0, 3.0, 4.0])
    assert d["n"] == 4 and d["p50_ms"] == 2.5 and d["mean_ms"] == 2.5


def test_open_loop_fires_on_schedule_while_replies_are_slow() -> None:
    """20 requests at 50/s, each taking 0.2 s: a closed loop would need 4 s, an open loop about 0.6 s."""
    started: list[float] = []

    async def send(i: int) -> Reply:
        started.append(time.perf_counter())
        await asyncio.sleep(0.2)
        return Reply(ok=True, status=200, tag=i)

    t = time.perf_counter()
    run = asyncio.run(open_loop(send, rate=50, duration=0.4))
    wall = time.perf_counter() - t
    assert len(run.samples) == 20 and run.errors == 0
    assert [s.index for s in run.samples] == list(range(20))
    assert [s.tag for s in run.samples] == list(range(20))
    assert [s.due for s in run.samples] == pytest.approx([i / 50 for i in range(20)])
    assert wall < 1.5, wall  # requests overlapped
    gaps = np.diff(started)
    assert gaps.mean() == pytest.approx(0.02, abs=0.01)
    assert all(0.19 <= s.latency < 0.6 for s in run.samples)
    summary = run.summary()
    assert summary["n"] == 20 and summary["ok"] == 20 and summary["errors"] == 0
    assert 0.19 * 1000 <= summary["p50_ms"] <= summary["p99_ms"] <= summary["max_ms"]
    assert summary["achieved_rps"] == pytest.approx(20 / run.wall)


def test_open_loop_counts_queueing_from_the_scheduled_time() -> None:
    """A server that handles one request at a time (50 ms each) gets 40/s: the backlog must show in latency."""
    lock = asyncio.Lock()

    async def send(i: int) -> Reply:
        async with lock:
            await asyncio.sleep(0.05)
        return Reply(ok=True, status=200)

    run = asyncio.run(open_loop(send, rate=40, duration=0.5))
    lat = [s.latency for s in run.samples]
    assert len(lat) == 20
    assert lat[0] < 0.2
    # Request 19 is due at 0.475 s but finishes near 20 * 0.05 = 1.0 s.
    assert lat[-1] > 0.35, lat
    assert lat[-1] > lat[0] + 0.2
    assert all(s.lag < 0.1 for s in run.samples)  # the client itself kept the schedule


def test_open_loop_records_errors_and_exceptions() -> None:
    async def send(i: int) -> Reply:
        if i % 5 == 0:
            raise ConnectionError("refused")
        if i % 5 == 1:
            return Reply(ok=False, status=503)
        return Reply(ok=True, status=200)

    run = asyncio.run(open_loop(send, rate=100, duration=0.2))
    assert len(run.samples) == 20
    assert run.errors == 8 and len(run.ok) == 12
    summary = run.summary()
    assert summary["error_kinds"] == {"ConnectionError": 4, "503": 4}
    failed = [s for s in run.samples if s.error]
    assert len(failed) == 4 and all("refused" in (s.error or "") for s in failed)


def test_open_loop_rejects_bad_arguments() -> None:
    async def send(i: int) -> Reply:
        return Reply(ok=True)

    with pytest.raises(ValueError):
        asyncio.run(open_loop(send, rate=0, duration=1))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def tiny_server() -> Iterator[str]:
    """A minimal ASGI app: odd-numbered queries fail with 500, others answer after 10 ms."""
    import uvicorn

    async def app(scope, receive, send):  # type: ignore[no-untyped-def]
        if scope["type"] == "lifespan":
            while True:
                msg = await receive()
                if msg["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif msg["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = b""
        while True:
            msg = await receive()
            body += msg.get("body", b"")
            if not msg.get("more_body"):
                break
        import json

        q = json.loads(body)["query"]
        await asyncio.sleep(0.01)
        status = 500 if int(q.split()[-1]) % 2 else 200
        payload = json.dumps({"reranked": q.startswith("r")}).encode()
        await send(
            {"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json")]}
        )
        await send({"type": "http.response.body", "body": payload})

    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "tiny server did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


def test_http_open_loop_against_a_local_server(tiny_server: str) -> None:
    bodies = [{"query": f"r q {i}"} for i in range(4)] + [{"query": "plain 2"}]

    def tag(j: object) -> bool:
        assert isinstance(j, dict)
        return bool(j["reranked"])

    run = asyncio.run(http_open_loop(f"{tiny_server}/v1/search", bodies, rate=50, duration=0.4, tag=tag))
    assert len(run.samples) == 20
    # Bodies cycle: i % 5 in (1, 3) are odd-numbered queries → 500.
    failing = [s.index for s in run.samples if not s.ok]
    assert failing == [i for i in range(20) if i % 5 in (1, 3)]
    assert all(s.status == 500 for s in run.samples if not s.ok)
    assert [s.tag for s in run.ok] == [(s.index % 5) != 4 for s in run.ok]
    assert all(s.latency >= 0.01 for s in run.ok)
    summary = run.summary()
    assert summary["errors"] == 8 and summary["error_kinds"] == {"500": 8}
    assert summary["p50_ms"] >= 10


def test_http_open_loop_counts_connection_failures() -> None:
    port = _free_port()  # nothing listens here
    run = asyncio.run(http_open_loop(f"http://127.0.0.1:{port}/x", [{"query": "a"}], rate=50, duration=0.1))
    assert len(run.samples) == 5 and run.errors == 5
    assert all(s.error and "Connect" in s.error for s in run.samples)


def test_histogram_parsing_and_means() -> None:
    from prometheus_client import CollectorRegistry, Histogram, generate_latest

    reg = CollectorRegistry()
    h = Histogram("sift_stage_seconds", "x", ["stage"], buckets=(0.01, 0.1), registry=reg)
    r = Histogram("sift_http_request_seconds", "y", ["route"], registry=reg)
    h.labels(stage="encode").observe(0.010)
    before = histogram_totals(generate_latest(reg).decode(), "sift_stage_seconds", "stage")
    assert before == {"encode": (pytest.approx(0.010), 1.0)}
    for v in (0.004, 0.006):
        h.labels(stage="encode").observe(v)
    for v in (0.02, 0.03, 0.04):
        h.labels(stage="retrieve").observe(v)
    r.labels(route="/v1/search").observe(0.5)
    text = generate_latest(reg).decode()
    after = histogram_totals(text, "sift_stage_seconds", "stage")
    means = histogram_means_ms(before, after)
    assert means["encode"] == {"n": 2, "mean_ms": pytest.approx(5.0)}
    assert means["retrieve"] == {"n": 3, "mean_ms": pytest.approx(30.0)}
    routes = histogram_totals(text, "sift_http_request_seconds", "route")
    assert routes == {"/v1/search": (pytest.approx(0.5), 1.0)}
    assert histogram_means_ms(after, after) == {}


def test_cpu_accounting_of_a_child_process() -> None:
    """A child that burns ~0.3 s of CPU shows up below us, by title, with that much CPU time."""
    import subprocess
    import sys

    code = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass\ninput()"
    child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE)
    try:
        time.sleep(0.05)
        assert child.pid in descendants(os.getpid())
        assert "process_time" in process_title(child.pid)
        groups = {"child": [child.pid], "me": [os.getpid()]}
        before = cpu_snapshot(groups)
        deadline = time.monotonic() + 30
        while (cpu_seconds(child.pid) or 0.0) < 0.3:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        after = cpu_snapshot(groups)
        per = cpu_ms_per_request(before, after, 2)
        assert after["child"] >= 0.3 > before["child"]
        assert per["child"] == pytest.approx((after["child"] - before["child"]) * 1000 / 2)
        assert set(per) == {"child", "me"}
    finally:
        child.communicate(b"\n", timeout=30)
    assert cpu_seconds(child.pid) is None  # reaped
    assert cpu_ms_per_request(before, after, 0) == {}


def test_served_facet_cost_compares_median_p50s_of_the_alternated_arms() -> None:
    from bench.search_latency import served_facet_cost

    runs = [
        {"store": "es", "config": "hybrid-plain", "p50_ms": 20.0},
        {"store": "es", "config": "hybrid+facets", "p50_ms": 23.0},
        {"store": "es", "config": "hybrid-plain", "p50_ms": 30.0},
        {"store": "es", "config": "hybrid+facets", "p50_ms": 33.0},
        {"store": "es", "config": "hybrid-plain", "p50_ms": 22.0},
        {"store": "es", "config": "hybrid+facets", "p50_ms": 27.0},
        {"store": "embedded", "config": "hybrid-plain", "p50_ms": 1.0},  # another store: not counted
        {"store": "es", "config": "hybrid", "p50_ms": 1.0},  # another configuration: not counted
    ]
    out = served_facet_cost(runs, "es")
    assert out["plain_p50_ms"] == 22.0 and out["facets_p50_ms"] == 27.0
    assert out["added_p50_pct"] == 22.7
