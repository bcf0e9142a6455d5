"""POST /v1/search under an outside load generator (vegeta, open loop): p50/p99/success and CPU per request of
the whole machine at each rate, for one or more serving setups side by side (issue 37).

A setup is a config file, optionally `--no-ray` (uvicorn in one process, no Serve proxy) and optionally a git
ref: `REF:configs/demo.yaml` serves that commit's code from a throwaway worktree (today's path beside the new).
Each setup is started on its own port, warmed up, loaded at each rate for `--duration` seconds, stopped.

CPU per request: busy jiffies of /proc/stat over the attack divided by the requests sent, so the load generator
and anything else on the machine count too; on a shared machine the figure is an upper bound, and says so.

    make bench-search-load                # demo and cpu configs, today (HEAD~ref) vs now, 10/20/30/50 req/s
    .venv/bin/python bench/search_load.py --setups configs/demo.yaml --rates 10,30 --duration 10
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

REPO = Path(__file__).resolve().parents[1]
VEGETA = REPO / ".bin" / "vegeta"

# 25 plausible queries about the demo corpus (the Python docs), as a new user would type them.
DEMO_QUERIES = [
    "how do I parse command line arguments",
    "read a file line by line",
    "json dumps pretty print",
    "sort a list of dictionaries by key",
    "run a subprocess and capture output",
    "regular expression named groups",
    "datetime parse string",
    "async await event loop",
    "http request with urllib",
    "list comprehension with condition",
    "default dict counter",
    "write csv file",
    "path join and exists",
    "logging to a file",
    "thread pool executor",
    "unit test mock",
    "dataclass default factory",
    "string formatting f-string",
    "random choice from list",
    "exception traceback print",
    "socket server example",
    "decorator with arguments",
    "iterate over dictionary items",
    "environment variables os",
    "type hints generics",
]


@dataclass(frozen=True)
class Setup:
    """One way of serving: a config, with or without Ray, from the working tree or a git ref."""

    config: str
    no_ray: bool = False
    ref: str | None = None

    @classmethod
    def parse(cls, spec: str) -> Setup:
        """`[REF:]CONFIG[+noray]`, e.g. `configs/demo.yaml`, `HEAD~3:configs/cpu.yaml`, `configs/demo.yaml+noray`."""
        no_ray = spec.endswith("+noray")
        spec = spec.removesuffix("+noray")
        ref, _, config = spec.rpartition(":") if ":" in spec else ("", "", spec)
        return cls(config=config, no_ray=no_ray, ref=ref or None)

    @property
    def name(self) -> str:
        return f"{self.ref + ':' if self.ref else ''}{self.config}{' (no Ray)' if self.no_ray else ''}"


def cpu_busy() -> tuple[float, float]:
    """(busy, total) seconds of all CPUs since boot, from /proc/stat."""
    fields = [float(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    hz = os.sysconf("SC_CLK_TCK")
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)
    total = sum(fields[:8])
    return (total - idle) / hz, total / hz


def session_cpu(sid: int) -> float:
    """CPU seconds (user + system) of the live processes of session `sid`: the server, its Ray processes and
    workers (started in a session of their own), without the load generator or anyone else's work."""
    hz = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in session_pids(sid):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / hz  # utime, stime
    return total


def load_avg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def targets_file(url: str, queries: list[str], index: str | None, out: Path) -> Path:
    """vegeta's JSON target format: one POST /v1/search per query, bodies base64-encoded."""
    with out.open("w") as f:
        for q in queries:
            body: dict[str, Any] = {"query": q, "limit": 10}
            if index:
                body["index"] = index
            f.write(
                json.dumps(
                    {
                        "method": "POST",
                        "url": f"{url}/v1/search",
                        "header": {"Content-Type": ["application/json"]},
                        "body": base64.b64encode(json.dumps(body).encode()).decode(),
                    }
                )
                + "\n"
            )
    return out


def attack(
    vegeta: Path, targets: Path, rate: float, duration: float, sid: int, timeout: float = 10.0
) -> dict[str, Any]:
    """One vegeta run; vegeta's JSON report plus the machine's and the server's CPU seconds over it."""
    s0 = session_cpu(sid)
    b0, t0 = cpu_busy()
    cmd = [
        str(vegeta), "attack", "-format=json", f"-targets={targets}", f"-rate={rate:g}/s",
        f"-duration={duration:g}s", f"-timeout={timeout:g}s", "-max-workers=512",
    ]  # fmt: skip
    attack_p = subprocess.Popen(cmd, stdout=subprocess.PIPE)
    report = subprocess.run([str(vegeta), "report", "-type=json"], stdin=attack_p.stdout, capture_output=True)
    attack_p.wait()
    b1, t1 = cpu_busy()
    s1 = session_cpu(sid)
    rep = json.loads(report.stdout)
    n = max(1, int(rep.get("requests", 0)))
    lat = rep.get("latencies", {})
    return {
        "rate": rate,
        "requests": rep.get("requests", 0),
        "success": rep.get("success", 0.0),
        "p50_ms": lat.get("50th", 0) / 1e6,
        "p99_ms": lat.get("99th", 0) / 1e6,
        "cpu_ms_per_request": round((b1 - b0) * 1000 / n, 1),
        "server_cpu_ms_per_request": round((s1 - s0) * 1000 / n, 1),
        "machine_busy": round((b1 - b0) / max(1e-9, t1 - t0), 3),
        "status_codes": rep.get("status_codes", {}),
        "errors": rep.get("errors", [])[:5],
        "loadavg_after": load_avg(),
    }


def worktree(ref: str, tmp: Path) -> Path:
    """The code at `ref` in a throwaway worktree (removed by `cleanup_worktree`)."""
    path = tmp / f"tree-{ref.replace('/', '_').replace('~', '_')}"
    if not path.exists():
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(path), ref], check=True)
    return path


def cleanup_worktree(path: Path) -> None:
    subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(path)], check=False)


def sift_cmd(*args: str) -> list[str]:
    """`sift ARGS` with this Python; the code is whatever PYTHONPATH names first (the tree or a ref's worktree)."""
    return [sys.executable, "-c", "from sift.cli import app; app()", *args]


def encoder_of(root: Path, config: str) -> tuple[str, dict[str, Any], str]:
    """(store, embedder section, encoder tag) of a serve config: which index it needs."""
    from models.embedder import EmbedderConfig

    raw = yaml.safe_load((root / config).read_text()) or {}
    emb = raw.get("embedder") or {}
    tag = EmbedderConfig.model_validate(emb).encoder_tag or "torch"
    return raw.get("store", "embedded"), emb, tag


def build_index(root: Path, config: str, args: argparse.Namespace, tmp: Path, env: dict[str, str]) -> str:
    """The demo corpus indexed with the encoder this config queries with (once per store and encoder, kept under
    --data-root for later runs); returns the index name to search."""
    store, emb, tag = encoder_of(root, config)
    index = "pydocs" if store == "embedded" else f"pydocs_{tag.replace('-', '_')}"
    done = args.data_root / f".built-{store}-{tag}"
    if done.exists():
        return index
    corpus = args.data_root / "pydocs.jsonl"
    if not corpus.exists():
        subprocess.run(sift_cmd("demo-corpus", "--out", str(corpus)), cwd=REPO, check=True)
    cfg = tmp / f"indexing-{tag}.yaml"
    cfg.write_text(yaml.safe_dump({"embedder": emb}))
    print(f"indexing the demo corpus ({store}, {tag}) ...", flush=True)
    cmd = sift_cmd(
        "index", "--source", str(corpus), "--index", index, "--store", store, "--quiet", "--config", str(cfg)
    )
    subprocess.run(cmd, cwd=root, env=env, check=True, stdout=subprocess.DEVNULL)
    done.touch()
    return index


def serve(setup: Setup, port: int, tmp: Path, args: argparse.Namespace) -> tuple[subprocess.Popen[bytes], Path, str]:
    """`sift serve` for this setup on `port`, from the working tree or the ref's worktree, its index built first."""
    root = worktree(setup.ref, tmp) if setup.ref else REPO
    store, _, tag = encoder_of(root, setup.config)
    env = {**os.environ, "PYTHONPATH": str(root), "RAY_USAGE_STATS_ENABLED": "0"}
    env["SIFT_DATA_DIR"] = str(args.data_root / f"{store}-{tag}")
    if args.es_url:
        env["ELASTICSEARCH_URL"] = args.es_url
    index = build_index(root, setup.config, args, tmp, env)
    cmd = sift_cmd("serve", "--config", str(root / setup.config))
    cmd += ["--port", str(port)] + (["--no-ray"] if setup.no_ray else [])
    log = args.data_root / f"serve-{port}.log"  # kept: why a server did not start
    proc = subprocess.Popen(
        cmd, cwd=root, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True
    )
    return proc, log, index


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGINT the server's process group (Serve shuts down cleanly), then SIGKILL what is left."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGINT)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    for pid in session_pids(proc.pid):  # Ray's processes left behind (their own process groups, our session)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def session_pids(sid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[3]) == sid:
                out.append(int(stat.parent.name))
        except (OSError, ValueError):
            continue
    return out


def wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 600) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited ({proc.returncode}); see {log}")
        try:
            if httpx.get(f"{url}/readyz", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise TimeoutError(f"{url} not ready after {timeout:.0f} s; see {log}")


def settle(sid: int, limit_s: float, quiet: float = 0.35, window_s: float = 5.0) -> float:
    """Wait until the server's processes use under `quiet` CPUs over `window_s` (startup work done: the
    suggester's LM prefetch of frequent prefixes runs for minutes after start, about one CPU), at most `limit_s`;
    the wait. An idle Serve app never gets under ~0.2 CPUs (controller, proxy, replicas' and Ray's own loops:
    measured on the idle machine), so a lower bar would always wait the whole `limit_s`."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit_s:
        before = session_cpu(sid)
        time.sleep(window_s)
        if session_cpu(sid) - before < quiet * window_s:
            break
    return time.monotonic() - t0


def run_setup(setup: Setup, args: argparse.Namespace, tmp: Path, port: int) -> dict[str, Any]:
    url = f"http://127.0.0.1:{port}"
    proc, log, index = serve(setup, port, tmp, args)
    try:
        wait_ready(url, proc, log)
        waited = settle(proc.pid, args.settle)
        print(f"{setup.name}: ready; background work settled after {waited:.0f} s", flush=True)
        targets = targets_file(url, DEMO_QUERIES, index, tmp / f"targets-{port}.jsonl")
        attack(args.vegeta, targets, min(args.rates), args.warmup, proc.pid)  # warm-up, not counted
        rows = []
        for rate in args.rates:
            row = attack(args.vegeta, targets, rate, args.duration, proc.pid)
            print(
                f"{setup.name:45s} {rate:5g}/s  p50 {row['p50_ms']:7.1f} ms  p99 {row['p99_ms']:7.1f} ms  "
                f"ok {row['success']:.3f}  CPU {row['cpu_ms_per_request']:6.1f} ms/req (server "
                f"{row['server_cpu_ms_per_request']:.1f})  load {row['loadavg_after']}",
                flush=True,
            )
            rows.append(row)
        return {"setup": setup.name, "rows": rows}
    finally:
        stop(proc)


def markdown(results: list[dict[str, Any]]) -> str:
    lines = [
        "| setup | rate | p50 ms | p99 ms | success | CPU ms/request (machine) | of which the server's |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        for row in r["rows"]:
            lines.append(
                f"| {r['setup']} | {row['rate']:g}/s | {row['p50_ms']:.1f} | {row['p99_ms']:.1f} | "
                f"{row['success'] * 100:.1f}% | {row['cpu_ms_per_request']:.1f} | "
                f"{row['server_cpu_ms_per_request']:.1f} |"
            )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--setups",
        default="configs/demo.yaml,configs/cpu.yaml",
        help="comma-separated [REF:]CONFIG[+noray]; the same with --baseline REF prefixed are run first",
    )
    ap.add_argument("--baseline", default=None, help="git ref of today's path to run beside each setup (e.g. HEAD~5)")
    ap.add_argument("--rates", default="10,20,30,50", help="requests per second, comma-separated")
    ap.add_argument("--duration", type=float, default=30.0, help="seconds per rate")
    ap.add_argument("--warmup", type=float, default=10.0, help="seconds of load before measuring, not counted")
    ap.add_argument("--port", type=int, default=8210, help="first HTTP port; each setup takes the next")
    ap.add_argument(
        "--data-root",
        type=Path,
        default=REPO / ".data" / "search-load",
        help="the demo corpus and its indexes, one data dir per store and encoder (kept: a rerun reuses them)",
    )
    ap.add_argument(
        "--es-port", type=int, default=9266, help="local Elasticsearch node for es configs (started if down)"
    )
    ap.add_argument(
        "--settle", type=float, default=600.0, help="at most this many seconds for startup work to finish first"
    )
    ap.add_argument("--vegeta", type=Path, default=VEGETA)
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "search_load.json")
    args = ap.parse_args()
    args.rates = [float(r) for r in args.rates.split(",")]
    if not args.vegeta.exists():
        sys.exit(f"{args.vegeta} missing: `make vegeta` installs it")
    setups = [Setup.parse(s) for s in args.setups.split(",") if s]
    if args.baseline:
        setups = [s for x in setups for s in (Setup(x.config, x.no_ray, args.baseline), x)]
    tmp = Path(tempfile.mkdtemp(prefix="sift-search-load-"))
    args.data_root.mkdir(parents=True, exist_ok=True)
    results = []
    node = None
    args.es_url = None
    try:
        if any(encoder_of(REPO, s.config)[0] == "es" for s in setups):
            from sift.es_node import LocalElasticsearch

            args.es_url = f"http://127.0.0.1:{args.es_port}"
            try:
                httpx.get(args.es_url, timeout=2)  # a node already up there: used, never stopped
            except httpx.HTTPError:
                node = LocalElasticsearch(port=args.es_port)
                node.start(timeout=600)
        print(f"machine load before: {load_avg()}", flush=True)
        for i, setup in enumerate(setups):
            results.append(run_setup(setup, args, tmp, args.port + i % 5))
    finally:
        if node is not None:
            node.stop()
        for tree in tmp.glob("tree-*"):
            cleanup_worktree(tree)
        shutil.rmtree(tmp, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"load_before": load_avg(), "results": results}, indent=2))
    print(markdown(results))


if __name__ == "__main__":
    main()
