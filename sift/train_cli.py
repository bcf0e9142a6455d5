"""`sift train ranker|encoder|reranker`: models learnt from the click log, written into the model registry.

Training registers a new version and makes nothing live: `sift models promote` is the gated way in.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from sift.cli_common import ConfigOpt, _app_config, _fail, load_sessions, read_logs
from sift.gate_cli import IpsGateOpt, IpsMinPagesOpt, ips_gate_or_fail

train_app = typer.Typer(no_args_is_help=True, help="Train models from the logs.")

IndexOpt = Annotated[str | None, typer.Option("--index", help="Only this index's searches (and its documents).")]
RegistryOpt = Annotated[
    Path | None,
    typer.Option("--registry", help="Model registry root (default: SIFT_REGISTRY_DIR, else <data_dir>/registry)."),
]
BaseOpt = Annotated[
    str | None,
    typer.Option(
        "--base",
        help="Start from these weights: HF id, folder or registry:KIND[@VERSION] (default: the app's embedder for "
        "an encoder, the offline MiniLM with a fresh head for a reranker).",
    ),
]
EpochsOpt = Annotated[float, typer.Option("--epochs", min=0.01, help="Passes over the examples.")]
BatchOpt = Annotated[int, typer.Option("--batch-size", min=2, help="Examples per step.")]
StepsOpt = Annotated[int | None, typer.Option("--max-steps", min=1, help="Stop after this many steps.")]
LrOpt = Annotated[float, typer.Option("--learning-rate", min=0.0, help="Peak learning rate.")]
SeqOpt = Annotated[int, typer.Option("--max-seq-length", min=16, help="Tokens per input (reranker: per pair).")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seeds initialisation and batch order (not the split).")]
ThreadsOpt = Annotated[int | None, typer.Option("--threads", min=1, help="Torch threads (default: every core).")]
ShuffleOpt = Annotated[
    bool,
    typer.Option("--shuffle-labels", help="Swap clicked documents between queries: a deliberately worse model."),
]
ProgressOpt = Annotated[bool, typer.Option("--progress/--no-progress", help="The trainer's progress bar.")]


def open_registry(root: Path | None) -> Any:
    """The registry at `root`, else SIFT_REGISTRY_DIR, else <data_dir>/registry (training.jobs.open_registry)."""
    from training.jobs import open_registry as registry_at

    return registry_at(root)


def click_sessions(config: Path | None, index: str | None) -> tuple[list[Any], list[Any]]:
    """Impressions and their sessions, or exit 1 when there are too few to learn from."""
    return load_sessions(config, index)


@contextmanager
def open_store(config: Path | None, index: str | None) -> Iterator[tuple[Any, str, Any]]:
    """The store the app config names, the index to read documents from, and the app config."""
    from training.jobs import open_store as store_of

    cfg = _app_config(config)
    with store_of(cfg.store, cfg.data_dir, cfg.elasticsearch_url) as store:
        yield store, index or cfg.search.default_index, cfg


def resolve_base(base: str, registry: Any) -> str:
    from models.registry import REF_PREFIX, RegistryError

    if not base.startswith(REF_PREFIX):
        return base
    try:
        return str(registry.resolve(base))
    except RegistryError as exc:
        raise _fail(str(exc)) from exc


@train_app.command("ranker")
def ranker_cmd(
    out: Annotated[
        Path | None, typer.Option("--out", help="Write this folder instead of registering a version.")
    ] = None,
    config: ConfigOpt = None,
    index: IndexOpt = None,
    click_model: Annotated[str, typer.Option("--click-model", help="pbm or dbn: who labels the rows.")] = "pbm",
    seed: Annotated[int, typer.Option("--seed", help="Seeds the held-out split and LightGBM.")] = 0,
    min_gain: Annotated[
        float, typer.Option("--min-gain", help="Write only if held-out nDCG@10 beats the served order by this.")
    ] = 0.005,
    confidence: Annotated[
        float,
        typer.Option(
            "--confidence", min=0.0, max=0.99, help="...and its bootstrap bound at this level is above 0 (0: off)."
        ),
    ] = 0.9,
    ips_gate: IpsGateOpt = True,
    ips_min_pages: IpsMinPagesOpt = 30,
    registry: RegistryOpt = None,
) -> None:
    """Fit LightGBM lambdarank on served features labelled by a click model, cross-fitted over folds of the train
    queries; print out-of-fold nDCG@10 of the learnt order against the fused order. Registers a `ranker` version
    (model.txt + meta.json) unless --out names a folder."""
    from models.registry import RegistryError
    from sift.logs_cli import with_replayed_features
    from training.jobs import fit_ranker, write_ranker
    from training.ltr import RankerTrainConfig

    if click_model not in ("pbm", "dbn"):
        raise _fail(f"--click-model must be pbm or dbn, not {click_model!r}")
    if out is not None and out.exists() and any(out.iterdir()):
        raise _fail(f"{out} exists and is not empty: a model folder is written once")
    cfg = RankerTrainConfig(
        click_model=click_model,  # type: ignore[arg-type]
        seed=seed,
        min_gain=min_gain,
        confidence=confidence,
    )
    imps, sessions = click_sessions(config, index)
    imps = with_replayed_features(imps, config, index)  # imported impressions carry no features
    try:
        fit = fit_ranker(imps, sessions, cfg)
    except ValueError as exc:
        raise _fail(str(exc), 1) from exc
    typer.echo(json.dumps({"version": fit.meta.version, **fit.meta.metrics}))
    if fit.refusal is not None:
        raise _fail(f"not written: {fit.refusal} (more clicks, or --min-gain / --confidence)", 1)
    if ips_gate:  # training.gate: explored pages only, inverse propensity weights
        fit.meta.metrics.update(ips_gate_or_fail(fit.data, imps, config, index, ips_min_pages, seed))
    try:
        path = write_ranker(fit, registry=None if out is not None else open_registry(registry), out=out)
    except RegistryError as exc:
        raise _fail(str(exc), 1) from exc
    if out is not None:
        typer.echo(f"wrote {out}; serve it with `ranker: {{model: {out}}}` in the app YAML", err=True)
    else:
        typer.echo(f"registered {path}; make it live with `sift models promote ranker {fit.meta.version}`", err=True)


def _neural_cmd(kind: str, options: dict[str, Any]) -> None:
    """`sift train encoder|reranker`: examples from the logs, a library trainer, a new registry version."""
    from models.references import DEFAULT_EMBEDDER
    from models.registry import RegistryError
    from search.stores.base import IndexNotFound, StoreError
    from training.jobs import neural_data
    from training.neural import EncoderTrainConfig, RerankerTrainConfig, train_encoder, train_reranker

    reg = open_registry(options.pop("registry"))
    config, index, shuffle = options.pop("config"), options.pop("index"), options.pop("shuffle_labels")
    imps, sessions = click_sessions(config, index)
    with open_store(config, index) as (store, target, app_cfg):
        default_base = app_cfg.embedder.model if kind == "encoder" else DEFAULT_EMBEDDER
        options["base"] = resolve_base(options["base"] or default_base, reg)
        try:
            data = neural_data(imps, sessions, store, target, options["seed"] if shuffle else None)
        except IndexNotFound as exc:
            raise _fail(f"index {target!r} does not exist in the {app_cfg.store} store: {exc}") from exc
        except (StoreError, ValueError) as exc:
            raise _fail(str(exc), 1) from exc
    try:
        if kind == "encoder":
            trained = train_encoder(data, EncoderTrainConfig(**options), reg)
        else:
            trained = train_reranker(data, RerankerTrainConfig(**options), reg, serve=app_cfg.reranker)
    except (RegistryError, ValueError, OSError) as exc:
        raise _fail(f"training failed, nothing registered: {exc}", 1) from exc
    card = trained.card
    typer.echo(json.dumps({"kind": kind, "version": card.version, "path": str(trained.path), **card.metrics}))
    typer.echo(f"registered; make it live with `sift models promote {kind} {card.version}`", err=True)


@train_app.command("encoder")
def encoder_cmd(
    config: ConfigOpt = None,
    index: IndexOpt = None,
    base: BaseOpt = None,
    epochs: EpochsOpt = 1.0,
    batch_size: BatchOpt = 16,
    max_steps: StepsOpt = None,
    learning_rate: LrOpt = 2e-5,
    max_seq_length: SeqOpt = 256,
    seed: SeedOpt = 0,
    threads: ThreadsOpt = None,
    registry: RegistryOpt = None,
    shuffle_labels: ShuffleOpt = False,
    progress: ProgressOpt = True,
) -> None:
    """Fine-tune the bi-encoder (default: the app config's embedder) with MultipleNegativesRanking loss on
    (query, clicked document, skipped-above document) from the logs; register an `encoder` version and print its
    held-out nDCG@10 beside the starting model's. A new encoder needs a reindex before it serves."""
    _neural_cmd("encoder", dict(locals()))


@train_app.command("reranker")
def reranker_cmd(
    config: ConfigOpt = None,
    index: IndexOpt = None,
    base: BaseOpt = None,
    epochs: EpochsOpt = 1.0,
    batch_size: BatchOpt = 16,
    max_steps: StepsOpt = None,
    learning_rate: LrOpt = 2e-5,
    max_seq_length: SeqOpt = 128,
    seed: SeedOpt = 0,
    threads: ThreadsOpt = None,
    registry: RegistryOpt = None,
    shuffle_labels: ShuffleOpt = False,
    progress: ProgressOpt = True,
) -> None:
    """Fine-tune a cross-encoder (default: the offline MiniLM with a fresh 1-logit head) with binary
    cross-entropy on clicked and skipped documents; register a `reranker` version and print its held-out
    nDCG@10 beside the served order's, and the p50 latency of reranking 20 documents."""
    _neural_cmd("reranker", dict(locals()))


LM_TASKS = ("suggest", "related", "doc2query")


@train_app.command("lm")
def lm_cmd(
    task: Annotated[str | None, typer.Option("--task", help="suggest (default), related or doc2query.")] = None,
    config: ConfigOpt = None,
    lm_config: Annotated[
        Path | None, typer.Option("--lm-config", help="YAML with `data:` and `train:` settings; flags override it.")
    ] = None,
    index: IndexOpt = None,
    base: Annotated[
        str | None,
        typer.Option(
            "--base", help="Starting LM: HF id, folder, registry:lm or registry:lm@VERSION (default: the suggester's)."
        ),
    ] = None,
    epochs: Annotated[float | None, typer.Option("--epochs", min=0.01, help="Passes over the examples (1).")] = None,
    max_steps: StepsOpt = None,
    batch_size: Annotated[
        int | None, typer.Option("--batch-size", min=1, help="Examples per step, worker (8).")
    ] = None,
    learning_rate: Annotated[
        float | None, typer.Option("--learning-rate", min=0.0, help="Peak LR (default 3e-4 LoRA, 5e-5 full).")
    ] = None,
    lora: Annotated[bool | None, typer.Option("--lora/--full", help="LoRA adapters, merged (default), or all.")] = None,
    min_sessions: Annotated[
        int | None,
        typer.Option("--min-sessions", min=1, help="Learn a query only if so many sessions issued it (3)."),
    ] = None,
    split: Annotated[str | None, typer.Option("--split", help="Held-out side: time (default) or session.")] = None,
    registry: RegistryOpt = None,
    workers: Annotated[int | None, typer.Option("--workers", min=1, help="Ray Train workers (1).")] = None,
    gpu: Annotated[bool | None, typer.Option("--gpu/--cpu", help="One GPU per worker (default: CPU).")] = None,
    storage: Annotated[
        Path | None, typer.Option("--storage", help="Ray Train run folder (default <data_dir>/lm-train).")
    ] = None,
    resume: Annotated[Path | None, typer.Option("--resume", help="Continue from this checkpoint folder.")] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Seeds initialisation and batch order (0).")] = None,
) -> None:
    """Fine-tune the causal LM on the click log in the suggester's prompt format, on Ray Train (TorchTrainer);
    register an `lm` version and print one JSON line: version, held-out loss before/after, tokens/s."""
    from models.registry import RegistryError
    from search.configfile import ConfigError
    from search.settings import Settings
    from search.stores.base import IndexNotFound, StoreError
    from training.lm_run import doc_fetch, job_config, lm_examples, run_lm_training

    if task not in (None, *LM_TASKS) or split not in (None, "time", "session"):
        raise _fail("--task must be suggest, related or doc2query and --split time or session")
    if resume is not None and not resume.is_dir():
        raise _fail(f"--resume {resume}: no such checkpoint folder")
    train = {"lora": lora, "learning_rate": learning_rate, "epochs": epochs, "max_steps": max_steps, "seed": seed,
             "batch_size": batch_size, "workers": workers, "use_gpu": gpu,
             "storage_path": str(storage.resolve()) if storage else None,
             "resume_from": str(resume.resolve()) if resume else None}  # fmt: skip
    try:
        job = job_config(lm_config, {"task": task, "min_sessions": min_sessions, "split": split}, train)
    except ConfigError as exc:
        raise _fail(str(exc)) from exc
    reg, data_cfg = open_registry(registry), job.data
    imps, clicks = read_logs(config, index)
    with open_store(config, index) as (store, target, app_cfg):
        try:
            data = lm_examples(imps, clicks, data_cfg, app_cfg.suggest, doc_fetch(store, target, data_cfg))
        except IndexNotFound as exc:
            raise _fail(f"index {target!r} does not exist in the {app_cfg.store} store: {exc}") from exc
        except (StoreError, ValueError, OSError) as exc:
            raise _fail(str(exc), 1) from exc
        from_file = job.train.base if "base" in job.train.model_fields_set else None
        base_ref = resolve_base(base or from_file or app_cfg.suggest.lm.lm.model, reg)
        storage_path = job.train.storage_path or str(Path(app_cfg.data_dir or Settings().data_dir) / "lm-train")
    if not data.train:
        raise _fail(f"no {data.task} examples survive the privacy filters (min {data_cfg.min_sessions} sessions): "
                    f"{data.stats}", 1)  # fmt: skip
    cfg = job.train.model_copy(update={"base": base_ref, "storage_path": str(Path(storage_path).resolve())})
    try:
        trained = run_lm_training(data, cfg, reg)
    except (RegistryError, ValueError, OSError, RuntimeError) as exc:
        raise _fail(f"training failed, nothing registered: {exc}", 1) from exc
    typer.echo(json.dumps({"kind": "lm", "task": data.task, "version": trained.version, "path": str(trained.path),
                           "checkpoint": trained.checkpoint, **trained.metrics}))  # fmt: skip
