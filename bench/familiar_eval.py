"""Re-evaluate a gate-grid cell's ranker with the familiar-only rule (issue 33): the ranker re-orders a test
query only when the query has word-set Jaccard >= 0.5 with a query the ranker learnt from; others keep
hybrid-linear's order.

    .venv/bin/python bench/familiar_eval.py .data/gate-grid-L2/ideal-r0.1-a0.05-0.9-s5000

Rankers in the grid were trained before their queries were saved with them, so this rebuilds the same training
rows from the cell's logs (`training.ltr.ranker_data`, what `sift train ranker` fits on; no refit), writes a copy
of the ranker with those queries' word sets as `<cell>/ranker-familiar`, and runs the grid's `sift eval`
(hybrid-linear vs hybrid-linear+ltr on SciFact test, with the twin split) into `<cell>/eval-familiar`. The
threshold is the issue's own twin rule, fixed before any test figure was read. Prints the twin report's rows.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from gate_grid import INDEX, cli, memoise_query_encoder  # noqa: E402

from ranking.familiar import familiar_sets  # noqa: E402
from ranking.ltr import load_meta  # noqa: E402
from sift.cli_common import load_sessions  # noqa: E402
from sift.logs_cli import with_replayed_features  # noqa: E402
from training.ltr import RankerTrainConfig, ranker_data  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("cell", type=Path, help="A gate-grid cell folder (app.yaml, logs, ranker/).")
    ap.add_argument("--dataset", type=Path, default=REPO.parent / "shared" / "datasets" / "scifact")
    args = ap.parse_args()
    cfg, src, out = args.cell / "app.yaml", args.cell / "ranker", args.cell / "ranker-familiar"
    t = time.perf_counter()
    imps, sessions = load_sessions(cfg, None)
    data, _ = ranker_data(with_replayed_features(imps, cfg, None), sessions, RankerTrainConfig())
    meta = load_meta(src)
    sets = familiar_sets(data.queries)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir()
    shutil.copy(src / "model.txt", out / "model.txt")
    (out / "meta.json").write_text(meta.model_copy(update={"familiar": sets}).model_dump_json(indent=2))
    memoise_query_encoder()
    ev = args.cell / "eval-familiar"
    code, text = cli("eval", "--dataset", str(args.dataset), "--store", "embedded", "--reuse-index", "--index", INDEX,
                     "--systems", "hybrid-linear,hybrid-linear+ltr", "--ranker", str(out), "--split", "test",
                     "--twins-config", str(cfg), "--out", str(ev), "--quiet")  # fmt: skip
    if code:
        raise SystemExit(f"eval failed: {text[-2000:]}")
    twins = json.loads((ev / "twins.json").read_text())
    ltr = twins["systems"]["hybrid-linear+ltr"]
    print(json.dumps({
        "cell": args.cell.name, "familiar_sets": len(sets), "twins": twins["twins"], "no_twins": twins["no_twins"],
        "hybrid_linear": ltr["all"]["baseline_ndcg10"],
        **{k: {"ndcg10": v["ndcg10"], "delta": v["delta"], "wtl": [v["wins"], v["ties"], v["losses"]]}
           for k, v in ltr.items()},
        "seconds": round(time.perf_counter() - t, 1),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
