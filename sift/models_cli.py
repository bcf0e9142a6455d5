"""`sift models list|promote|rollback`: the model registry's versions and its live pointers.

Promotion is gated: the candidate and the live version (or the baseline, when none is live) are scored on the same
evaluation in one command, the figures and the margin are printed, and the pointer moves only when the candidate
wins by the margin. Running servers follow the pointer; nothing else changes.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, Any

import typer

from sift.clicks_cli import ConfigOpt, _fail, read_logs
from sift.train_cli import IndexOpt, RegistryOpt, click_sessions, open_registry, open_store

models_app = typer.Typer(no_args_is_help=True, help="The model registry: list versions, promote (gated), roll back.")

SHOWN_METRICS = ("heldout_ndcg10", "heldout_ndcg10_base", "heldout_ndcg10_served", "heldout_ndcg10_ltr",
                 "heldout_ndcg10_fused", "rerank20_p50_ms", "examples", "rows")  # fmt: skip


def _kind(kind: str) -> str:
    from models.registry import KINDS

    if kind not in KINDS:
        raise _fail(f"unknown model kind {kind!r}; kinds: {', '.join(KINDS)}")
    return kind


@models_app.command("list")
def list_cmd(
    kind: Annotated[str | None, typer.Argument(help="encoder, reranker, ranker or lm (default: all).")] = None,
    registry: RegistryOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per kind, every metric.")] = False,
) -> None:
    """Every version of a kind, oldest first; `*` marks the live one."""
    from models.registry import KINDS, RegistryError

    reg = open_registry(registry)
    kinds = [_kind(kind)] if kind else list(KINDS)
    out: dict[str, Any] = {}
    try:
        for k in kinds:
            out[k] = {"live": reg.live(k), "versions": [c.model_dump() for c in reg.versions(k)]}
    except (RegistryError, ValueError) as exc:
        raise _fail(f"{reg.root}: {exc}", 1) from exc
    if as_json:
        typer.echo(json.dumps(out, default=str))
        return
    for k, entry in out.items():
        if kind is None and not entry["versions"]:
            continue
        typer.echo(f"{k} (live: {entry['live'] or 'none'})")
        for c in entry["versions"]:
            mark = "*" if c["version"] == entry["live"] else " "
            shown = " ".join(f"{m}={c['metrics'][m]:g}" for m in SHOWN_METRICS if m in c["metrics"])
            typer.echo(f"{mark} {c['version']}  {c['created']}  base={c['base_model']}  {shown}".rstrip())
        if not entry["versions"]:
            typer.echo("  (no versions)")
    if kind is None and not any(e["versions"] for e in out.values()):
        typer.echo(f"no models in {reg.root}")


def _neural_evaluation(
    kind: str, card: Any, config: Path | None, index: str | None, dataset: Path | None, split: str, depth: int
) -> tuple[Any, dict[str, Any]]:
    """The evaluation set (clicks' held-out train queries with the candidate's split, or a BEIR split) and its
    evaluator for an encoder or reranker."""
    from search.stores.base import IndexNotFound, StoreError
    from training.neural_data import (
        NeuralDataConfig,
        beir_eval_set,
        click_eval_set,
        describe,
        fit_click_model,
        fused_ranks,
        store_texts,
        with_texts,
    )
    from training.promotion import encoder_evaluator, reranker_evaluator

    data_cfg = NeuralDataConfig.model_validate(card.config.get("data", {}))
    imps, sessions = (None, None) if dataset else click_sessions(config, index)
    with open_store(config, index) as (store, target, app_cfg):
        try:
            if dataset is not None:
                evalset = beir_eval_set(dataset, split, store, target, depth)
            else:
                assert sessions is not None and imps is not None
                model = fit_click_model(sessions, data_cfg.click_model)
                evalset = click_eval_set(sessions, model, data_cfg, fused_ranks(imps))
            evalset = with_texts(evalset, store_texts(store, target, data_cfg.max_chars))
        except IndexNotFound as exc:
            raise _fail(f"index {target!r} does not exist in the {app_cfg.store} store: {exc}") from exc
        except (FileNotFoundError, ValueError) as exc:
            raise _fail(str(exc)) from exc
        except StoreError as exc:
            raise _fail(str(exc), 1) from exc
    if not evalset.queries:
        raise _fail(f"the evaluation set ({evalset.source}) has no query with a relevant candidate", 1)
    if kind == "encoder":
        evaluate = encoder_evaluator(evalset, app_cfg.embedder.model)
    else:
        evaluate = reranker_evaluator(evalset, app_cfg.reranker)
    return evaluate, describe(evalset)


def _ranker_evaluation(card: Any, config: Path | None, index: str | None) -> tuple[Any, dict[str, Any]]:
    from training.ltr import RankerTrainConfig
    from training.promotion import ranker_evaluator

    known = RankerTrainConfig.model_fields  # cards of older rankers may carry settings since retired
    cfg = RankerTrainConfig.model_validate({k: v for k, v in card.config.get("train", {}).items() if k in known})
    imps, sessions = click_sessions(config, index)
    try:
        return ranker_evaluator(imps, sessions, cfg)
    except ValueError as exc:
        raise _fail(str(exc), 1) from exc


def _lm_evaluation(card: Any, config: Path | None, index: str | None) -> tuple[Any, dict[str, Any]]:
    """Completions of prefixes of the held-out side of the candidate's own split of the click log."""
    from training.lm_data import LMDataConfig, split_queries
    from training.promotion import lm_evaluator

    if card.config.get("task", "suggest") != "suggest":
        raise _fail(f"lm {card.version} was trained for {card.config.get('task')!r}: the suggester serves suggest")
    data_cfg = LMDataConfig.model_validate(card.config.get("data", {}))
    imps, clicks = read_logs(config, index)
    logged, heldout = split_queries(imps, clicks, data_cfg)
    with open_store(config, index) as (_store, _target, app_cfg):
        serve = app_cfg.suggest.lm
    try:
        return lm_evaluator(heldout, logged, serve)
    except ValueError as exc:
        raise _fail(str(exc), 1) from exc


def _check_split(reg: Any, kind: str, card: Any) -> None:
    """Warn when the live version held out other queries: it may have trained on the candidate's evaluation."""
    live = reg.live(kind)
    if live is None or kind == "ranker":
        return
    mine, theirs = card.config.get("data", {}), reg.card(kind, live).config.get("data", {})
    keys = ("holdout", "split_seed")
    if any(mine.get(k) != theirs.get(k) for k in keys):
        typer.secho(
            f"warning: live {live} was trained with another held-out split; its figure may be optimistic",
            fg=typer.colors.YELLOW,
            err=True,
        )


# Rankers: the counterfactual gate's pass, recorded on the card by `sift train ranker`, is required by default.
IpsGateOpt = Annotated[
    bool,
    typer.Option(
        "--ips-gate/--no-ips-gate",
        help="Rankers: promote only a version whose card records a pass of the counterfactual gate "
        "(explored pages, inverse propensity weights; `sift train ranker`).",
    ),
]


@models_app.command("promote")
def promote_cmd(
    kind: Annotated[str, typer.Argument(help="encoder, reranker or ranker.")],
    version: Annotated[str, typer.Argument(help="The version to make live (see `sift models list`).")],
    margin: Annotated[
        float, typer.Option("--margin", help="nDCG@10 the candidate must gain over the live one.")
    ] = 0.005,
    dataset: Annotated[
        Path | None, typer.Option("--dataset", help="Evaluate on a BEIR folder's judgments instead of clicks.")
    ] = None,
    split: Annotated[
        str,
        typer.Option(
            "--split",
            help="With --dataset: the qrels split; `validation` is qrels/validation.tsv or qrels/dev.tsv; `test` "
            "needs --allow-test.",
        ),
    ] = "validation",
    allow_test: Annotated[
        bool, typer.Option("--allow-test", help="Let --split test decide a promotion (choose nothing on test).")
    ] = False,
    ips_gate: IpsGateOpt = True,
    depth: Annotated[int, typer.Option("--depth", min=2, max=1000, help="With --dataset: BM25 candidates.")] = 20,
    config: ConfigOpt = None,
    index: IndexOpt = None,
    registry: RegistryOpt = None,
) -> None:
    """Score the candidate and the live version (or the baseline when none is live) on one evaluation set
    and make the candidate live only if it wins by --margin; otherwise say why, change nothing, exit 1."""
    from models.registry import RegistryError

    reg = open_registry(registry)
    _kind(kind)
    if dataset is not None and kind in ("ranker", "lm"):
        raise _fail("--dataset is for encoders and rerankers: rankers and LMs are judged on the click log")
    if dataset is not None:
        from training.gate_report import promotion_split

        try:
            split = promotion_split(dataset, split, allow_test)
        except ValueError as exc:
            raise _fail(str(exc)) from exc
    try:
        card = reg.card(kind, version)
        _check_split(reg, kind, card)
    except RegistryError as exc:
        raise _fail(str(exc)) from exc
    metric = "ndcg@10"
    if kind == "ranker" and ips_gate and card.metrics.get("ips_passed") != 1.0:
        raise _fail(
            f"not promoted: ranker {version} has no pass of the counterfactual gate on record (trained with "
            "--no-ips-gate, or before the gate existed; retrain, or --no-ips-gate to decide on held-out clicks only)",
            1,
        )
    if kind == "ranker":
        evaluate, described = _ranker_evaluation(card, config, index)
    elif kind == "lm":
        evaluate, described = _lm_evaluation(card, config, index)
        metric = "partial_mrr@10"
    else:
        evaluate, described = _neural_evaluation(kind, card, config, index, dataset, split, depth)
    try:
        result = reg.promote(kind, version, evaluate, margin, metric=metric)
    except (RegistryError, ValueError, OSError) as exc:
        raise _fail(f"evaluation failed, nothing changed: {exc}", 1) from exc
    report = {
        "kind": kind, "version": version, "promoted": result.promoted, "live_before": result.live,
        "metric": result.metric, "candidate": _round(result.candidate_score), "live_score": _round(result.live_score),
        "margin": margin, "gain": _round(result.candidate_score - result.live_score), "evaluation": described,
        "reason": result.reason,
    }  # fmt: skip
    typer.echo(json.dumps(report))
    if result.promoted:
        typer.echo(f"{kind} {version} is live: {result.reason}", err=True)
    elif result.reason == "already live":
        typer.echo(f"{kind} {version} is already live; nothing changed", err=True)
    else:
        raise _fail(f"not promoted: {result.reason}", 1)


def _round(v: float) -> float | None:
    return None if math.isnan(v) else round(v, 4)


@models_app.command("rollback")
def rollback_cmd(
    kind: Annotated[str, typer.Argument(help="encoder, reranker, ranker or lm.")],
    registry: RegistryOpt = None,
) -> None:
    """Make the previous live version live again (none before it: no model of this kind)."""
    from models.registry import RegistryError

    reg = open_registry(registry)
    _kind(kind)
    before = reg.live(kind)
    try:
        now = reg.rollback(kind)
    except RegistryError as exc:
        raise _fail(str(exc), 1) from exc
    typer.echo(json.dumps({"kind": kind, "live": now, "was": before}))
