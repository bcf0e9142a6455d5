"""`sift clicks import`: a click log from outside (UBI NDJSON, or the plain JSONL shape) appended to the
configured query log and click log (logs.transfer.import_files), so `sift train ranker` and the click
models learn from it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

import typer

from sift.cli_common import ConfigOpt, _app_config, _fail, _logs_config


def import_cmd(
    fmt: Annotated[str, typer.Option("--format", help="ubi (UBI queries/events) or jsonl (the plain shape).")],
    queries: Annotated[Path | None, typer.Option("--queries", help="UBI queries NDJSON (ubi_queries).")] = None,
    events: Annotated[Path | None, typer.Option("--events", help="UBI events NDJSON (ubi_events).")] = None,
    file: Annotated[
        Path | None, typer.Option("--file", help="jsonl: the plain file; ubi: queries and events in one file.")
    ] = None,
    config: ConfigOpt = None,
    index: Annotated[
        str | None, typer.Option("--index", help="Index of impressions that name none (default: the app's).")
    ] = None,
    dead_letter: Annotated[
        Path | None,
        typer.Option("--dead-letter", help="Where refused lines go (default <data_dir>/import-rejected/<time>.jsonl)."),
    ] = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="A progress bar while writing.")] = True,
) -> None:
    """Read UBI (as OpenSearch's ubi_queries / ubi_events export it, plain or as search hits, or as its
    JavaScript collector posts it) or one search per line of the plain JSONL shape, and append impressions and
    click records to the logs. Refused lines (bad fields, unshown objects, events with no impression) are
    counted and written with their line numbers to the dead-letter file; importing a file twice stores nothing
    new. Prints a JSON report; exits 1 when lines were refused (the rest is stored)."""
    from logs.access import NoClickLog
    from logs.transfer import import_files

    if fmt not in ("ubi", "jsonl"):
        raise _fail(f"--format must be ubi or jsonl, not {fmt!r}")
    if fmt == "jsonl" and (queries or events or not file):
        raise _fail("--format jsonl reads --file (one search per line), not --queries/--events")
    if fmt == "ubi" and not (queries or events or file):
        raise _fail("--format ubi needs --queries and/or --events (or --file with both kinds)")
    for path in (queries, events, file):
        if path is not None and not path.is_file():
            raise _fail(f"{path}: no such file")
    cfg = _logs_config(config)
    default_index = index or _app_config(config).search.default_index
    kind: Literal["ubi", "jsonl"] = "ubi" if fmt == "ubi" else "jsonl"
    try:
        report = import_files(
            cfg, kind, queries=queries, events=events, file=file, index=default_index, dead_letter=dead_letter,
            progress=progress,
        )  # fmt: skip
    except NoClickLog as exc:
        raise _fail(str(exc)) from exc
    typer.echo(json.dumps(report.model_dump()))
    refused = report.rejected + report.orphans
    if refused:
        raise _fail(f"{refused} line(s) refused (see {report.dead_letter}); the rest was imported", 1)
