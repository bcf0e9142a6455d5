"""Whole logs out and in: UBI 1.3.0 NDJSON export of the logs a LogsConfig names, and an import of UBI or
plain JSONL files into them. `sift logs export` and `sift clicks import` are these two calls; a notebook
makes the same ones.

    cfg = LogsConfig.load("configs/app.yaml")
    export_ubi(cfg, Path("out/"), index="scifact")  # out/queries.ndjson, out/events.ndjson
    import_files(cfg, "ubi", queries=Path("ubi_queries.ndjson"), events=Path("ubi_events.ndjson"), index="scifact")
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from logs.access import logs_data_dir, open_logs
from logs.config import LogsConfig
from logs.ubi import event_documents, query_document
from logs.ubi_import import Importer, ImportReport, run_import
from search.settings import Settings


def export_ubi(
    cfg: LogsConfig,
    out: Path,
    index: str | None = None,
    since: datetime | None = None,
    settings: Settings | None = None,
) -> dict[str, Any]:
    """Write the search and suggest impressions as UBI `queries` (out/queries.ndjson) and the click,
    conversion and view records as UBI `events` (out/events.ndjson), one JSON document per line; Sift's extras
    ride in the attributes, so an import reads them back unchanged. Returns the counts written.
    ValueError when `out` is a file; NoClickLog when the config keeps no click log."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    counts = {"queries": 0, "events": 0, "records": 0}
    with open_logs(cfg, settings) as (qlog, clog):
        shown: dict[str, Any] = {}  # query_id → impression, to place conversions sent without positions
        with open(out / "queries.ndjson", "w", encoding="utf-8") as fq:
            for imp in qlog.read(since):
                if imp.type not in ("search", "suggest") or (index is not None and imp.index != index):
                    continue
                fq.write(json.dumps(query_document(imp), ensure_ascii=False) + "\n")
                counts["queries"] += 1
                if imp.query_id:
                    shown[imp.query_id] = imp.model_copy(update={"features": None})
        with open(out / "events.ndjson", "w", encoding="utf-8") as fe:
            for rec in clog.read(since):
                if index is not None and rec.index != index:
                    continue
                for doc in event_documents(rec, shown.get(rec.query_id)):
                    fe.write(json.dumps(doc, ensure_ascii=False) + "\n")
                    counts["events"] += 1
                counts["records"] += 1
    return {"out": str(out), **counts}


def import_files(
    cfg: LogsConfig,
    fmt: Literal["ubi", "jsonl"],
    *,
    queries: Path | None = None,
    events: Path | None = None,
    file: Path | None = None,
    index: str | None = None,
    dead_letter: Path | None = None,
    progress: bool = False,
    settings: Settings | None = None,
) -> ImportReport:
    """Append a click log from outside to the logs: UBI queries and/or events (or both kinds in `file`), or
    the plain JSONL shape (`file`, one search per line). Impressions that name no index get `index`. Refused
    lines are counted in the report and written, with their line numbers, to `dead_letter` (default
    <data_dir>/import-rejected/<time>.jsonl); importing the same file twice stores nothing new. ValueError for
    a wrong combination of files."""
    if fmt == "jsonl" and (queries or events or not file):
        raise ValueError("the jsonl format reads one file (one search per line), not UBI queries/events")
    if fmt == "ubi" and not (queries or events or file):
        raise ValueError("the ubi format needs queries and/or events (or one file with both kinds)")
    for path in (queries, events, file):
        if path is not None and not path.is_file():
            raise FileNotFoundError(f"{path}: no such file")
    with open_logs(cfg, settings) as (qlog, clog):
        im = Importer(qlog, clog, index, progress=progress, retention_days=cfg.retention_days)
        if fmt == "jsonl":
            assert file is not None
            im.add_plain(file)
        else:
            for path, expect in ((queries, "query"), (events, "event"), (file, None)):
                if path is not None:
                    im.add_ubi(path, expect)  # type: ignore[arg-type]
        if dead_letter is None:
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
            dead_letter = logs_data_dir(cfg, settings) / "import-rejected" / f"{stamp}.jsonl"
        return run_import(im, dead_letter)
