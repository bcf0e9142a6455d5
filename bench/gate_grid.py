"""No harmful promotion: the issue-33 grid of click profiles, each cell through the CLI, one command.

    .venv/bin/python bench/gate_grid.py [--dataset ../shared/datasets/scifact] [--cells regression,realistic|all]
                                        [--work DIR] [--seed 0]

Cells: the ideal profile (pbm users, eta 0.8, whole-top-10 shuffles on `rate` of first pages) at exploration
rate 0.02 / 0.1 / 1.0 x attractiveness (0.05, 0.9) / (0.2, 0.7) x 5k / 20k sessions, plus the realistic profile
(adjacent swaps on 10% of first pages; docs/notes/click-profiles.md) at 5k sessions with eta 1.0 and with a
stronger position bias, eta 1.5. `regression` is the issue's case (ideal, rate 0.1, (0.2, 0.7), 5k), `realistic`
the realistic 5k cell; names like `ideal-r0.1-a0.2-0.7-s5000` pick single cells.

Each cell, on SciFact train clicks only:
1. `sift clicks simulate --split train` into the cell's own query and click logs (the corpus is indexed once,
   hybrid-linear, embedded store, shared by every cell; simulated searches repeat queries, so the in-process
   service's query encoder is memoised: the one change from the plain CLI);
2. `sift train ranker --min-gain -100 --confidence 0 --out ...` (the old click-model gate's decision is read from
   the out-of-fold figures it prints, with its defaults 0.005 and 0.9; the counterfactual gate, training.gate,
   decides whether the folder is written); a refused ranker is trained again with `--no-ips-gate` so its test
   figure can be shown;
3. `sift eval --split test --systems hybrid-linear,hybrid-linear+ltr --twins-config <cell app.yaml>`: nDCG@10 on
   all test queries, on those with a near-twin among the cell's searched train queries (word-set Jaccard >= 0.5)
   and on the rest. What the gates let through is what serves: hybrid-linear when either refuses.
Nothing is chosen on test: the gates read only the train clicks; test is scored after the decisions.
Writes <work>/grid.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import yaml  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

INDEX = "eval-scifact"
OLD_MIN_GAIN, OLD_CONFIDENCE = 0.005, 0.9  # training.ltr.RankerTrainConfig defaults: the old gate


def cells() -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for sessions in (5000, 20000):
        for rate in (0.02, 0.1, 1.0):
            for attr in ("0.05,0.9", "0.2,0.7"):
                out[f"ideal-r{rate}-a{attr.replace(',', '-')}-s{sessions}"] = {
                    "profile": "ideal", "rate": rate, "attractiveness": attr, "sessions": sessions,
                }  # fmt: skip
    out["realistic-s5000"] = {"profile": "realistic", "sessions": 5000}
    out["realistic-eta1.5-s5000"] = {"profile": "realistic", "sessions": 5000, "eta": 1.5}
    return out


ALIASES = {"regression": "ideal-r0.1-a0.2-0.7-s5000", "realistic": "realistic-s5000"}


def memoise_query_encoder() -> None:
    """Every in-process service built after this encodes each distinct query text once per process."""
    import serving.local as local
    from search import wiring

    memo: dict[str, list[float]] = {}
    plain = wiring.thread_encoder

    def thread_encoder(embedder: Any) -> Any:
        encode = plain(embedder)

        async def cached(q: str) -> list[float]:
            if q not in memo:
                memo[q] = list(await encode(q))
            return memo[q]

        return cached

    local.thread_encoder = thread_encoder  # type: ignore[attr-defined]


def cli(*args: str) -> tuple[int, str]:
    from sift.cli import app

    res = CliRunner().invoke(app, list(args))
    if res.exception and not isinstance(res.exception, SystemExit):
        raise res.exception
    return res.exit_code, res.output


def json_lines(output: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


def app_yaml(base: Path, cell_dir: Path, cell: dict[str, Any]) -> Path:
    exploration = (
        {"rate": 0.1, "top_k": 10, "mode": "adjacent_swap"}
        if cell["profile"] == "realistic"
        else {"rate": cell["rate"], "top_k": 10, "mode": "shuffle"}
    )
    cfg = {
        "data_dir": str(base),
        "store": "embedded",
        "search": {
            "default_index": INDEX,
            "retrieval": {"mode": "hybrid", "fusion": "linear"},
            "exploration": exploration,
            "log_features": True,
        },
        "query_log": {"directory": str(cell_dir / "querylog")},
        "click_log": {"directory": str(cell_dir / "clicklog")},
        "reranker": {"model": None},
        "suggest": {"enabled": False},
        "summarizer": None,
    }
    path = cell_dir / "app.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def run_cell(name: str, cell: dict[str, Any], dataset: Path, base: Path, work: Path, seed: int) -> dict[str, Any]:
    cell_dir = work / name
    cell_dir.mkdir(parents=True, exist_ok=True)
    cfg = app_yaml(base, cell_dir, cell)
    row: dict[str, Any] = {"cell": name, **cell}
    t = time.perf_counter()
    if not (cell_dir / ".simulated").exists():
        sim = ["clicks", "simulate", "--dataset", str(dataset), "--split", "train", "--sessions", str(cell["sessions"]),
               "--seed", str(seed), "--config", str(cfg), "--profile", cell["profile"]]  # fmt: skip
        if cell["profile"] == "ideal":
            sim += ["--attractiveness", cell["attractiveness"]]
        if "eta" in cell:
            sim += ["--eta", str(cell["eta"])]
        code, out = cli(*sim)
        if code:
            raise RuntimeError(f"{name}: simulate failed: {out[-2000:]}")
        (cell_dir / ".simulated").write_text(out)
    row["simulate_s"] = round(time.perf_counter() - t, 1)
    t = time.perf_counter()
    gated, ungated = cell_dir / "ranker", cell_dir / "ranker-ungated"
    train = ["train", "ranker", "--config", str(cfg), "--seed", str(seed), "--min-gain", "-100", "--confidence", "0"]
    if not gated.exists() and not (cell_dir / ".refused").exists():
        code, out = cli(*train, "--out", str(gated))
        (cell_dir / ("train.out" if code == 0 else ".refused")).write_text(out)
    out = (cell_dir / ("train.out" if gated.exists() else ".refused")).read_text()
    lines = json_lines(out)
    metrics = next(x for x in lines if "heldout_ndcg10_ltr" in x)
    ips = next((x["ips_gate"] for x in lines if "ips_gate" in x), None)
    oof = metrics["heldout_ndcg10_ltr"] - metrics["heldout_ndcg10_fused"]
    row["oof_gain"], row["oof_lcb"] = round(oof, 4), metrics["heldout_gain_lcb"]
    row["old_gate"] = oof >= OLD_MIN_GAIN and metrics["heldout_gain_lcb"] > 0
    row["ips_gate"] = gated.exists()
    row["ips"] = ips
    if not gated.exists() and not ungated.exists():
        code, out = cli(*train, "--no-ips-gate", "--out", str(ungated))
        if code:
            raise RuntimeError(f"{name}: ungated training failed: {out[-2000:]}")
    row["train_s"] = round(time.perf_counter() - t, 1)
    t = time.perf_counter()
    ranker = gated if gated.exists() else ungated
    ev = cell_dir / "eval"
    if not (ev / "twins.json").exists():
        os.environ["SIFT_DATA_DIR"] = str(base)
        code, out = cli("eval", "--dataset", str(dataset), "--store", "embedded", "--reuse-index", "--index", INDEX,
                        "--systems", "hybrid-linear,hybrid-linear+ltr", "--ranker", str(ranker), "--split", "test",
                        "--twins-config", str(cfg), "--out", str(ev), "--quiet")  # fmt: skip
        if code:
            raise RuntimeError(f"{name}: eval failed: {out[-2000:]}")
    twins = json.loads((ev / "twins.json").read_text())
    ltr = twins["systems"]["hybrid-linear+ltr"]
    row["eval_s"] = round(time.perf_counter() - t, 1)
    row["hybrid_linear"] = ltr["all"]["baseline_ndcg10"]
    row["ranker"] = {k: ltr[k]["ndcg10"] for k in ("all", "twin", "no-twin")}
    row["ranker_delta"] = {k: ltr[k]["delta"] for k in ("all", "twin", "no-twin")}
    row["ranker_wtl"] = {k: [ltr[k]["wins"], ltr[k]["ties"], ltr[k]["losses"]] for k in ("all", "twin", "no-twin")}
    row["twins"], row["no_twins"] = twins["twins"], twins["no_twins"]
    served = row["old_gate"] and row["ips_gate"]
    row["served_delta"] = row["ranker_delta"]["all"] if served else 0.0
    row["harmful_promotion"] = served and row["ranker_delta"]["all"] < -0.005
    return row


def table(rows: list[dict[str, Any]]) -> str:
    out = [
        "| cell | old gate (oof gain, lcb) | IPS gate (gain/page, lcb, judged pages) | served | hybrid-linear | "
        "ranker all / twin / no-twin (Δ) |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        ips = r["ips"] or {}
        ips_txt = (
            f"{'pass' if r['ips_gate'] else 'refuse'} ({ips.get('gain', float('nan')):+.4f}, "
            f"{ips.get('lcb', float('nan')):+.4f}, {ips.get('judged_pages', 0)})"
        )
        d = r["ranker_delta"]
        served = "ranker" if r["old_gate"] and r["ips_gate"] else "hybrid-linear"
        out.append(
            f"| {r['cell']} | {'pass' if r['old_gate'] else 'refuse'} ({r['oof_gain']:+.4f}, {r['oof_lcb']:+.4f}) | "
            f"{ips_txt} | {served} | {r['hybrid_linear']:.4f} | {r['ranker']['all']:.4f} ({d['all']:+.4f}) / "
            f"{r['ranker']['twin']:.4f} ({d['twin']:+.4f}) / {r['ranker']['no-twin']:.4f} ({d['no-twin']:+.4f}) |"
        )
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", type=Path, default=REPO.parent / "shared" / "datasets" / "scifact")
    ap.add_argument("--cells", default="all", help="all, or comma-separated cell names / regression / realistic.")
    ap.add_argument("--work", type=Path, default=REPO / ".data" / "gate-grid")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    grid = cells()
    names = list(grid) if args.cells == "all" else [ALIASES.get(c, c) for c in args.cells.split(",")]
    unknown = [n for n in names if n not in grid]
    if unknown:
        ap.error(f"unknown cell(s) {unknown}: {', '.join([*ALIASES, *grid])}")
    memoise_query_encoder()
    work = args.work.resolve()
    base = work / "base"
    base.mkdir(parents=True, exist_ok=True)
    print(f"{args.dataset.name}: cells {names}; load average {os.getloadavg()[0]:.2f}; work {work}", flush=True)
    if not (base / ".indexed").exists():
        os.environ["SIFT_DATA_DIR"] = str(base)
        code, out = cli("eval", "--dataset", str(args.dataset), "--store", "embedded", "--index", INDEX, "--systems",
                        "hybrid-linear", "--split", "test", "--out", str(base / "eval"), "--quiet")  # fmt: skip
        if code:
            raise SystemExit(f"indexing failed: {out[-2000:]}")
        (base / ".indexed").touch()
    rows: list[dict[str, Any]] = []
    earlier = json.loads((work / "grid.json").read_text()) if (work / "grid.json").exists() else []
    for name in names:
        t = time.perf_counter()
        rows.append(run_cell(name, grid[name], args.dataset.resolve(), base, work, args.seed))
        print(f"{name}: {time.perf_counter() - t:.0f} s  {json.dumps(rows[-1])}", flush=True)
        kept = [r for r in earlier if r["cell"] not in {x["cell"] for x in rows}]  # other runs' cells stay
        (work / "grid.json").write_text(json.dumps(kept + rows, indent=1))
    print("\n" + table(rows))


if __name__ == "__main__":
    main()
