"""Autocomplete under an outside, open-loop load generator: vegeta against today's path (the Serve proxy →
FastAPI ingress) and the keystroke server (`serving.keystroke`, beside Serve), side by side.

For each path and rate (50, 200, 500 req/s by default) two runs: warm prefixes (the prefixes of 25 plausible
queries about the demo corpus, each asked once before) and never-seen prefixes (corpus phrase prefixes no run
asked before, each sent once). Per run: p50, p99, success, and CPU per request of the whole machine (busy
jiffies in /proc/stat over the run, divided by requests sent; on a machine others use, it counts their work too).

`make bench-keystroke` (idle machine: both servers started on the demo config, 30 s per run) or
`python bench/suggest_load.py --serve-url http://127.0.0.1:8000 --keystroke-url http://127.0.0.1:8001
--seconds 5` against running servers. vegeta comes from `make vegeta` (pinned, the Go module proxy).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.suggest_coldstart import QUERIES, prefixes


def busy_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine so far."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return sum(fields) - idle, sum(fields)


def tree_cpu_s(root: int | None) -> float:
    """CPU seconds (user + system) of `root` and every live descendant (the Serve driver's Ray processes)."""
    if root is None:
        return 0.0
    stats: dict[int, tuple[int, float]] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            raw = (d / "stat").read_text()
        except OSError:
            continue
        f = raw[raw.rindex(")") + 2 :].split()
        stats[int(d.name)] = (int(f[1]), (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK"))
    total = 0.0
    for pid, (_, cpu) in stats.items():
        p, seen = pid, 0
        while p > 1 and seen < 64:
            if p == root:
                total += cpu
                break
            p, seen = stats.get(p, (0, 0.0))[0], seen + 1
    return total


def never_seen(data_dir: Path, exclude: set[str], n: int, index: str, seed: int = 7) -> list[str]:
    """`n` distinct prefixes (3+ characters) of the served version's corpus phrases, none in `exclude`."""
    files = sorted((data_dir / "suggest").glob(f"{index}-v*.corpus.json"))  # version names sort by time
    if not files:
        raise SystemExit(f"no corpus suggestions of {index!r} under {data_dir / 'suggest'}: run `sift suggest build`")
    phrases = list(json.loads(files[-1].read_text())["phrases"])
    pool = sorted({p[:i] for p in phrases for i in range(3, len(p) + 1) if not p[i - 1].isspace()} - exclude)
    random.Random(seed).shuffle(pool)
    if len(pool) < n:  # a small corpus: the same prefixes with another k are other cache keys
        pool = [f"{p}\x00{k}" for k in range(2, 20) for p in pool][:n]
    return pool[:n]


def url_for(base: str, prefix: str) -> str:
    q, _, k = prefix.partition("\x00")
    return f"{base}/v1/suggest?{urlencode({'q': q, 'k': k or '8'})}"


def attack(
    vegeta: str, urls: list[str], rate: int, seconds: float, headers: list[str], server: int | None = None
) -> dict[str, Any]:
    """One open-loop vegeta run over `urls` (round robin) at `rate` req/s; its JSON report plus CPU (the whole
    machine's, and the server process tree's when its pid is known)."""
    with tempfile.TemporaryDirectory() as tmp:
        targets = Path(tmp) / "targets"
        targets.write_text("".join(f"GET {u}\n" + "".join(f"{h}\n" for h in headers) + "\n" for u in urls))
        cmd = [vegeta, "attack", f"-targets={targets}", f"-rate={rate}/s", f"-duration={seconds}s", "-timeout=10s"]
        b0, t0 = busy_jiffies()
        s0 = tree_cpu_s(server)
        w0 = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True)
        if done.returncode != 0:
            raise SystemExit(f"vegeta failed ({done.returncode}): {done.stderr.decode(errors='replace')[-2000:]}")
        raw = done.stdout
        wall = time.perf_counter() - w0
        b1, t1 = busy_jiffies()
        s1 = tree_cpu_s(server)
        rep = json.loads(subprocess.run([vegeta, "report", "-type=json"], input=raw, capture_output=True).stdout)
    n = int(rep.get("requests") or 0)
    hz = os.sysconf("SC_CLK_TCK")
    lat = rep.get("latencies", {})
    return {
        "rate": rate,
        "requests": n,
        "p50_ms": round(lat.get("50th", 0) / 1e6, 2),
        "p99_ms": round(lat.get("99th", 0) / 1e6, 2),
        "success": round(float(rep.get("success", 0.0)), 4),
        "cpu_ms_per_request": round((b1 - b0) / hz * 1000 / max(n, 1), 2),
        "server_cpu_ms_per_request": round((s1 - s0) * 1000 / max(n, 1), 2) if server else None,
        "machine_busy": round((b1 - b0) / max(t1 - t0, 1), 3),
        "wall_s": round(wall, 1),
        "status_codes": rep.get("status_codes", {}),
    }


def wait_up(url: str, timeout_s: float) -> None:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(1)
    raise SystemExit(f"{url} did not come up within {timeout_s:.0f} s")


def start_servers(config: Path, serve_port: int, ks_port: int) -> list[subprocess.Popen[bytes]]:
    """`sift serve` and the keystroke server on `config` (their logs under bench/results/)."""
    logs = Path("bench/results")
    logs.mkdir(parents=True, exist_ok=True)
    py = sys.executable
    sift = str(Path(py).with_name("sift"))
    subprocess.run([sift, "suggest", "build", "--config", str(config)], check=True)
    procs = [
        subprocess.Popen(
            [sift, "serve", "--config", str(config), "--port", str(serve_port)],
            stdout=(logs / "suggest_load_serve.log").open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        ),
        subprocess.Popen(
            [py, "-m", "serving.keystroke", "--config", str(config), "--port", str(ks_port)],
            stdout=(logs / "suggest_load_keystroke.log").open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        ),
    ]
    return procs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--serve-url", help="Today's path (the Serve proxy); default: start one with --start.")
    ap.add_argument("--keystroke-url", help="The keystroke server; default: start one with --start.")
    ap.add_argument("--start", type=Path, help="AppConfig YAML: start both servers on it (ports 8000, 8001).")
    ap.add_argument("--data-dir", type=Path, default=Path(".data"), help="Where the corpus suggestions are.")
    ap.add_argument("--index", default=None, help="The served index (default: --start's default_index, else pydocs).")
    ap.add_argument("--rates", default="50,200,500")
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--paths", default="serve,keystroke")
    ap.add_argument("--api-key", default=os.environ.get("SIFT_API_KEY"), help="Sent as X-API-Key when set.")
    ap.add_argument("--vegeta", default=shutil.which("vegeta") or ".bin/vegeta", help="`make vegeta` builds it.")
    ap.add_argument("--out", type=Path, default=Path("bench/results/suggest_load.json"))
    ap.add_argument("--serve-pid", type=int, help="The Serve driver's pid (its process tree's CPU is counted).")
    ap.add_argument("--keystroke-pid", type=int, help="The keystroke server's pid.")
    ap.add_argument("--note", default="", help="Said in the report (e.g. 'loaded machine').")
    args = ap.parse_args()
    if not Path(args.vegeta).exists():
        raise SystemExit(f"no vegeta at {args.vegeta}: run `make vegeta`")
    if args.index is None:
        from serving.config import AppConfig

        args.index = AppConfig.load(args.start).search.default_index if args.start is not None else "pydocs"
    procs: list[subprocess.Popen[bytes]] = []
    if args.start is not None:
        procs = start_servers(args.start, 8000, 8001)
        args.serve_url = args.serve_url or "http://127.0.0.1:8000"
        args.keystroke_url = args.keystroke_url or "http://127.0.0.1:8001"
        args.serve_pid, args.keystroke_pid = procs[0].pid, procs[1].pid
    try:
        bases = {"serve": args.serve_url, "keystroke": args.keystroke_url}
        pids = {"serve": args.serve_pid, "keystroke": args.keystroke_pid}
        paths = [p for p in args.paths.split(",") if bases.get(p)]
        for p in paths:
            wait_up(f"{bases[p]}/healthz", 900)
        rates = [int(r) for r in args.rates.split(",")]
        warm = prefixes(QUERIES)
        need = sum(int(r * args.seconds) + 1 for r in rates) * len(paths)
        fresh = never_seen(args.data_dir, set(warm), need, args.index)
        headers = [f"X-API-Key: {args.api_key}"] if args.api_key else []
        rows = []
        for p in paths:
            for w in warm:  # each warm prefix asked once before
                req = urllib.request.Request(url_for(bases[p], w), headers=dict(h.split(": ", 1) for h in headers))
                urllib.request.urlopen(req, timeout=30).read()
        for rate in rates:
            for p in paths:
                for kind in ("warm", "never-seen"):
                    if kind == "warm":
                        urls = [url_for(bases[p], w) for w in warm]
                    else:
                        n = int(rate * args.seconds) + 1
                        urls, fresh = [url_for(bases[p], w) for w in fresh[:n]], fresh[n:]
                    got = attack(args.vegeta, urls, rate, args.seconds, headers, pids[p])
                    row = {"path": p, "prefixes": kind, **got}
                    print(json.dumps(row), flush=True)
                    rows.append(row)
                    time.sleep(2)  # let queues drain between runs
        report = {"seconds": args.seconds, "note": args.note, "cpus": os.cpu_count(), "runs": rows}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2))
        print(table(rows))
    finally:
        for proc in procs:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(60)


def table(rows: list[dict[str, Any]]) -> str:
    out = [
        "| path | prefixes | rate | p50 ms | p99 ms | success | CPU ms/request (machine) | (server) | machine busy |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        out.append(
            f"| {r['path']} | {r['prefixes']} | {r['rate']}/s | {r['p50_ms']} | {r['p99_ms']} | "
            f"{r['success'] * 100:.1f}% | {r['cpu_ms_per_request']} | {r['server_cpu_ms_per_request']} | "
            f"{r['machine_busy'] * 100:.0f}% |"
        )
    return "\n".join(out)


if __name__ == "__main__":
    main()
