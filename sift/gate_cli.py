"""The counterfactual gate as `sift train ranker` runs it (training.gate): options and glue, kept apart so the
train command only calls one function."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from sift.clicks_cli import _app_config, _fail, read_logs

IpsGateOpt = Annotated[
    bool,
    typer.Option(
        "--ips-gate/--no-ips-gate",
        help="Also judge the ranker on explored pages only, with inverse propensity weights (its out-of-fold "
        "scores against the live order): refused unless it gains clicks there with a bootstrap bound above 0.",
    ),
]
IpsMinPagesOpt = Annotated[
    int, typer.Option("--ips-min-pages", min=1, help="Explored pages where it changes the order needed to decide.")
]


def ips_gate_or_fail(
    data: Any, imps: list[Any], config: Path | None, index: str | None, min_pages: int, seed: int
) -> dict[str, float]:
    """Run the gate on the ranker's out-of-fold scores; its metrics for the card, or exit 1 with its reason."""
    from training.gate import GateConfig, ips_gate

    if data.oof is None:
        raise _fail("internal: the ranker's out-of-fold scores are missing", 1)
    scores = {(q, d): float(s) for q, d, s in zip(data.queries, data.docs, data.oof, strict=True)}
    top_k = _app_config(config).search.exploration.top_k
    _, clicks = read_logs(config, index)
    result = ips_gate(imps, clicks, scores, GateConfig(top_k=top_k, min_pages=min_pages, seed=seed), index=index)
    typer.echo(json.dumps({"ips_gate": result.model_dump()}))
    if not result.passed:
        raise _fail(f"not written: counterfactual gate: {result.reason} (--no-ips-gate to skip it)", 1)
    return result.metrics()
