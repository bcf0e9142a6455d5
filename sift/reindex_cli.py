"""`sift reindex`: a full build with a choice of engine, for batch jobs (the RayJob runs this).

`--engine local` is `sift index`'s single process; `--engine ray` streams the same build through Ray Data
(`indexing/ray_engine.py`) on a local Ray or, with RAY_ADDRESS, on a cluster. Both hold the build lock, run
the gate (`gate:` in --config) and swap the alias only if everything is accounted for.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Annotated

import typer

from search.settings import Settings


def reindex_cmd(
    source: Annotated[Path, typer.Option("--source", help="JSONL/CSV/Parquet file, a folder of shards, or BEIR.")],
    index: Annotated[str, typer.Option("--index", help="Index (alias) name.")] = "docs",
    store: Annotated[str, typer.Option("--store", help="es or embedded")] = "embedded",
    engine: Annotated[str, typer.Option("--engine", help="ray (Ray Data) or local (one process).")] = "ray",
    config: Annotated[Path | None, typer.Option("--config", help="IndexingConfig YAML.")] = None,
    model: Annotated[str | None, typer.Option("--model", help="Embedder: HF id or local path.")] = None,
    backend: Annotated[str | None, typer.Option("--backend", help="Encoder backend: torch or onnx.")] = None,
    quantize: Annotated[str | None, typer.Option("--quantize", help="none or int8 (onnx only).")] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", help="Documents per bulk write.")] = None,
    actors: Annotated[int, typer.Option("--actors", help="Ray: encoder actors.")] = 2,
    actor_cpus: Annotated[float, typer.Option("--actor-cpus", help="Ray: CPUs per encoder actor.")] = 0.5,
    actor_gpus: Annotated[
        float | None, typer.Option("--actor-gpus", help="Ray: GPUs per encoder actor (default: 1 if any).")
    ] = None,
    encode_batch: Annotated[int, typer.Option("--encode-batch", help="Ray: documents per encoder call.")] = 64,
    num_cpus: Annotated[int | None, typer.Option("--num-cpus", help="Ray: CPUs of a local Ray started here.")] = None,
    report_file: Annotated[Path | None, typer.Option("--report", help="Also write the run report here (JSON).")] = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="docs/s and ETA on stderr.")] = True,
    verbose: Annotated[bool, typer.Option("--verbose/--quiet", help="Log each batch.")] = False,
) -> None:
    """Build a new version of INDEX from SOURCE with the chosen engine; exit 1 (alias unchanged) on failure,
    3 when the quality gate refuses the new version."""
    from pydantic import ValidationError

    from indexing.errors import IndexingError
    from indexing.gate import GateRefused
    from indexing.pipeline import IndexingConfig, IndexingPipeline
    from indexing.ray_engine import RayEngineConfig, RayIndexingPipeline
    from models.embedder import CachedEmbedder, EmbeddingCache, SentenceTransformerEmbedder
    from search.configfile import ConfigError, load_config
    from search.stores.base import StoreError
    from search.stores.factory import make_store
    from sift.cli import _fail, _print_index_report, _setup_logging, _store_kind

    _setup_logging(verbose)
    if engine not in ("ray", "local"):
        raise _fail(f"--engine must be 'ray' or 'local', not {engine!r}")
    if not source.exists():
        raise _fail(f"source not found: {source}")
    settings = Settings()
    try:
        default = IndexingConfig(dead_letter_dir=settings.data_dir / "dead-letter")
        cfg = load_config(config, IndexingConfig) if config else default
        cfg = cfg.model_copy(update={"progress": progress, **({"batch_size": batch_size} if batch_size else {})})
        enc = {"model": model, "backend": backend, "quantize": quantize}
        cfg.embedder = type(cfg.embedder).model_validate(
            {**cfg.embedder.model_dump(), **{k: v for k, v in enc.items() if v is not None}}
        )
        cache_path = settings.cache_dir / "embeddings.sqlite"
        rc = RayEngineConfig(
            encoder_actors=actors,
            encoder_num_cpus=actor_cpus,
            encoder_num_gpus=actor_gpus,
            encode_batch_docs=encode_batch,
            num_cpus=num_cpus,
            cache_path=cache_path,
        )
    except (ConfigError, ValidationError) as exc:
        raise _fail(str(exc)) from exc
    base = SentenceTransformerEmbedder(cfg.embedder) if cfg.embed else None
    st = make_store(_store_kind(store))
    try:
        if engine == "ray":
            pipeline: IndexingPipeline = RayIndexingPipeline(st, base, cfg, rc)
        else:
            emb = CachedEmbedder(base, EmbeddingCache(cache_path)) if base is not None else None
            pipeline = IndexingPipeline(st, emb, cfg)
        with contextlib.redirect_stdout(sys.stderr):  # stdout: the JSON report alone (Ray prints worker deaths)
            report = pipeline.build(source, index)
    except GateRefused as exc:
        typer.echo(exc.result.model_dump_json(indent=2))
        raise _fail(str(exc), 3) from exc
    except (IndexingError, StoreError, ValueError, OSError) as exc:
        raise _fail(f"reindex failed, alias unchanged: {exc}", 1) from exc
    finally:
        st.close()
    _print_index_report(report, report_file)
