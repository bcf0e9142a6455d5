"""`sift eval`'s twin / no-twin report (training.gate_report): which training log the test queries are compared
with, and where the report goes (printed, and twins.json / twins.md beside results.json)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer


def _training_queries(
    dataset: Path, split: str, twins_config: Path | None, twins_split: str | None
) -> tuple[list[str], str] | None:
    """The training log's queries and a label saying where they came from; None: no log to compare with."""
    from training.beir import load_beir

    if twins_config is not None:
        from sift.clicks_cli import read_logs

        imps, _ = read_logs(twins_config)
        return [e.query for e in imps if e.type == "search"], f"the query log of {twins_config}"
    name = twins_split or ("train" if split != "train" and (dataset / "qrels" / "train.tsv").is_file() else None)
    if name is None:
        return None
    if name == split:
        raise ValueError(f"--twins-split {name} is the evaluated split itself: every query would be its own twin")
    return list(load_beir(dataset, name).queries.values()), f"the {name} split's queries"


def twin_section(
    result: Any,
    dataset: Path,
    split: str,
    qrels: Path | None,
    baseline: str | None,
    twins_config: Path | None,
    twins_split: str | None,
    out_dir: Path,
) -> None:
    """Print and write the report; say why when there is none (no training log, the baseline not run)."""
    from training.beir import load_beir
    from training.gate_report import markdown, twin_report

    ok = {s.name: s.per_query.get("ndcg@10", {}) for s in result.systems if s.status == "ok"}
    base = baseline or ("hybrid-linear" if "hybrid-linear" in ok else next(iter(ok), None))
    try:
        training = _training_queries(dataset, split, twins_config, twins_split)
        if training is None:
            typer.echo("\nno twin report: no training log (--twins-config or --twins-split)")
            return
        if base is None or base not in ok:
            raise ValueError(f"--baseline {base!r} was not evaluated (systems run: {', '.join(ok) or 'none'})")
        queries = load_beir(dataset, split, qrels).queries
        report = twin_report(ok, base, queries, training[0], training[1])
    except (FileNotFoundError, ValueError) as exc:
        typer.secho(f"error: twin report: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from exc
    table = markdown(report)
    (out_dir / "twins.json").write_text(report.model_dump_json(indent=1) + "\n")
    (out_dir / "twins.md").write_text(table + "\n")
    typer.echo("\n" + table)
    typer.echo(f"wrote {out_dir / 'twins.json'}, {out_dir / 'twins.md'}")
