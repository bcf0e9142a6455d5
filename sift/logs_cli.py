"""`sift logs export`: the query log and click log written out as User Behavior Insights (UBI 1.3.0) NDJSON; and
the logs opened for the import (`sift clicks import`) and for the ranker's feature replay."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer

from sift.clicks_cli import ConfigOpt, _app_config, _fail

logs_app = typer.Typer(no_args_is_help=True, help="The query and click logs: export them.")


@contextmanager
def open_logs(config: Path | None) -> Iterator[tuple[Any, Any, Any]]:
    """The app config, its query log and its click log (JSONL files or Elasticsearch indices, as configured)."""
    from search.logs.clicklog import make_click_log
    from search.logs.querylog import make_query_log
    from search.settings import Settings
    from search.stores.factory import make_store

    cfg = _app_config(config)
    settings = Settings()
    if cfg.elasticsearch_url:
        settings = settings.model_copy(update={"elasticsearch_url": cfg.elasticsearch_url})
    data_dir = cfg.data_dir or settings.data_dir
    store = make_store(cfg.store, settings, data_dir=cfg.data_dir) if cfg.store == "es" else None
    qlog = None
    try:
        qlog = make_query_log(cfg.query_log, cfg.store, data_dir, getattr(store, "client", None))
        clog = make_click_log(cfg.click_log, cfg.store, data_dir, getattr(store, "client", None))
        if clog is None:
            raise _fail("click_log backend is none: this config keeps no click log")
        refresh = getattr(qlog, "refresh", None)
        if refresh is not None:  # Elasticsearch: see what was acknowledged, not what the refresh has shown
            refresh()
        yield cfg, qlog, clog
    finally:
        if qlog is not None:
            qlog.close()
        if store is not None:
            store.close()


def parse_since(text: str | None) -> datetime | None:
    """`--since`: an ISO 8601 date or time (UTC unless it names a zone), or an age such as 30d or 12h."""
    if text is None:
        return None
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([dh])", text.strip())
    if m:
        amount = float(m.group(1))
        return datetime.now(UTC) - (timedelta(days=amount) if m.group(2) == "d" else timedelta(hours=amount))
    try:
        ts = datetime.fromisoformat(text)
    except ValueError as exc:
        raise _fail(f"--since takes an ISO 8601 date/time or an age like 30d or 12h, not {text!r}") from exc
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts


@logs_app.command("export")
def export_cmd(
    out: Annotated[Path, typer.Option("--out", help="Folder for queries.ndjson and events.ndjson.")],
    fmt: Annotated[str, typer.Option("--format", help="ubi (User Behavior Insights 1.3.0).")] = "ubi",
    config: ConfigOpt = None,
    index: Annotated[str | None, typer.Option("--index", help="Only this index's impressions and events.")] = None,
    since: Annotated[
        str | None, typer.Option("--since", help="Only what is this recent: ISO date/time, or an age (30d, 12h).")
    ] = None,
) -> None:
    """Write the search and suggest impressions as UBI `queries` and the click, conversion and view records as
    UBI `events` (one JSON document per line); Sift's extras (index, features, exploration, teams, ids) go in
    the attributes, so `sift clicks import --format ubi` reads them back unchanged."""
    from search.logs.ubi import event_documents, query_document

    if fmt != "ubi":
        raise _fail(f"--format must be ubi, not {fmt!r}")
    start = parse_since(since)
    if out.exists() and not out.is_dir():
        raise _fail(f"{out} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    counts = {"queries": 0, "events": 0, "records": 0}
    with open_logs(config) as (_, qlog, clog):
        shown: dict[str, Any] = {}  # query_id → impression, to place conversions sent without positions
        with open(out / "queries.ndjson", "w", encoding="utf-8") as fq:
            for imp in qlog.read(start):
                if imp.type not in ("search", "suggest") or (index is not None and imp.index != index):
                    continue
                fq.write(json.dumps(query_document(imp), ensure_ascii=False) + "\n")
                counts["queries"] += 1
                if imp.query_id:
                    shown[imp.query_id] = imp.model_copy(update={"features": None})
        with open(out / "events.ndjson", "w", encoding="utf-8") as fe:
            for rec in clog.read(start):
                if index is not None and rec.index != index:
                    continue
                for doc in event_documents(rec, shown.get(rec.query_id)):
                    fe.write(json.dumps(doc, ensure_ascii=False) + "\n")
                    counts["events"] += 1
                counts["records"] += 1
    typer.echo(json.dumps({"out": str(out), **counts}))


def with_replayed_features(imps: list[Any], config: Path | None, index: str | None) -> list[Any]:
    """The impressions, those without logged features (imported ones) given features replayed against the
    current index (training.feature_replay); nothing is loaded when every impression has its features."""
    from training.feature_replay import needs_replay, replay_features

    if not needs_replay(imps):
        return imps
    from search.settings import Settings
    from serving.local import local_backend

    cfg = _app_config(config)
    backend = local_backend(cfg, Settings())
    try:
        out, report = replay_features(imps, backend.service, index or cfg.search.default_index)
    except Exception as exc:
        raise _fail(f"replaying the features of imported impressions failed: {exc}", 1) from exc
    finally:
        backend.suggest.close()
        backend.store.close()
    print(f"replayed features: {report.model_dump_json()}", file=sys.stderr)
    return out
