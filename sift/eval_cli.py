"""`sift eval`: score Sift's systems on a BEIR-layout collection (registered in sift/cli.py).

Kept in its own module so the CLI file stays small; the work is in `training.evaluation`, imported only when the
command runs so that `sift --help` and the other commands do not pay for it.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from sift.cli_common import _fail

if TYPE_CHECKING:
    from training.evaluation import EvalConfig, EvalResult

# The names of `training.evaluation.SYSTEMS`, spelled out so importing this module stays cheap
# (a test keeps them equal).
SYSTEM_NAMES = (
    "bm25", "bm25-reference", "dense", "baseline-rrf", "baseline-linear", "hybrid", "hybrid-rrf", "hybrid-linear",
    "hybrid+rerank", "hybrid-linear+ltr",
    "hybrid-linear+encoder", "hybrid-linear+rerank", "full",
)  # fmt: skip


# The twin / no-twin report's options (sift/eval_twins.py).
BaselineOpt = Annotated[
    str | None,
    typer.Option(
        "--baseline",
        help="System the twin / no-twin report counts per-query wins, ties and losses against (default: "
        "hybrid-linear when run, else the first system).",
    ),
]

TwinsConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--twins-config",
        help="App config whose query log is the training log: a test query is a twin when its word-set Jaccard "
        "with one of the log's searched queries is >= 0.5.",
    ),
]

TwinsSplitOpt = Annotated[
    str | None,
    typer.Option(
        "--twins-split",
        help="Without --twins-config: the dataset split whose queries stand for the training log (default: "
        "train when qrels/train.tsv exists and --split is not train; else no twin report).",
    ),
]


# The learnt models an evaluation may run (folders or registry references).
RerankerOpt = Annotated[
    str | None,
    typer.Option("--reranker", help="CrossEncoder HF id, path or registry:reranker[@V], for the +rerank systems."),
]

RankerOpt = Annotated[
    str | None,
    typer.Option("--ranker", help="`sift train ranker` folder or registry:ranker[@V], for the +ltr systems."),
]

EncoderOpt = Annotated[
    str | None,
    typer.Option("--encoder", help="Trained encoder folder or registry:encoder[@V], for +encoder and full."),
]


def eval_cmd(
    dataset: Annotated[Path, typer.Option("--dataset", help="BEIR folder: corpus.jsonl, queries.jsonl, qrels/.")],
    store: Annotated[str, typer.Option("--store", help="es or embedded")] = "es",
    systems: Annotated[
        str, typer.Option("--systems", help=f"Comma-separated, from: {','.join(SYSTEM_NAMES)}.")
    ] = ",".join(SYSTEM_NAMES),
    out: Annotated[
        Path | None, typer.Option("--out", help="Output folder (default bench/results/eval/<dataset>-<store>).")
    ] = None,
    reranker: RerankerOpt = None,
    ranker: RankerOpt = None,
    encoder: EncoderOpt = None,
    limit_queries: Annotated[
        int | None, typer.Option("--limit-queries", min=1, help="Only the first N judged queries (quick runs).")
    ] = None,
    rrf_k: Annotated[int | None, typer.Option("--rrf-k", min=1, help="RRF rank constant (default: config).")] = None,
    alpha: Annotated[
        float | None, typer.Option("--alpha", min=0.0, max=1.0, help="Dense weight in linear fusion (default: config).")
    ] = None,
    max_chunks: Annotated[
        int | None, typer.Option("--max-chunks", min=1, help="Chunks embedded per doc (1 = truncate, the default).")
    ] = None,
    model: Annotated[str | None, typer.Option("--model", help="Embedder: HF id or local path.")] = None,
    index: Annotated[str | None, typer.Option("--index", help="Index name (default eval-<dataset>).")] = None,
    split: Annotated[str, typer.Option("--split", help="Qrels split: qrels/<split>.tsv.")] = "test",
    qrels: Annotated[
        Path | None,
        typer.Option("--qrels", help="Score against this qrels TSV instead (e.g. `sift clicks judgments`)."),
    ] = None,
    reuse_index: Annotated[
        bool, typer.Option("--reuse-index", help="Search the existing index instead of building a new version.")
    ] = False,
    baseline: BaselineOpt = None,
    twins_config: TwinsConfigOpt = None,
    twins_split: TwinsSplitOpt = None,
    verbose: Annotated[bool, typer.Option("--verbose/--quiet", help="Log progress.")] = True,
) -> None:
    """Evaluate bm25 / dense / hybrid systems on a BEIR folder; writes results.json, results.md and PNGs."""
    _setup_logging(verbose)
    from search.stores.base import StoreError
    from training.evaluation import default_out_dir, run_evaluation
    from training.report import write_outputs

    names = _checked_systems(dataset, store, systems)
    cfg = _eval_config(
        dataset,
        store,
        names,
        split=split if qrels is None else qrels.stem,  # the label reports carry
        qrels=qrels,
        index=index,
        out=out,
        limit_queries=limit_queries,
        model=model,
        max_chunks=max_chunks,
        rrf_k=rrf_k,
        alpha=alpha,
        reranker=reranker,
        reuse_index=reuse_index,
    )
    try:
        ranker_path = _model_ref(ranker)
        cfg = cfg.model_copy(
            update={
                "ranker": Path(ranker_path) if ranker_path else None,
                "encoder": _model_ref(encoder),
                "reranker": _model_ref(reranker),
            }
        )
        result = run_evaluation(cfg)
    except (StoreError, FileNotFoundError, ValueError) as exc:
        raise _fail(str(exc), 1) from exc
    paths = write_outputs(result, out or default_out_dir(dataset, store))
    _print_summary(result, paths)
    from sift.eval_twins import twin_section

    twin_section(result, dataset, split, qrels, baseline, twins_config, twins_split, paths["json"].parent)


def _model_ref(ref: str | None) -> str | None:
    """A `registry:KIND[@VERSION]` reference as its folder (under Settings' registry root); others unchanged."""
    if ref is None or not ref.startswith("registry:"):
        return ref
    from models.registry import Registry
    from search.settings import Settings

    return str(Registry(Settings().registry_root()).resolve(ref))


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("elastic_transport", "httpx", "sift.indexing", "bm25s"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _checked_systems(dataset: Path, store: str, systems: str) -> list[str]:
    """The requested system names, once the store, the systems and the dataset folder are known to be valid."""
    from training.evaluation import SYSTEMS

    if store not in ("es", "embedded"):
        raise _fail(f"--store must be 'es' or 'embedded', not {store!r}")
    names = [s.strip() for s in systems.split(",") if s.strip()]
    unknown = [s for s in names if s not in SYSTEMS]
    if unknown or not names:
        raise _fail(f"unknown system(s) {unknown or names}: choose from {', '.join(SYSTEMS)}")
    if not (dataset / "corpus.jsonl").is_file():
        raise _fail(f"{dataset} is not a BEIR folder (no corpus.jsonl)")
    return names


def _eval_config(
    dataset: Path,
    store: str,
    names: list[str],
    *,
    split: str,
    qrels: Path | None,
    index: str | None,
    out: Path | None,
    limit_queries: int | None,
    model: str | None,
    max_chunks: int | None,
    rrf_k: int | None,
    alpha: float | None,
    reranker: str | None,
    reuse_index: bool,
) -> EvalConfig:
    """The command-line options over `EvalConfig`'s defaults (an option left out keeps the default)."""
    from search.retrieval import RetrievalConfig
    from training.evaluation import EvalConfig

    base = EvalConfig(dataset=dataset)
    retrieval = RetrievalConfig(
        **{
            **base.retrieval.model_dump(),
            **({"rrf_k": rrf_k} if rrf_k is not None else {}),
            **({"alpha": alpha} if alpha is not None else {}),
        }
    )
    return EvalConfig(
        dataset=dataset,
        store=store,  # type: ignore[arg-type]
        systems=names,
        split=split,
        qrels=qrels,
        index=index,
        out=out,
        limit_queries=limit_queries,
        embedder=base.embedder.model_copy(update={"model": model}) if model else base.embedder,
        max_chunks=max_chunks or base.max_chunks,
        retrieval=retrieval,
        reranker=reranker,
        rebuild=not reuse_index,
    )


def _print_summary(result: EvalResult, paths: dict[str, Path]) -> None:
    from training.report import markdown_table

    typer.echo(markdown_table(result))
    b = result.build
    typer.echo(
        f"\nbuild {b.seconds:.1f} s ({b.encoded} of {b.chunks} chunks encoded, {b.encode_seconds:.1f} s encoding); "
        f"query encoding {result.query_encoding.seconds:.1f} s; total {result.seconds:.1f} s"
    )
    typer.echo(f"wrote {paths['json']}, {paths['md']}, {paths['metrics_png']}, {paths['deltas_png']}")


if __name__ == "__main__":  # `python -m sift.eval_cli ...` works before `sift eval` is registered
    typer.run(eval_cmd)
