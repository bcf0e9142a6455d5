"""`sift eval-suggest`: do suggestions help people find things? (registered in sift/cli.py by the lead)

The command only: the measurement (setup, systems, metrics) is `training.suggest_eval`.
"""

from __future__ import annotations

import json
import logging
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from search.settings import Settings
from search.suggest.lm_completer import LMCompleterConfig
from search.suggest.schemas import CoverageOf, SuggestConfig


class CoverageChoice(StrEnum):
    """`suggest.term_coverage_of`'s values, for typer to validate."""

    candidate = "candidate"
    added = "added"


def eval_suggest_cmd(
    dataset: Annotated[
        Path, typer.Option("--dataset", help="BEIR SciFact folder (queries_train.jsonl, queries.jsonl, qrels/).")
    ] = Path("../shared/datasets/scifact"),
    model: Annotated[str | None, typer.Option("--model", help="Causal LM: HF id or path (default SmolLM2).")] = None,
    no_lm: Annotated[bool, typer.Option("--no-lm", help="Prefix index only (fast).")] = False,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="Only the first N judged test queries.")] = None,
    batch: Annotated[int, typer.Option("--batch", min=1, max=64, help="Prefixes per LM generate call.")] = 8,
    index: Annotated[str, typer.Option("--index", help="Embedded BM25 index to build/reuse.")] = "scifact-suggest",
    rebuild: Annotated[bool, typer.Option("--rebuild", help="Rebuild the index even if it exists.")] = False,
    out: Annotated[Path | None, typer.Option("--out", help="Also write the JSON report here.")] = None,
    threads: Annotated[int, typer.Option("--threads", min=1, help="Torch CPU threads for the LM.")] = 1,
    term_coverage: Annotated[
        float, typer.Option("--term-coverage", min=0.0, max=1.0, help="LM result check strictness (see config).")
    ] = 1.0,
    term_coverage_of: Annotated[
        CoverageChoice,
        typer.Option("--term-coverage-of", help="Words the check counts: `candidate` (all) or `added` (the LM's)."),
    ] = CoverageChoice(SuggestConfig.model_fields["term_coverage_of"].default),
    min_shared: Annotated[
        int,
        typer.Option("--min-shared-results", min=0, max=10, help="LM drift guard (suggest.lm_min_shared_results)."),
    ] = SuggestConfig.model_fields["lm_min_shared_results"].default,
    qac: Annotated[
        int, typer.Option("--qac", min=0, max=10, help="Also QAC MRR@10 etc. on N random prefixes per query (0: off).")
    ] = 0,
    verbose: Annotated[bool, typer.Option("--verbose/--quiet", help="Log progress.")] = True,
) -> None:
    """Suggestion quality on SciFact: coverage and nDCG@10 of the top suggestion vs the bare prefix; with --qac,
    QAC MRR@10, partial-match MRR@10 and success@5 on seen and unseen prefixes (near-twins left out)."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("httpx", "sift.indexing"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    coverage_of: CoverageOf = "added" if term_coverage_of is CoverageChoice.added else "candidate"
    if not (dataset / "queries_train.jsonl").exists():
        typer.secho(f"error: {dataset} has no queries_train.jsonl", fg=typer.colors.RED, err=True)
        raise typer.Exit(2)
    from models.device import limit_threads
    from training.suggest_eval import markdown, run_eval_suggest

    limit_threads(threads)  # on a shared CPU, more threads than cores only slows generation down
    data_dir = Settings().data_dir / "eval-suggest"
    lm_cfg = LMCompleterConfig(enabled=not no_lm)
    if model:
        lm_cfg = lm_cfg.model_copy(update={"lm": lm_cfg.lm.model_copy(update={"model": model})})
    report = run_eval_suggest(
        dataset,
        data_dir,
        lm_cfg,
        index=index,
        limit=limit,
        batch=batch,
        rebuild=rebuild,
        lm_cache=data_dir / "lm-completions.json",
        min_term_coverage=term_coverage,
        coverage_of=coverage_of,
        min_shared=min_shared,
    )
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2))
    typer.echo(markdown(report))
    typer.echo(json.dumps(report["examples"][:6], indent=2))
    if qac:
        from training.qac_eval import qac_markdown
        from training.suggest_eval import run_qac

        result = run_qac(dataset, data_dir, lm_cfg, index=index, cuts=qac, batch=batch,
                         lm_cache=data_dir / "qac-completions.json", min_term_coverage=term_coverage,
                         coverage_of=coverage_of, min_shared=min_shared)  # fmt: skip
        typer.echo(f"\nQAC: {result['prefixes']} prefixes ({result['seen']} seen) of {result['held_out_queries']} "
                   f"test queries; {result['near_twins']} near-twins of a train query left out")  # fmt: skip
        typer.echo(qac_markdown(result["table"]))
        if out:
            out.write_text(json.dumps({**report, "qac": result}, indent=2))
