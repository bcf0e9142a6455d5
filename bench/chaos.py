"""Chaos benchmark: the real Serve app over a real Elasticsearch node, under open-loop mixed search/suggest load,
while (a) one replica is killed, (b) the node is stopped for 10 s and restarted, (c) a reindex is SIGKILLed.

    .venv/bin/python bench/chaos.py [--seconds 60] [--rate 50] [--phases a,b,c] [--victim ingress|query_encoder]
        [--config configs/cpu.yaml] [--encoder torch|onnx-int8] [--encoder-placement deployment|ingress]

Setup: a node of its own (port SIFT_BENCH_CHAOS_ES_PORT, 9291, wiped before and after), SciFact's corpus (or its
first --limit documents) indexed with `sift index` (the served config's encoder), and the app started by
`serving.ray_env.run_local` (what `sift serve` runs) with `--config`: by default configs/cpu.yaml, the CPU-only
machine's settings (two ingress replicas encoding queries with ONNX int8, suggestions from the query log, their LM
off). `--encoder torch --encoder-placement deployment` serves the torch query-encoder deployment instead (the
layout for GPUs; on 2 CPUs it does not carry 50 req/s). Each phase is its own open-loop run (`--rate` requests/s
for `--seconds`, `--search-share` of them POST /v1/search, the rest GET /v1/suggest) from a separate process; the
fault comes a quarter of the way in. Phase (b) runs until 15 s after the node answers again; each phase starts once
the app answers searches again. Figures (`bench/chaos_figures.py`) are printed and written to
bench/results/chaos.json. Goals: (a) <= 0.5% failed and none sent 10 s after the kill; (b) only 503s while the node
is down, no failure after it is back (answers a search on the index: its yellow health comes a moment earlier); (c)
no failed search and the alias on its old version. Phase (c)'s reindex runs in a session of its own at autogroup
niceness 19 (--reindex-nice), as a batch job sharing the serving machine should: at normal priority on 2 CPUs its
start (imports, model load) slows searches past their deadline, which says nothing about the kill.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from models.ray_session import shutdown_ray

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from bench._latency import descendants, percentile, process_title  # noqa: E402
from bench.chaos_figures import Outcome, es_outage, reindex_kill, replica_kill  # noqa: E402

INDEX = "chaos"
APP = "chaos"
DATASET = REPO.parent / "shared" / "datasets" / "scifact"
CPU_CONFIG = REPO / "configs" / "cpu.yaml"
OUTAGE_S = 10.0
AFTER_UP_S = 15.0  # phase (b) lasts until this long after the node is back
MAX_PHASE_S = 600.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def log(msg: str) -> None:
    print(f"[chaos {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ---- load (its own process, so the driver's Ray threads never delay reading a reply) -------------------------


def workload(queries: list[str], n: int, search_share: float, seed: int = 7) -> list[dict[str, Any]]:
    """`n` requests: searches with whole queries, suggestions with their first one to three words."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        q = queries[i % len(queries)]
        session = f"s{rng.randrange(400)}"
        if rng.random() < search_share:
            out.append({"kind": "search", "body": {"query": q, "limit": 10, "session_id": session}})
        else:
            words = q.split()
            prefix = " ".join(words[: rng.randint(1, min(3, len(words)))])
            out.append({"kind": "suggest", "params": {"q": prefix, "k": 5, "session_id": session}})
    return out


def run_load(
    url: str, plan: list[dict[str, Any]], rate: float, seconds: float, start_at: float, until: str | None = None
) -> list[dict]:
    """Open-loop: request i is due at start_at + i / rate whatever happened to the others; its latency runs from
    then to the reply. Runs `seconds`, or with `until` (a path) until that file exists (at most MAX_PHASE_S)."""
    import httpx

    async def go() -> list[dict]:
        limits = httpx.Limits(max_connections=1000, max_keepalive_connections=200)
        out: list[dict] = []
        async with httpx.AsyncClient(base_url=url, timeout=30.0, limits=limits) as client:

            async def fire(i: int, due: float, t0: float) -> None:
                req = plan[i % len(plan)]
                status, error = None, None
                try:
                    if req["kind"] == "search":
                        r = await client.post("/v1/search", json=req["body"])
                    else:
                        r = await client.get("/v1/suggest", params=req["params"])
                    status, error = r.status_code, None if r.is_success else r.text[:160]
                except Exception as exc:  # no reply at all: a data point
                    error = f"{type(exc).__name__}: {exc}"
                latency = time.perf_counter() - t0 - due
                out.append({"t": due, "kind": req["kind"], "status": status, "latency": latency, "error": error})

            await asyncio.sleep(max(0.0, start_at - time.time()))
            t0 = time.perf_counter()
            tasks, i = [], 0
            while True:
                due = i / rate
                done = os.path.exists(until) if until else due >= seconds
                if done or due >= MAX_PHASE_S:
                    break
                await asyncio.sleep(max(0.0, due - (time.perf_counter() - t0)))
                tasks.append(asyncio.create_task(fire(i, due, t0)))
                i += 1
            await asyncio.gather(*tasks)
        return sorted(out, key=lambda o: o["t"])

    return asyncio.run(go())


class Load:
    """One phase's load in a worker process, started `lead_s` from now; times are relative to its start."""

    def __init__(
        self, pool: ProcessPoolExecutor, url: str, plan: list[dict], rate: float, seconds: float, until: Path | None
    ) -> None:
        self.start_at = time.time() + 2.0
        self.until = until
        self.future = pool.submit(run_load, url, plan, rate, seconds, self.start_at, str(until) if until else None)

    def stop(self) -> None:
        """End an open-ended load (`until`) now."""
        if self.until is not None:
            self.until.touch()

    def now(self) -> float:
        return time.time() - self.start_at

    def sleep_until(self, t: float) -> None:
        time.sleep(max(0.0, t - self.now()))

    def outcomes(self) -> list[Outcome]:
        return [Outcome(**o) for o in self.future.result()]


# ---- setup ----------------------------------------------------------------------------------------------------


def write_corpus(dataset: Path, limit: int | None, out: Path) -> Path:
    with open(dataset / "corpus.jsonl", encoding="utf-8") as src, open(out, "w", encoding="utf-8") as dst:
        for n, line in enumerate(src):
            if limit is not None and n >= limit:
                break
            dst.write(line)
    return out


def sift_index(source: Path, env: dict[str, str], nice: int = 0, config: Path | None = None) -> subprocess.Popen[bytes]:
    """`sift index` into the ES node; `nice` > 0 runs it as a batch job sharing the serving machine should
    (on 2 CPUs, a reindex at normal priority slows searches past their deadline while it loads its model).
    `config`: an IndexingConfig YAML (the embedder the app queries with)."""
    cmd = ["nice", "-n", str(nice)] if nice > 0 else []
    cmd += [str(REPO / ".venv" / "bin" / "sift"), "index", "--source", str(source), "--index", INDEX]
    cmd += ["--config", str(config)] if config else []
    cmd += ["--store", "es", "--quiet", "--no-progress"]
    proc = subprocess.Popen(
        cmd, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=nice > 0
    )
    if nice > 0:
        _autogroup_nice(proc.pid, nice)
    return proc


def _autogroup_nice(pid: int, nice: int) -> None:
    """With scheduler autogroups (Linux's default: one per session) `nice` only ranks processes within their
    session, and each session competes as a whole: the reindex runs in a session of its own, whose autogroup
    gets the niceness (what a pod's CPU share does on a cluster)."""
    try:
        Path(f"/proc/{pid}/autogroup").write_text(str(nice))
    except OSError as exc:
        log(f"could not set the reindex's autogroup niceness ({exc}): only its own niceness applies")


ENCODERS = {"torch": {"backend": "torch", "quantize": "none"}, "onnx-int8": {"backend": "onnx", "quantize": "int8"}}


def app_config(
    path: Path, es_url: str, port: int, data_dir: Path, encoder: str | None = None, placement: str | None = None
) -> Any:
    """The served config (`--config`: configs/cpu.yaml by default, what a CPU-only machine runs) pointed at this
    bench's node, index and port; `--encoder` / `--encoder-placement` override its query encoder."""
    from serving.config import AppConfig

    raw = AppConfig.load(path).model_dump()
    raw.update(app_name=APP, port=port, store="es", elasticsearch_url=es_url, data_dir=data_dir)
    raw["search"]["default_index"] = INDEX
    if encoder:
        raw["embedder"].update(ENCODERS[encoder])
    if placement:
        raw["encoder_placement"] = placement
    return AppConfig.model_validate(raw)


def indexing_config(app: Any, path: Path) -> Path:
    """The IndexingConfig YAML of `sift index`: the app's encoder, so the vectors match its queries'."""
    import yaml

    path.write_text(yaml.safe_dump({"embedder": app.embedder.model_dump(mode="json", exclude_defaults=True)}))
    return path


def wait_ready(url: str, timeout: float = 300) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/readyz", timeout=5).status_code == 200:
                return
        time.sleep(0.5)
    raise RuntimeError(f"{url} never became ready")


def settle(url: str, queries: list[str], timeout: float = 300) -> None:
    """Before a phase: the app answers 5 searches in a row (after a restart the node warms up first)."""
    import httpx

    deadline, streak = time.monotonic() + timeout, 0
    while streak < 5:
        if time.monotonic() > deadline:
            raise RuntimeError("the app did not answer searches again before the next phase")
        with contextlib.suppress(httpx.HTTPError):
            r = httpx.post(f"{url}/v1/search", json={"query": queries[streak]}, timeout=30)
            streak = streak + 1 if r.status_code == 200 else 0
        time.sleep(0.2 if streak else 1.0)


def replicas(role: str) -> list[int]:
    """PIDs of this app's live `role` replicas (Ray workers below this driver, by process title)."""
    prefix = f"ray::ServeReplica:{APP}:{role}"
    return [p for p in descendants(os.getpid()) if process_title(p).startswith(prefix)]


def wait_replicas(role: str, n: int, timeout: float = 180) -> None:
    from ray import serve

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        app = serve.status().applications.get(APP)
        if len(replicas(role)) >= n and app is not None and str(app.status).endswith("RUNNING"):
            return
        time.sleep(1)
    raise RuntimeError(f"{role}: {n} replicas not back within {timeout:.0f} s")


# ---- phases ---------------------------------------------------------------------------------------------------


def timeline(outcomes: list[Outcome]) -> dict[str, Any]:
    """Failures per second of the phase (by status), and a few failure bodies: what the figures summarise."""
    per_s: dict[int, dict[str, int]] = {}
    for o in outcomes:
        if not o.ok:
            slot = per_s.setdefault(int(o.t), {})
            why = next((w for w in ("deadline", "unreachable") if w in (o.error or "")), "")
            key = f"{o.kind}:{o.label}" + (f":{why}" if why else "")
            slot[key] = slot.get(key, 0) + 1
    details: dict[str, int] = {}
    for o in outcomes:
        if not o.ok:
            key = f"{o.kind} {o.label}: {(o.error or '').split(',')[0][:90]}"
            details[key] = details.get(key, 0) + 1
    lat = sorted(o.latency * 1000 for o in outcomes if o.ok)
    return {
        "ok_p50_ms": round(percentile(lat, 50), 1) if lat else None,
        "ok_p99_ms": round(percentile(lat, 99), 1) if lat else None,
        "failure_kinds": details,
        "failures_per_s": {str(k): v for k, v in sorted(per_s.items())},
    }


def phase_base(load: Load) -> dict[str, Any]:
    """No fault: what the machine sustains at this rate (failures here are capacity, not faults)."""
    outcomes = load.outcomes()
    failed = sum(1 for o in outcomes if not o.ok)
    pct = round(100 * failed / len(outcomes), 3) if outcomes else 0.0
    return {
        "requests": len(outcomes),
        "failed": failed,
        "failed_pct": pct,
        "goal_met": failed == 0,
        **timeline(outcomes),
    }


def phase_a(load: Load, at: float, victim: str) -> dict[str, Any]:
    load.sleep_until(at)
    pids = replicas(victim)
    if not pids:
        raise RuntimeError(f"no {victim} replica found to kill")
    os.kill(pids[0], signal.SIGKILL)
    kill_t = load.now()
    log(f"(a) killed {victim} replica pid {pids[0]} at t={kill_t:.1f}s ({len(pids)} were running)")
    outcomes = load.outcomes()
    return {"victim": victim, "kill_t": round(kill_t, 2), **replica_kill(outcomes, kill_t), **timeline(outcomes)}


def phase_b(load: Load, at: float, node: Any) -> dict[str, Any]:
    load.sleep_until(at)
    down_t = load.now()
    node.stop()
    log(f"(b) node stopped at t={down_t:.1f}s (took {load.now() - down_t:.1f}s); down for {OUTAGE_S:g}s")
    time.sleep(OUTAGE_S)
    restart_t = load.now()
    probes: list[tuple[float, float, int | None]] = []
    stop = threading.Event()
    prober = threading.Thread(target=_probe_node, args=(node.url, load, probes, stop), daemon=True)
    prober.start()
    node.start(timeout=300)
    yellow_t = load.now()
    _wait_searchable(node.url)  # yellow health comes a moment before the index answers searches
    up_t = load.now()
    log(f"(b) node restarted at t={restart_t:.1f}s, yellow at t={yellow_t:.1f}s, searchable at t={up_t:.1f}s")
    load.sleep_until(max(up_t + AFTER_UP_S, at * 4))
    load.stop()
    stop.set()
    prober.join()
    outcomes = load.outcomes()
    times = {"down_t": round(down_t, 2), "restart_t": round(restart_t, 2), "yellow_t": round(yellow_t, 2)}
    times["up_t"] = round(up_t, 2)
    node_search = [{"t": round(t, 2), "ms": round(ms, 1), "status": st} for t, ms, st in probes]
    return {**times, **es_outage(outcomes, down_t, up_t), **timeline(outcomes), "node_search": node_search}


def _wait_searchable(url: str, timeout: float = 120.0) -> None:
    """Until a search on the index answers 200 straight from the node: when the store is back for searches."""
    import urllib.error
    import urllib.request

    body = json.dumps({"size": 1, "query": {"match_all": {}}}).encode()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        req = urllib.request.Request(f"{url}/{INDEX}/_search", data=body, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.HTTPError, OSError):
            pass
        time.sleep(0.05)
    raise RuntimeError("the restarted node never answered a search on the index")


def _probe_node(url: str, load: Load, out: list[tuple[float, float, int | None]], stop: threading.Event) -> None:
    """A search straight to the node every 0.5 s from its restart: how long the node itself takes to answer
    searches again, apart from the app's queues."""
    import urllib.error
    import urllib.request

    body = json.dumps({"size": 10, "query": {"match": {"content": "cancer cells"}}}).encode()
    while not stop.is_set():
        t = load.now()
        req = urllib.request.Request(f"{url}/{INDEX}/_search", data=body, headers={"Content-Type": "application/json"})
        status: int | None = None
        try:
            with urllib.request.urlopen(req, timeout=15) as resp:
                status = resp.status
        except urllib.error.HTTPError as exc:
            status = exc.code
        except OSError:
            status = None
        out.append((t, (load.now() - t) * 1000, status))
        stop.wait(0.5)


def phase_c(
    load: Load, at: float, es_url: str, source: Path, env: dict[str, str], nice: int, config: Path
) -> dict[str, Any]:
    from search.stores.elasticsearch import ElasticsearchStore

    store = ElasticsearchStore(es_url)
    before = store.current_version(INDEX)
    load.sleep_until(at)
    proc = sift_index(source, env, nice, config)
    killed: str | None = None
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        new = [v.version for v in store.list_versions(INDEX) if v.version != before]
        if new:
            time.sleep(1.0)  # let it write a few batches
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                killed = new[0]
            break
        time.sleep(0.2)
    rc = proc.wait()
    log(f"(c) reindex {'SIGKILLed while writing ' + killed if killed else f'ended by itself (rc {rc})'}")
    outcomes = load.outcomes()
    after = store.current_version(INDEX)
    store.close()
    return {**reindex_kill(outcomes, before, after, killed), **timeline(outcomes)}


# ---- main -----------------------------------------------------------------------------------------------------


def print_phase(name: str, f: dict[str, Any]) -> None:
    verdict = "PASS" if f["goal_met"] else "FAIL"
    if name == "base":
        line = f"(baseline, no fault) {f['failed']}/{f['requests']} failed ({f['failed_pct']}%)"
    elif name == "a":
        line = (
            f"(a) {f['victim']} replica killed: {f['failed']}/{f['requests']} failed ({f['failed_pct']}%), "
            f"recovered {f['recovery_s']} s after the kill, {f['failed_after_10s']} failed after 10 s "
            f"(goal <= 0.5%, 0)"
        )
    elif name == "b":
        line = (
            f"(b) ES down {f['outage_s']} s: {f['requests_during']} requests in flight, {f['ok_during']} ok, "
            f"{f['503_during']} 503, other failures {f['non_503_failures_during'] or 0} "
            f"(share of 503 among failures {f['share_503_of_failed_during']}); after recovery "
            f"{f['failed_after_recovery']}/{f['requests_after']} failed (goal: only 503 while down, 0 after)"
        )
    else:
        line = (
            f"(c) reindex killed mid-way: {f['killed_mid_way']}; {f['failed_searches']}/{f['searches']} searches "
            f"failed; alias {f['alias_before']} -> {f['alias_after']} (goal: 0 failed, alias unchanged)"
        )
    print(f"{line}  {verdict}  [ok p50 {f['ok_p50_ms']} ms, p99 {f['ok_p99_ms']} ms]", flush=True)


def _terminate(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")  # unwinds through the finally that stops Ray and the node


def main() -> None:
    signal.signal(signal.SIGTERM, _terminate)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=60.0, help="load per phase")
    p.add_argument("--rate", type=float, default=50.0, help="requests per second")
    p.add_argument("--search-share", type=float, default=0.5)
    p.add_argument(
        "--phases",
        default="base,a,c,b",
        help="run in this order; base: the same load with no fault. (b) comes last by default: the node it "
        "restarts answers, but its JVM stays cold (slow) for a minute, which would land in the next phase",
    )
    p.add_argument("--victim", choices=["ingress", "query_encoder"], default="ingress")
    p.add_argument("--config", type=Path, default=CPU_CONFIG, help="the served AppConfig YAML")
    p.add_argument(
        "--encoder",
        choices=sorted(ENCODERS),
        default=None,
        help="override the config's query and document encoder (torch: sentence-transformers)",
    )
    p.add_argument(
        "--encoder-placement",
        choices=["deployment", "ingress"],
        default=None,
        help="override AppConfig.encoder_placement (deployment: the query-encoder deployment, one Serve hop more)",
    )
    p.add_argument("--dataset", type=Path, default=DATASET)
    p.add_argument("--limit", type=int, default=None, help="index only the first N documents")
    p.add_argument(
        "--reindex-nice",
        type=int,
        default=19,
        help="niceness of phase (c)'s reindex, a batch job on the serving machine (0: same priority as serving)",
    )
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "chaos.json")
    args = p.parse_args()
    phases = [x.strip() for x in args.phases.split(",") if x.strip()]
    tmp = Path(tempfile.mkdtemp(prefix="sift-chaos-"))
    from sift.es_node import LocalElasticsearch

    node = LocalElasticsearch(port=int(os.environ.get("SIFT_BENCH_CHAOS_ES_PORT", "9291")))
    served = app_config(args.config, node.url, free_port(), tmp / "data", args.encoder, args.encoder_placement)
    if args.victim == "query_encoder" and served.encoder_placement != "deployment":
        p.error("--victim query_encoder needs the encoder deployment (--encoder-placement deployment)")
    results: dict[str, Any] = {"args": {k: str(v) for k, v in vars(args).items()}, "phases": {}}
    ray_started = False
    try:
        node.wipe()
        node.start(timeout=600)  # a shared, loaded machine can take minutes
        env = {**os.environ, "ELASTICSEARCH_URL": node.url}
        source = write_corpus(args.dataset, args.limit, tmp / "corpus.jsonl")
        t = time.monotonic()
        index_cfg = indexing_config(served, tmp / "indexing.yaml")
        proc = sift_index(source, env, config=index_cfg)
        _, err = proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"sift index failed: {err.decode()[-2000:]}")
        log(f"indexed {source} into {node.url} in {time.monotonic() - t:.0f} s")
        with open(args.dataset / "queries.jsonl", encoding="utf-8") as fh:
            queries = [json.loads(line)["text"] for line in fh if line.strip()]

        import ray

        from search.settings import Settings
        from serving.ray_env import prepare_ray_env, run_local

        prepare_ray_env()
        ray.init(num_cpus=2, include_dashboard=False, object_store_memory=200 * 1024 * 1024, log_to_driver=False)
        ray_started = True
        os.environ["ELASTICSEARCH_URL"] = node.url
        run_local(served, Settings())
        url = f"http://127.0.0.1:{served.port}"
        wait_ready(url)
        log(f"app ready on {url}")
        n = max(1, round(args.rate * max(args.seconds, 60)))
        plan = workload(queries, n, args.search_share)
        with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
            pool.submit(run_load, url, plan[:40], 20, 2, time.time()).result()  # warm up (and start the worker)
            for name in phases:
                settle(url, queries)
                until = tmp / f"stop-{name}" if name == "b" else None  # (b): until AFTER_UP_S after the node is up
                load = Load(pool, url, plan, args.rate, args.seconds, until)
                at = args.seconds / 4
                span = "until 15 s after recovery" if until else f"for {args.seconds:g} s"
                log(f"phase ({name}): {args.rate:g} req/s {span}, fault at t={at:g}s")
                if name == "base":
                    f = phase_base(load)
                elif name == "a":
                    f = phase_a(load, at, args.victim)
                    wait_replicas(
                        args.victim, (served.ingress if args.victim == "ingress" else served.encoder_resources).replicas
                    )
                elif name == "b":
                    f = phase_b(load, at, node)
                else:
                    f = phase_c(load, at, node.url, source, env, args.reindex_nice, index_cfg)
                results["phases"][name] = {**f, "loadavg": os.getloadavg()}
                print_phase(name, f)
                log(f"load average {results['phases'][name]['loadavg']} (2 CPUs; other work shares them)")
                write(args.out, results)  # a run cut short keeps the phases it finished
    finally:
        if ray_started:
            from ray import serve

            with contextlib.suppress(Exception):
                serve.shutdown()
            shutdown_ray()
        node.wipe()
        shutil.rmtree(tmp, ignore_errors=True)
    write(args.out, results)
    log(f"wrote {args.out}")


def write(out: Path, results: dict[str, Any]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
