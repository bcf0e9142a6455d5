"""`sift clicks import`: a click log from outside (UBI NDJSON, or the plain JSONL shape) appended to the
configured query log and click log, so `sift train ranker` and the click models learn from it."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from sift.clicks_cli import ConfigOpt, _fail


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
    from search.logs.ubi_import import Importer, run_import
    from search.settings import Settings
    from sift.logs_cli import open_logs

    if fmt not in ("ubi", "jsonl"):
        raise _fail(f"--format must be ubi or jsonl, not {fmt!r}")
    if fmt == "jsonl" and (queries or events or not file):
        raise _fail("--format jsonl reads --file (one search per line), not --queries/--events")
    if fmt == "ubi" and not (queries or events or file):
        raise _fail("--format ubi needs --queries and/or --events (or --file with both kinds)")
    for path in (queries, events, file):
        if path is not None and not path.is_file():
            raise _fail(f"{path}: no such file")
    with open_logs(config) as (cfg, qlog, clog):
        retention = min(cfg.query_log.retention_days, cfg.click_log.retention_days)
        im = Importer(qlog, clog, index or cfg.search.default_index, progress=progress, retention_days=retention)
        if fmt == "jsonl":
            assert file is not None
            im.add_plain(file)
        else:
            for path, expect in ((queries, "query"), (events, "event"), (file, None)):
                if path is not None:
                    im.add_ubi(path, expect)  # type: ignore[arg-type]
        if dead_letter is None:
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
            dead_letter = Path(cfg.data_dir or Settings().data_dir) / "import-rejected" / f"{stamp}.jsonl"
        report = run_import(im, dead_letter)
    typer.echo(json.dumps(report.model_dump()))
    refused = report.rejected + report.orphans
    if refused:
        raise _fail(f"{refused} line(s) refused (see {report.dead_letter}); the rest was imported", 1)
