"""`sift train ranker`: a LambdaMART ranker from the click log (issue: learning to rank from clicks)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from sift.clicks_cli import ConfigOpt, _fail, read_logs

train_app = typer.Typer(no_args_is_help=True, help="Train models from the logs.")


@train_app.command("ranker")
def ranker_cmd(
    out: Annotated[Path, typer.Option("--out", help="Model folder to write (model.txt, meta.json).")],
    config: ConfigOpt = None,
    index: Annotated[str | None, typer.Option("--index", help="Only this index's searches.")] = None,
    click_model: Annotated[str, typer.Option("--click-model", help="pbm or dbn: who labels the rows.")] = "pbm",
    seed: Annotated[int, typer.Option("--seed", help="Seeds the held-out split and LightGBM.")] = 0,
    min_gain: Annotated[
        float, typer.Option("--min-gain", help="Write only if held-out nDCG@10 beats the served order by this.")
    ] = 0.005,
) -> None:
    """Fit LightGBM lambdarank on served features labelled by a click model; print held-out nDCG@10 of the
    learnt order against the fused order (both on held-out *train* queries)."""
    from training.click_logs import sessions_from_logs
    from training.ltr import RankerTrainConfig, gain, passes_gate, ranker_data, train_ranker

    if click_model not in ("pbm", "dbn"):
        raise _fail(f"--click-model must be pbm or dbn, not {click_model!r}")
    if out.exists() and any(out.iterdir()):
        raise _fail(f"{out} exists and is not empty: a model folder is written once")
    cfg = RankerTrainConfig(click_model=click_model, seed=seed, min_gain=min_gain)  # type: ignore[arg-type]
    imps, clicks = read_logs(config, index)
    sessions = sessions_from_logs(imps, clicks, index=index)
    if len(sessions) < 10:
        raise _fail(f"only {len(sessions)} search impression(s) in the logs: nothing to learn from", 1)
    try:
        data, _ = ranker_data(imps, sessions, cfg)
        booster, meta = train_ranker(data, cfg)
    except ValueError as exc:
        raise _fail(str(exc), 1) from exc
    from ranking.ltr import save_ranker

    typer.echo(json.dumps({"version": meta.version, **meta.metrics}))
    if not passes_gate(meta, cfg):
        raise _fail(
            f"not written: on held-out train queries the learnt order gains {gain(meta):+.4f} nDCG@10 over the "
            f"served order, below the {cfg.min_gain} margin (more clicks, or --min-gain)",
            1,
        )
    save_ranker(booster, meta, out)
    typer.echo(f"wrote {out}; serve it with `ranker: {{model: {out}}}` in the app YAML", err=True)
