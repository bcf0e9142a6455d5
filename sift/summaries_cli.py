"""`sift summarize QUERY`: search, then stream a cited summary of the top results (registered in sift/cli.py).

Tokens print as the LM writes them; then the checked summary follows, each sentence with its citations and
support score, sentences that failed the grounding check, and the numbered sources.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer


def summarize_cmd(
    query: Annotated[str, typer.Argument(help="The query text.")],
    index: Annotated[str, typer.Option("--index")] = "docs",
    store: Annotated[str, typer.Option("--store", help="es or embedded")] = "embedded",
    mode: Annotated[str, typer.Option("--mode", help="hybrid|bm25|dense")] = "hybrid",
    k: Annotated[int, typer.Option("-k", min=1, max=20, help="Results summarized.")] = 5,
    model: Annotated[str | None, typer.Option("--model", help="Query/sentence encoder (must match the index).")] = None,
    config: Annotated[Path | None, typer.Option("--config", help="SummarizerConfig YAML.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON (no token stream).")] = False,
) -> None:
    """Summarize the top results of a query with the local LM, every sentence checked against its sources."""
    from models.embedder import EmbedderConfig, SentenceTransformerEmbedder
    from search.configfile import ConfigError, load_config
    from search.retrieval import HybridRetriever, RetrievalConfig
    from search.stores.base import StoreError
    from search.stores.factory import make_store
    from search.summarize.config import SummarizerConfig
    from search.summarize.schemas import SummaryEvent, TokenEvent
    from search.summarize.summarizer import Summarizer

    if mode not in ("hybrid", "bm25", "dense") or store not in ("embedded", "es"):
        typer.secho("error: --mode must be hybrid, bm25 or dense; --store es or embedded", fg="red", err=True)
        raise typer.Exit(2)
    try:
        cfg = load_config(config, SummarizerConfig) if config else SummarizerConfig(top_k=k)
    except ConfigError as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        raise typer.Exit(2) from exc
    embedder = SentenceTransformerEmbedder(EmbedderConfig(model=model) if model else EmbedderConfig())
    retriever = HybridRetriever(
        make_store(store),  # type: ignore[arg-type]
        embedder if mode != "bm25" else None,
        RetrievalConfig(mode=mode),  # type: ignore[arg-type]
    )
    try:
        results = retriever.run(index, query, k=cfg.top_k)
    except (StoreError, ValueError) as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        raise typer.Exit(2) from exc
    finally:
        retriever.close()
    docs = [r.doc for r in results if r.doc is not None]
    if not docs:
        typer.echo("no results to summarize")
        raise typer.Exit(1)
    summarizer = Summarizer(cfg, embedder)
    summary = None
    for ev in summarizer.stream(query, docs):
        if isinstance(ev, TokenEvent) and not as_json:
            sys.stdout.write(ev.text)
            sys.stdout.flush()
        elif isinstance(ev, SummaryEvent):
            summary = ev.summary
    assert summary is not None
    if as_json:
        typer.echo(json.dumps(summary.model_dump(mode="json"), indent=2))
        return
    kind = "extractive fallback (no generated sentence passed the check)" if summary.extractive else "generated"
    typer.echo(f"\n\nSummary ({kind}; first token {summary.ttft_ms or 0:.0f} ms, total {summary.total_ms:.0f} ms):")
    for s in summary.sentences:
        flag = "" if s.supported else "  [UNSUPPORTED]"
        typer.echo(f"  {s.text} {''.join(f'[{n}]' for n in s.citations)}  (support {s.support:.2f}){flag}")
    for s in summary.dropped:
        typer.echo(f"  dropped: {s.text}  ({s.note})")
    typer.echo("Sources:")
    for src in summary.sources:
        typer.echo(f"  [{src.n}] {src.title or src.id}  ({src.id})")
