"""The `sift` command: one entry point for every job (Elasticsearch node, indexing, search, demo)."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated, Literal

import typer

from models.ray_session import shutdown_ray
from search.settings import Settings
from sift.cli_common import _fail

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Sift: hybrid search backend.")
es_app = typer.Typer(no_args_is_help=True, help="A local Elasticsearch node for development and tests.")
app.add_typer(es_app, name="es")

StoreOpt = Annotated[str, typer.Option("--store", help="es or embedded")]


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def _store_kind(store: str) -> Literal["embedded", "es"]:
    if store not in ("embedded", "es"):
        raise _fail(f"--store must be 'es' or 'embedded', not {store!r}")
    return store  # type: ignore[return-value]


# -- Elasticsearch node ---------------------------------------------------------------------------------
def _node(port: int | None, heap: str | None):  # type: ignore[no-untyped-def]
    from sift.es_node import LocalElasticsearch

    s = Settings()
    return LocalElasticsearch(port=port or s.es_port, heap=heap or s.es_heap, cache_dir=s.cache_dir)


@es_app.command("start")
def es_start(
    port: Annotated[int | None, typer.Option(help="HTTP port (default SIFT_ES_PORT or 9200).")] = None,
    heap: Annotated[str | None, typer.Option(help="JVM heap, e.g. 512m or 1g.")] = None,
) -> None:
    """Fetch (once) and start a single-node Elasticsearch bound to 127.0.0.1."""
    from sift.es_dist import EsNodeError

    try:
        st = _node(port, heap).start()
    except EsNodeError as exc:
        raise _fail(str(exc)) from exc
    typer.echo(f"elasticsearch running at {st.url} (pid {st.pid}, health {st.health})")


@es_app.command("stop")
def es_stop(port: Annotated[int | None, typer.Option(help="HTTP port.")] = None) -> None:
    """Stop the local node by the PID in its pid file."""
    stopped = _node(port, None).stop()
    typer.echo("stopped" if stopped else "not running")


@es_app.command("status")
def es_status(port: Annotated[int | None, typer.Option(help="HTTP port.")] = None) -> None:
    """Print whether the local node runs, its PID and health."""
    st = _node(port, None).status()
    typer.echo(json.dumps({"running": st.running, "pid": st.pid, "url": st.url, "health": st.health}))
    if not st.running:
        raise typer.Exit(1)


# -- indexing -------------------------------------------------------------------------------------------
GateQrelsOpt = Annotated[Path | None, typer.Option("--gate-qrels", help="Quality gate: qrels TSV (+ --gate-queries).")]
GateQueriesOpt = Annotated[Path | None, typer.Option("--gate-queries", help="Quality gate: queries JSONL.")]
GateDropOpt = Annotated[float | None, typer.Option("--gate-max-drop", help="Largest nDCG@10 drop vs live (0.01).")]
GateModeOpt = Annotated[str | None, typer.Option("--gate-mode", help="bm25|dense|hybrid (hybrid).")]
GateLiveOpt = Annotated[str | None, typer.Option("--gate-live-model", help="Live version's encoder (default: own).")]


def _index_gate(base: object, qrels: Path | None, queries: Path | None, flags: dict[str, float | str | None]) -> object:
    """The gate of `sift index`: the config file's (`base`), or one from --gate-qrels/--gate-queries, with the
    other --gate-* flags on top; None without either."""
    from indexing.gate import GateConfig

    if bool(qrels) != bool(queries):
        raise _fail("--gate-qrels and --gate-queries go together")
    gate = GateConfig(qrels=qrels, queries=queries) if qrels and queries else base
    given = {k: v for k, v in flags.items() if v is not None}
    if gate is None:
        if given:
            raise _fail("--gate-max-drop/--gate-mode/--gate-live-model need --gate-qrels and --gate-queries")
        return None
    assert isinstance(gate, GateConfig)
    try:
        return GateConfig.model_validate({**gate.model_dump(), **given})
    except ValueError as exc:
        raise _fail(f"invalid gate option: {exc}") from exc


@app.command("index")
def index_cmd(
    source: Annotated[
        Path | None, typer.Option("--source", help="JSONL/CSV/Parquet file, a folder, or a BEIR folder.")
    ] = None,
    index: Annotated[str, typer.Option("--index", help="Index (alias) name.")] = "docs",
    store: StoreOpt = "embedded",
    config: Annotated[Path | None, typer.Option("--config", help="IndexingConfig YAML.")] = None,
    incremental: Annotated[bool, typer.Option("--incremental", help="Upsert/delete in the live version.")] = False,
    delete_ids: Annotated[
        Path | None, typer.Option("--delete-ids", help="File of ids to delete (one per line).")
    ] = None,
    model: Annotated[str | None, typer.Option("--model", help="Embedder: HF id or local path.")] = None,
    no_embed: Annotated[bool, typer.Option("--no-embed", help="BM25 only: write no vectors.")] = False,
    batch_size: Annotated[int | None, typer.Option("--batch-size", help="Documents per bulk write.")] = None,
    fmt: Annotated[str | None, typer.Option("--format", help="jsonl|csv|parquet|beir (default: detect).")] = None,
    report_file: Annotated[Path | None, typer.Option("--report", help="Also write the run report here (JSON).")] = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Progress bars on stderr.")] = True,
    verbose: Annotated[bool, typer.Option("--verbose/--quiet", help="Log each batch.")] = True,
    gate_qrels: GateQrelsOpt = None,
    gate_queries: GateQueriesOpt = None,
    gate_max_drop: GateDropOpt = None,
    gate_mode: GateModeOpt = None,
    gate_live_model: GateLiveOpt = None,
) -> None:
    """Build a new version of INDEX from SOURCE and move the alias, or update it with --incremental.

    With a quality gate (--gate-qrels/--gate-queries, or `gate:` in --config) the alias moves only if the new
    version's nDCG@10 is at most --gate-max-drop below the live one's; otherwise exit 3 with both figures."""
    _setup_logging(verbose)
    from indexing.gate import GateRefused
    from indexing.pipeline import IndexingConfig, IndexingError, IndexingPipeline
    from models.embedder import CachedEmbedder, EmbeddingCache, SentenceTransformerEmbedder
    from search.configfile import ConfigError, load_config
    from search.stores.base import StoreError
    from search.stores.factory import make_store

    settings = Settings()
    try:
        cfg = (
            load_config(config, IndexingConfig)
            if config
            else IndexingConfig(dead_letter_dir=settings.data_dir / "dead-letter")
        )
    except ConfigError as exc:
        raise _fail(str(exc)) from exc
    updates: dict[str, object] = {"progress": progress}
    if no_embed:
        updates["embed"] = False
    if batch_size:
        updates["batch_size"] = batch_size
    if fmt:
        updates["format"] = fmt
    gate_flags = {"max_drop": gate_max_drop, "mode": gate_mode, "live_model": gate_live_model}
    updates["gate"] = _index_gate(cfg.gate, gate_qrels, gate_queries, gate_flags)
    cfg = cfg.model_copy(update=updates)
    if model:
        cfg.embedder = cfg.embedder.model_copy(update={"model": model})
    if source is None and not (incremental and delete_ids):
        raise _fail("--source is required (or --incremental --delete-ids FILE)")
    if source is not None and not source.exists():
        raise _fail(f"source not found: {source}")
    if delete_ids and not incremental:
        raise _fail("--delete-ids only applies with --incremental")

    cache = EmbeddingCache(settings.cache_dir / "embeddings.sqlite")  # opened on first use
    embedder = CachedEmbedder(SentenceTransformerEmbedder(cfg.embedder), cache) if cfg.embed else None
    pipeline = IndexingPipeline(make_store(_store_kind(store)), embedder, cfg)
    try:
        if incremental:
            ids = [ln.strip() for ln in delete_ids.read_text().splitlines() if ln.strip()] if delete_ids else []
            report = pipeline.update(source, index, ids)
        else:
            assert source is not None
            report = pipeline.build(source, index)
    except GateRefused as exc:
        typer.echo(exc.result.model_dump_json(indent=2))
        raise _fail(str(exc), 3) from exc
    except (IndexingError, StoreError, ValueError, OSError) as exc:
        raise _fail(f"indexing failed, alias unchanged: {exc}", 1) from exc
    _print_index_report(report, report_file)


def _print_index_report(report: object, report_file: Path | None) -> None:
    from indexing.pipeline import IndexReport

    assert isinstance(report, IndexReport)
    out = report.model_dump_json(indent=2)
    if report_file:
        report_file.write_text(out)
    typer.echo(out)
    if report.dead_lettered:
        typer.secho(
            f"{report.dead_lettered} record(s) dead-lettered: {report.dead_letter_file}",
            fg=typer.colors.YELLOW,
            err=True,
        )


@app.command("search")
def search_cmd(
    query: Annotated[str, typer.Argument(help="The query text.")],
    index: Annotated[str, typer.Option("--index")] = "docs",
    store: StoreOpt = "embedded",
    mode: Annotated[str, typer.Option("--mode", help="hybrid|bm25|dense")] = "hybrid",
    k: Annotated[int, typer.Option("-k", min=1, max=100, help="Results to show.")] = 5,
    model: Annotated[str | None, typer.Option("--model", help="Query encoder (must match the index).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    backend: Annotated[
        str, typer.Option("--backend", help="Query encoder backend: torch, onnx (int8) or auto (as the index's).")
    ] = "torch",
) -> None:
    """Answer one query from the command line."""
    from models.embedder import EmbedderConfig, SentenceTransformerEmbedder
    from search.retrieval import HybridRetriever, RetrievalConfig
    from search.stores.base import StoreError
    from search.stores.factory import make_store

    if mode not in ("hybrid", "bm25", "dense"):
        raise _fail("--mode must be hybrid, bm25 or dense")
    encoder = None
    if mode != "bm25":
        if backend not in ("torch", "onnx", "auto"):
            raise _fail("--backend must be torch, onnx or auto")
        ecfg = {
            "backend": backend,
            **({"quantize": "int8"} if backend == "onnx" else {}),
            **({"model": model} if model else {}),
        }
        encoder = SentenceTransformerEmbedder(EmbedderConfig.model_validate(ecfg))
    retriever = HybridRetriever(make_store(_store_kind(store)), encoder, RetrievalConfig(mode=mode))  # type: ignore[arg-type]
    try:
        results = retriever.run(index, query, k=k)
    except (StoreError, ValueError) as exc:
        raise _fail(str(exc)) from exc
    finally:
        retriever.close()
    if as_json:
        typer.echo(
            json.dumps(
                [
                    r.model_dump(mode="json", exclude={"doc"}) | {"title": r.doc.title if r.doc else None}
                    for r in results
                ],
                indent=2,
            )
        )
        return
    if not results:
        typer.echo("no results")
    for i, r in enumerate(results, 1):
        title = r.doc.title if r.doc else r.id
        snippet = (r.doc.body[:160].replace("\n", " ") + "…") if r.doc and r.doc.body else ""
        typer.echo(f"{i}. {title}  [{r.id}]  score={r.score:.4f} bm25_rank={r.bm25_rank} dense_rank={r.dense_rank}")
        if snippet:
            typer.echo(f"   {snippet}")


@app.command("serve")
def serve_cmd(
    config: Annotated[Path | None, typer.Option("--config", help="AppConfig YAML.")] = None,
    host: Annotated[str | None, typer.Option("--host", help="Override the bind address.")] = None,
    port: Annotated[int | None, typer.Option("--port", help="Override the HTTP port.")] = None,
    no_ray: Annotated[bool, typer.Option("--no-ray", help="Serve from this process with uvicorn (no Ray).")] = False,
) -> None:
    """Serve the search API (Ray Serve on a local Ray, or the cluster in RAY_ADDRESS)."""
    _setup_logging(True)
    from search.configfile import ConfigError
    from serving.config import AppConfig

    try:
        cfg = AppConfig.load(config) if config else AppConfig()
    except ConfigError as exc:
        raise _fail(str(exc)) from exc
    cfg = cfg.model_copy(update={k: v for k, v in {"host": host, "port": port}.items() if v is not None})
    example = json.dumps({"query": "how do I read a file", "limit": 3})
    banner = (
        f"Sift API on http://{cfg.host}:{cfg.port}  (docs: http://{cfg.host}:{cfg.port}/docs)\n"
        f"try:  curl -s -X POST http://{cfg.host}:{cfg.port}/v1/search "
        f"-H 'content-type: application/json' -d '{example}'"
    )
    settings = Settings()
    if no_ray:
        import uvicorn

        from serving.api import create_api
        from serving.local import local_backend, uvicorn_options

        backend = local_backend(cfg, settings)
        typer.echo(banner)
        api = create_api(backend, backend.metrics, cfg.cors_origins)
        uvicorn.run(api, **uvicorn_options(cfg))  # access log as in Serve mode; no proxy headers
        return
    from ray import serve

    from serving.ray_env import run_local

    try:
        run_local(cfg, settings)
        typer.echo(banner)
        serve_forever()
    finally:
        serve.shutdown()
        shutdown_ray()


def serve_forever() -> None:
    """Block until Ctrl-C / SIGTERM, so Serve keeps running in this process's Ray."""
    import signal
    import threading

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass


@app.command("demo-corpus")
def demo_corpus_cmd(
    out: Annotated[Path, typer.Option("--out", help="JSONL file to write.")] = Path(".data/demo/pydocs.jsonl"),
    limit: Annotated[int | None, typer.Option("--limit", help="At most this many documents.")] = None,
) -> None:
    """Write the demo corpus: this Python's own documentation (no download)."""
    from indexing.demo_corpus import build_demo_corpus

    out.parent.mkdir(parents=True, exist_ok=True)
    n = build_demo_corpus(out, limit=limit)
    typer.echo(f"wrote {n} documents to {out}")


def _register_commands() -> None:
    """Commands that live in their own modules (each imports its heavy parts lazily)."""
    from sift.clicks_cli import clicks_app
    from sift.clicks_import_cli import import_cmd
    from sift.eval_cli import eval_cmd
    from sift.logs_cli import logs_app
    from sift.models_cli import models_app
    from sift.reindex_cli import reindex_cmd
    from sift.suggest_build_cli import suggest_app
    from sift.suggest_cli import eval_suggest_cmd
    from sift.summaries_cli import summarize_cmd
    from sift.synonyms_cli import synonyms_app
    from sift.train_cli import train_app
    from sift.versions_cli import versions_app

    app.command("eval")(eval_cmd)
    app.command("eval-suggest")(eval_suggest_cmd)
    app.command("summarize")(summarize_cmd)
    app.command("reindex")(reindex_cmd)
    clicks_app.command("import")(import_cmd)
    app.add_typer(clicks_app, name="clicks")
    app.add_typer(logs_app, name="logs")
    app.add_typer(train_app, name="train")
    app.add_typer(models_app, name="models")
    app.add_typer(versions_app, name="versions")
    app.add_typer(synonyms_app, name="synonyms")
    app.add_typer(suggest_app, name="suggest")


_register_commands()

if __name__ == "__main__":
    app()
