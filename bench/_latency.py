"""Load-generation and statistics helpers for `bench/search_latency.py`, free of Ray and models so they test fast.

The load generator is open-loop: request i is due at `start + i / rate` whatever happened to earlier ones,
and its latency runs from that due time to the response. A server that falls behind therefore shows the
queueing it causes (no coordinated omission), and a client that falls behind shows up as send lag.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation between ranks (numpy's default method)."""
    if not values:
        return math.nan
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} outside 0..100")
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


@dataclass(frozen=True)
class Reply:
    """What one request produced: success, the HTTP status if there was one, and an optional tag."""

    ok: bool
    status: int | None = None
    tag: Any = None


@dataclass(frozen=True)
class Sample:
    index: int
    due: float  # seconds after the run's start when the request was scheduled
    lag: float  # how late the generator actually fired it
    latency: float  # due time → response, seconds
    ok: bool
    status: int | None
    error: str | None
    tag: Any


@dataclass
class LoadRun:
    """Samples of one open-loop run, in schedule order."""

    rate: float
    duration: float
    samples: list[Sample] = field(default_factory=list)
    wall: float = 0.0  # first due time → last response

    @property
    def ok(self) -> list[Sample]:
        return [s for s in self.samples if s.ok]

    @property
    def errors(self) -> int:
        return sum(1 for s in self.samples if not s.ok)

    def summary(self) -> dict[str, Any]:
        """n, errors, p50/p95/p99/mean/max (ms, successful requests), achieved rate, worst send lag."""
        lat = [s.latency * 1000 for s in self.ok]
        statuses: dict[str, int] = {}
        for s in self.samples:
            if not s.ok:
                key = str(s.status) if s.status is not None else (s.error or "error").split(":")[0]
                statuses[key] = statuses.get(key, 0) + 1
        return {
            "n": len(self.samples),
            "ok": len(lat),
            "errors": self.errors,
            "error_kinds": statuses,
            "p50_ms": percentile(lat, 50),
            "p95_ms": percentile(lat, 95),
            "p99_ms": percentile(lat, 99),
            "mean_ms": sum(lat) / len(lat) if lat else math.nan,
            "max_ms": max(lat) if lat else math.nan,
            "offered_rps": self.rate,
            "achieved_rps": len(self.samples) / self.wall if self.wall > 0 else math.nan,
            "max_send_lag_ms": max((s.lag for s in self.samples), default=0.0) * 1000,
        }


SendFn = Callable[[int], Awaitable[Reply]]


async def open_loop(
    send: SendFn,
    rate: float,
    duration: float,
    *,
    clock: Callable[[], float] = time.perf_counter,
    sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
) -> LoadRun:
    """Fire `send(i)` at `rate` per second for `duration` seconds on a fixed schedule; wait for every reply.

    Exceptions from `send` count as errors (with their type and message), never abort the run.
    """
    if rate <= 0 or duration <= 0:
        raise ValueError("rate and duration must be positive")
    n = max(1, round(rate * duration))
    run = LoadRun(rate=rate, duration=duration)
    results: list[Sample | None] = [None] * n
    start = clock()

    async def fire(i: int, due: float) -> None:
        fired = clock() - start
        try:
            reply = await send(i)
            err = None
        except Exception as exc:  # any failure is a data point, not a crash
            reply, err = Reply(ok=False), f"{type(exc).__name__}: {exc}"
        done = clock() - start
        results[i] = Sample(i, due, max(0.0, fired - due), done - due, reply.ok, reply.status, err, reply.tag)

    tasks = []
    for i in range(n):
        due = i / rate
        wait = due - (clock() - start)
        if wait > 0:
            await sleep(wait)
        tasks.append(asyncio.create_task(fire(i, due)))
    await asyncio.gather(*tasks)
    run.samples = [s for s in results if s is not None]
    run.wall = max((s.due + s.latency for s in run.samples), default=0.0)
    return run


async def http_open_loop(
    url: str,
    bodies: Sequence[dict[str, Any]],
    rate: float,
    duration: float,
    *,
    timeout: float = 30.0,
    tag: Callable[[Any], Any] | None = None,
) -> LoadRun:
    """POST `bodies[i % len(bodies)]` to `url` open-loop; non-2xx replies are errors. `tag(json)` labels replies."""
    import httpx

    limits = httpx.Limits(max_connections=1000, max_keepalive_connections=200)
    async with httpx.AsyncClient(timeout=timeout, limits=limits) as client:

        async def send(i: int) -> Reply:
            r = await client.post(url, json=bodies[i % len(bodies)])
            ok = 200 <= r.status_code < 300
            return Reply(ok=ok, status=r.status_code, tag=tag(r.json()) if ok and tag is not None else None)

        return await open_loop(send, rate, duration)


_SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][\w:]*)\{(?P<labels>[^}]*)\}\s+(?P<value>\S+)$")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def histogram_totals(text: str, metric: str, label: str) -> dict[str, tuple[float, float]]:
    """(sum, count) per value of `label` for a Prometheus histogram `metric` in exposition text."""
    out: dict[str, list[float]] = {}
    for line in text.splitlines():
        m = _SAMPLE.match(line.strip())
        if not m or m["name"] not in (f"{metric}_sum", f"{metric}_count"):
            continue
        labels = dict(_LABEL.findall(m["labels"]))
        if label not in labels:
            continue
        slot = out.setdefault(labels[label], [0.0, 0.0])
        slot[0 if m["name"].endswith("_sum") else 1] += float(m["value"])
    return {k: (v[0], v[1]) for k, v in out.items()}


def histogram_means_ms(
    before: dict[str, tuple[float, float]], after: dict[str, tuple[float, float]]
) -> dict[str, dict[str, float]]:
    """Per label: observations and mean (ms) between two `histogram_totals` snapshots."""
    out = {}
    for key, (s1, c1) in after.items():
        s0, c0 = before.get(key, (0.0, 0.0))
        n = c1 - c0
        if n > 0:
            out[key] = {"n": n, "mean_ms": (s1 - s0) / n * 1000}
    return out


def timed(fn: Callable[[], Any], n: int) -> list[float]:
    """Wall time (ms) of `n` sequential calls of `fn`."""
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return out


def dist(ms: Sequence[float]) -> dict[str, float]:
    """p50/p99/mean of a list of milliseconds."""
    return {
        "n": len(ms),
        "p50_ms": percentile(ms, 50),
        "p99_ms": percentile(ms, 99),
        "mean_ms": sum(ms) / len(ms) if ms else math.nan,
    }


# ---- CPU accounting: CPU time per request does not depend on how busy the shared machine is ------------------


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = open(f"/proc/{pid}/stat", encoding="ascii", errors="replace").read()
    except OSError:
        return None
    return text.rsplit(")", 1)[-1].split()  # fields from "state" on (index 0 = field 3)


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a live process (all its threads), or None if it is gone."""
    import os

    f = _stat_fields(pid)
    if f is None:
        return None
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def descendants(root: int) -> list[int]:
    """Live processes below `root` in the process tree (e.g. the Ray workers a driver started)."""
    import os

    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit() and (f := _stat_fields(int(name))) is not None:
            children.setdefault(int(f[1]), []).append(int(name))
    out, todo = [], [root]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def process_title(pid: int) -> str:
    try:
        raw = open(f"/proc/{pid}/cmdline", "rb").read()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode("utf-8", "replace").strip()


def cpu_snapshot(pids: dict[str, list[int]]) -> dict[str, float]:
    """CPU seconds per named group of processes."""
    return {name: sum(cpu_seconds(p) or 0.0 for p in group) for name, group in pids.items()}


def cpu_ms_per_request(before: dict[str, float], after: dict[str, float], requests: int) -> dict[str, float]:
    """CPU milliseconds each group spent per request between two snapshots."""
    if requests <= 0:
        return {}
    return {k: (after[k] - before.get(k, 0.0)) * 1000 / requests for k in after}
