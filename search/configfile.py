"""Loading component configs from YAML, with errors that name the file and the field."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


class ConfigError(ValueError):
    pass


def read_mapping(path: Path | str) -> dict[str, Any]:
    """The YAML file's top-level mapping; ConfigError (naming the file) when it is missing or not a mapping."""
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except FileNotFoundError as exc:
        raise ConfigError(f"config file not found: {p}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: invalid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping at the top level")
    return data


def load_config(path: Path | str, model: type[M], keys: Iterable[str] | None = None) -> M:
    """`model` from a YAML file; with `keys`, from those top-level keys only (the file's others belong to another
    reader, as the server's keys do to a job that reads only the logs' ones)."""
    data = read_mapping(path)
    if keys is not None:
        data = {k: data[k] for k in keys if k in data}
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{Path(path)}: {exc}") from exc
