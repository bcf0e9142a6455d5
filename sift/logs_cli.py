"""`sift logs export`: the query log and click log written out as User Behavior Insights (UBI 1.3.0) NDJSON
(logs.transfer.export_ubi); and the feature replay of imported impressions before `sift train ranker`."""

from __future__ import annotations

import json
import re
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer

from sift.cli_common import ConfigOpt, _app_config, _fail, _logs_config

logs_app = typer.Typer(no_args_is_help=True, help="The query and click logs: export them.")


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
    from logs.access import NoClickLog
    from logs.transfer import export_ubi

    if fmt != "ubi":
        raise _fail(f"--format must be ubi, not {fmt!r}")
    start = parse_since(since)
    cfg = _logs_config(config)
    try:
        counts = export_ubi(cfg, out, index, start)
    except (NoClickLog, ValueError) as exc:
        raise _fail(str(exc)) from exc
    typer.echo(json.dumps(counts))


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
