"""What every `sift` command module shares: the one error exit, the `--config` option, the configs read from
it, and the logs read through the library (logs.access) with its errors turned into exit codes."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from sift.exit_codes import USAGE

ConfigOpt = Annotated[Path | None, typer.Option("--config", help="AppConfig YAML (where the logs are).")]


def _fail(msg: str, code: int = USAGE) -> typer.Exit:
    """Print `error: msg` on stderr and return the exit to raise (docs/cli-exit-codes.md)."""
    typer.secho(f"error: {msg}", fg=typer.colors.RED, err=True)
    return typer.Exit(code)


def _app_config(path: Path | None) -> Any:
    """The whole server config (serving.config.AppConfig): for commands that build the service."""
    from search.configfile import ConfigError
    from serving.config import AppConfig

    try:
        return AppConfig.load(path) if path else AppConfig()
    except ConfigError as exc:
        raise _fail(str(exc)) from exc


def _logs_config(path: Path | None) -> Any:
    """Only the logs' keys of the config file (logs.config.LogsConfig): commands that read or write
    the logs and nothing else need no server config."""
    from logs.config import LogsConfig
    from search.configfile import ConfigError

    try:
        return LogsConfig.load(path) if path else LogsConfig()
    except ConfigError as exc:
        raise _fail(str(exc)) from exc


def read_logs(config: Path | None, index: str | None = None) -> tuple[list[Any], list[Any]]:
    """Search impressions (of `index`, if given) and click records from the logs the config names."""
    from logs import access

    try:
        return access.read_logs(_logs_config(config), index)
    except access.NoClickLog as exc:
        raise _fail(f"{exc}: there are no clicks to read") from exc


def load_sessions(
    config: Path | None, index: str | None, depth: int | None = None, minimum: int | None = None
) -> tuple[list[Any], list[Any]]:
    """Impressions and their sessions from the logs, or exit 1 when there are too few to learn from."""
    from training.click_data import DEFAULT_DEPTH
    from training.jobs import MIN_SESSIONS, TooFewSessions, training_sessions

    imps, clicks = read_logs(config, index)
    try:
        return imps, training_sessions(imps, clicks, index, depth or DEFAULT_DEPTH, minimum or MIN_SESSIONS)
    except TooFewSessions as exc:
        raise _fail(str(exc), 1) from exc
