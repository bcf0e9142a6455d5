"""The counterfactual gate's verdict split by train queries with and without a near-twin among the *other*
searched train queries (word-set Jaccard >= 0.5, training.gate_report's rule), from one gate-grid cell's logs.

    .venv/bin/python bench/gate_twin_split.py .data/gate-grid/<cell>/app.yaml

Why: the gate judges a candidate on the queries the log randomized; a ranker can win there and lose on queries
unlike any logged one (docs/notes/gate-grid.md, exploration 0.1). The no-twin share is the log's own stand-in
for those, read from train clicks only (the ranker refit as `sift train ranker` fits it, out-of-fold scores).
Prints one JSON line: pages, gain and bound on all / twin / no-twin train queries.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from search.text import normalize_query  # noqa: E402
from sift.cli_common import _app_config, load_sessions, read_logs  # noqa: E402
from sift.logs_cli import with_replayed_features  # noqa: E402
from training.gate import GateConfig, ips_gate  # noqa: E402
from training.gate_report import TWIN_JACCARD, jaccard, words  # noqa: E402
from training.jobs import fit_ranker  # noqa: E402
from training.ltr import RankerTrainConfig  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config", type=Path, help="The cell's app.yaml (its query and click logs).")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    imps, sessions = load_sessions(args.config, None)
    imps = with_replayed_features(imps, args.config, None)
    fit = fit_ranker(imps, sessions, RankerTrainConfig(seed=args.seed, min_gain=-100, confidence=0))
    data = fit.data
    assert data.oof is not None
    scores = {(q, d): float(s) for q, d, s in zip(data.queries, data.docs, data.oof, strict=True)}
    _, clicks = read_logs(args.config, None)
    texts = sorted({normalize_query(i.query) for i in imps if i.type == "search"})
    ws = {t: words(t) for t in texts}
    postings: dict[str, set[str]] = defaultdict(set)
    for t, w in ws.items():
        for x in w:
            postings[x].add(t)
    twin = {
        t for t in texts if any(jaccard(ws[t], ws[o]) >= TWIN_JACCARD for x in ws[t] for o in postings[x] if o != t)
    }
    cfg = GateConfig(top_k=_app_config(args.config).search.exploration.top_k, seed=args.seed)
    out: dict[str, object] = {"queries": len(texts), "twin_queries": len(twin)}
    for name, keep in (("all", None), ("twin", True), ("no-twin", False)):
        sub = [i for i in imps if keep is None or (normalize_query(i.query) in twin) == keep]
        r = ips_gate(sub, list(clicks), scores, cfg)
        out[name] = {"passed": r.passed, "gain": round(r.gain, 4), "lcb": round(r.lcb, 4), "pages": r.explored_pages}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
