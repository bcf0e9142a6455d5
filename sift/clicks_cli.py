"""`sift clicks simulate|fit|judgments`: simulated users through the API, click models fitted on the logs,
and click-derived judgments in BEIR layout."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from sift.cli_common import ConfigOpt, _app_config, _fail, load_sessions, read_logs

__all__ = ["ConfigOpt", "_app_config", "_fail", "clicks_app", "read_logs"]  # the shared names other modules import

clicks_app = typer.Typer(no_args_is_help=True, help="Click logs: simulate users, fit click models, judgments.")

ModelName = Literal["ctr", "pbm", "dbn"]


def _floats(text: str, name: str) -> tuple[float, ...]:
    try:
        values = tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError as exc:
        raise _fail(f"{name} takes comma-separated numbers, not {text!r}") from exc
    if not values:
        raise _fail(f"{name} is empty")
    return values


@clicks_app.command("simulate")
def simulate_cmd(
    dataset: Annotated[Path, typer.Option("--dataset", help="BEIR folder: queries.jsonl and qrels/<split>.tsv.")],
    sessions: Annotated[int, typer.Option("--sessions", min=1, help="Searches to simulate.")],
    model: Annotated[str, typer.Option("--model", help="User behaviour: pbm, cascade or dbn.")] = "pbm",
    split: Annotated[str, typer.Option("--split", help="Only this split's qrels are read.")] = "train",
    seed: Annotated[int, typer.Option("--seed", help="Same seed, same sessions and event ids.")] = 0,
    api: Annotated[str | None, typer.Option("--api", help="API base URL; default: the service in-process.")] = None,
    config: ConfigOpt = None,
    index: Annotated[str | None, typer.Option("--index", help="Index searched (default: the server's).")] = None,
    profile: Annotated[
        str,
        typer.Option(
            "--profile",
            help="ideal: uniform queries, clicks from the qrels (--model, --attractiveness...); realistic: Zipf "
            "queries, 10% adjacent-swap exploration, snippet attractiveness, trust bias, noise, abandonment "
            "(docs/notes/click-profiles.md).",
        ),
    ] = "ideal",
    eta: Annotated[
        float | None,
        typer.Option("--eta", min=0.0, help="P(examine rank r) = 1/r^eta (ideal pbm: 0.8, realistic: 1.0)."),
    ] = None,
    attractiveness: Annotated[str, typer.Option("--attractiveness", help="P(click|examined) per grade.")] = "0.05,0.9",
    satisfaction: Annotated[str, typer.Option("--satisfaction", help="dbn: P(stop|click) per grade.")] = "0.2,0.7",
    gamma: Annotated[float, typer.Option("--gamma", help="dbn: P(continue).")] = 0.9,
    zipf_exponent: Annotated[
        float | None, typer.Option("--zipf-exponent", min=0.0, max=3.0, help="realistic: query frequency law (1.0).")
    ] = None,
    exploration_rate: Annotated[
        float | None,
        typer.Option("--exploration-rate", min=0.0, max=1.0, help="realistic: share of first pages swapped (0.1)."),
    ] = None,
    concurrency: Annotated[int, typer.Option("--concurrency", min=1, max=64, help="Sessions in flight.")] = 4,
) -> None:
    """Search a split's queries and click as a simulated user; impressions and clicks land in the logs.

    The realistic profile sets the in-process service's exploration to its own (adjacent swaps); a server
    reached with --api explores as its config says (`search.exploration`)."""
    from training.beir import load_beir
    from training.click_simulator import HttpClient, InProcessClient, SimulatorConfig, simulate

    _check_choices(profile, model)
    try:
        data = load_beir(dataset, split)
        cfg = SimulatorConfig(
            sessions=sessions,
            seed=seed,
            index=index,
            concurrency=concurrency,
            profile=profile,  # type: ignore[arg-type]
            **_profile_settings(
                profile, model, eta, attractiveness, satisfaction, gamma, zipf_exponent, exploration_rate
            ),
        )
    except (FileNotFoundError, ValueError) as exc:
        raise _fail(str(exc)) from exc
    if api:
        client: Any = HttpClient(api)
        backend = None
    else:
        backend = _local_backend(config, cfg.realistic.exploration if profile == "realistic" else None)
        client = InProcessClient(_backend_search(backend), backend.events)

    async def run() -> Any:
        try:
            return await simulate(client, data.queries, data.qrels, cfg)
        finally:
            await client.aclose()

    try:
        report = asyncio.run(run())
    except (RuntimeError, ValueError) as exc:
        raise _fail(str(exc), 1) from exc
    finally:
        if backend is not None:
            backend.suggest.close()
            backend.store.close()
    typer.echo(json.dumps(report.model_dump()))


def _check_choices(profile: str, model: str) -> None:
    if profile not in ("ideal", "realistic"):
        raise _fail(f"--profile must be ideal or realistic, not {profile!r}")
    if model not in ("pbm", "cascade", "dbn"):
        raise _fail(f"--model must be pbm, cascade or dbn, not {model!r}")


def _profile_settings(
    profile: str,
    model: str,
    eta: float | None,
    attractiveness: str,
    satisfaction: str,
    gamma: float,
    zipf_exponent: float | None,
    exploration_rate: float | None,
) -> dict[str, Any]:
    """SimulatorConfig's `user` (ideal) or `realistic` from the command's options (ValueError if invalid)."""
    from training.click_profiles import RealisticProfile
    from training.click_users import UserConfig

    if profile == "ideal":
        user = UserConfig(
            kind=model,  # type: ignore[arg-type]
            eta=0.8 if eta is None else eta,
            attractiveness=_floats(attractiveness, "--attractiveness"),
            satisfaction=_floats(satisfaction, "--satisfaction"),
            gamma=gamma,
        )
        return {"user": user}
    real = RealisticProfile()
    update: dict[str, Any] = {"eta": eta, "zipf_exponent": zipf_exponent}
    if exploration_rate is not None:
        update["exploration"] = real.exploration.model_copy(update={"rate": exploration_rate})
    return {
        "realistic": RealisticProfile.model_validate(
            {**real.model_dump(), **{k: v for k, v in update.items() if v is not None}}
        )
    }


def _local_backend(config: Path | None, exploration: Any = None) -> Any:
    """The in-process service of `config`; `exploration` (an ExplorationConfig) replaces the config's."""
    from search.settings import Settings
    from serving.local import local_backend

    cfg = _app_config(config)
    if exploration is not None:
        cfg = cfg.model_copy(update={"search": cfg.search.model_copy(update={"exploration": exploration})})
    backend = local_backend(cfg, Settings())
    if backend.events is None:
        raise _fail("this config records no events (query_log or click_log backend is none)")
    return backend


def _backend_search(backend: Any) -> Any:
    from search.service import SearchRequest
    from serving.backend import logged_search
    from training.click_simulator import Page

    async def search(req: SearchRequest) -> Page:
        resp = await logged_search(backend, req)
        texts = [" ".join([r.title, *(f for frags in r.highlights.values() for f in frags)]) for r in resp.results]
        return Page(query_id=resp.query_id, shown=[r.id for r in resp.results], offset=resp.offset, texts=texts)

    return search


@clicks_app.command("fit")
def fit_cmd(
    model: Annotated[str, typer.Option("--model", help="ctr, pbm or dbn.")] = "pbm",
    config: ConfigOpt = None,
    index: Annotated[str | None, typer.Option("--index", help="Only this index's searches.")] = None,
    depth: Annotated[int, typer.Option("--depth", min=1, max=100, help="Ranks modelled.")] = 10,
    out: Annotated[Path | None, typer.Option("--out", help="Write the fitted parameters as JSON here.")] = None,
) -> None:
    """Fit a click model on the logs; print position propensities and held-out log-likelihood vs CTR."""
    import numpy as np

    from training.click_data import train_test_split
    from training.jobs import fit_click_model

    if model not in ("ctr", "pbm", "dbn"):
        raise _fail(f"--model must be ctr, pbm or dbn, not {model!r}")
    _, sessions = load_sessions(config, index, depth)
    train, test = train_test_split(sessions, 0.2, np.random.default_rng(0))
    t0 = time.perf_counter()
    fitted = fit_click_model(model, train)  # type: ignore[arg-type]
    seconds = time.perf_counter() - t0
    baseline = fit_click_model("ctr", train)
    props = fitted.propensities
    result = {
        "model": model,
        "sessions": len(sessions),
        "clicks": sum(sum(s.clicks) for s in sessions),
        "fit_s": round(seconds, 3),
        "heldout_ll": round(fitted.log_likelihood(test), 4),
        "heldout_ll_ctr": round(baseline.log_likelihood(test), 4),
        "propensities": [round(p, 4) for p in props.relative] if props is not None else None,
    }
    typer.echo(json.dumps(result))
    if out is not None:
        pairs = {f"{q}\t{d}": fitted.relevance(q, d) for q, d in {(s.query, d) for s in train for d in s.docs}}
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({**result, "relevance": pairs}, indent=1))
        typer.echo(f"wrote {out}", err=True)


@clicks_app.command("judgments")
def judgments_cmd(
    out: Annotated[Path, typer.Option("--out", help="Folder for queries.jsonl, qrels/clicks.tsv, scores.tsv.")],
    model: Annotated[str, typer.Option("--model", help="pbm or dbn.")] = "pbm",
    config: ConfigOpt = None,
    index: Annotated[str | None, typer.Option("--index", help="Only this index's searches.")] = None,
    dataset: Annotated[
        Path | None, typer.Option("--dataset", help="BEIR folder whose query ids to reuse (by query text).")
    ] = None,
    split: Annotated[
        str, typer.Option("--split", help="Whose queries file (queries_<split>.jsonl) to match.")
    ] = "train",
    min_impressions: Annotated[int, typer.Option("--min-impressions", min=1, help="Judge pairs shown this often.")] = 3,
    thresholds: Annotated[str, typer.Option("--thresholds", help="Relevance cut-offs of grades 1, 2, ...")] = "0.3,0.6",
    depth: Annotated[int, typer.Option("--depth", min=1, max=100, help="Ranks modelled.")] = 10,
) -> None:
    """BEIR-style graded qrels from a click model fitted on the logs (score runs with `sift eval --qrels`)."""
    from training.beir import queries_file, read_queries
    from training.click_logs import JudgmentConfig, judgments, write_judgments
    from training.jobs import fit_click_model

    if model not in ("pbm", "dbn"):
        raise _fail(f"--model must be pbm or dbn, not {model!r}")
    _, sessions = load_sessions(config, index, depth, minimum=1)
    jcfg = JudgmentConfig(min_impressions=min_impressions, thresholds=_floats(thresholds, "--thresholds"))
    known = read_queries(queries_file(dataset, split)) if dataset else None
    scores = judgments(fit_click_model(model, sessions), sessions, jcfg)  # type: ignore[arg-type]
    paths = write_judgments(scores, out, jcfg, known)
    pairs = sum(len(v) for v in scores.values())
    typer.echo(f"{len(scores)} queries, {pairs} judged pairs → {paths['qrels']}")


@clicks_app.command("interleaving")
def interleaving_cmd(
    config: ConfigOpt = None,
    index: Annotated[str | None, typer.Option("--index", help="Only this index's searches.")] = None,
    alpha: Annotated[float, typer.Option("--alpha", min=0.0, max=0.5, help="Significance of the sign test.")] = 0.05,
) -> None:
    """Winner of a team-draft interleaving experiment (`ranker: {interleave: true}`) from the logs."""
    from training.interleaving import interleaving_result

    imps, clicks = read_logs(config, index)
    result = interleaving_result(imps, clicks, alpha)
    if result.impressions == 0:
        raise _fail("no interleaved impressions in the logs (is `ranker.interleave` on?)", 1)
    typer.echo(result.model_dump_json())
