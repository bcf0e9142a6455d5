"""Import path for `serve run serving.entrypoint:app config=FILE` and KubeRay's RayService: a Serve
application builder, configured by its `args:` (the AppConfig YAML file; AppConfig defaults without one)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from ray.serve.deployment import Application

from search.settings import Settings
from serving.builder import build_app
from serving.config import AppConfig


class EntrypointArgs(BaseModel):
    """The `args:` of the Serve application (serveConfigV2) or `serve run ... key=value`."""

    model_config = ConfigDict(extra="forbid")

    config: Path | None = Field(default=None, description="AppConfig YAML file; AppConfig defaults when omitted.")


def app(args: dict[str, Any]) -> Application:
    """Serve calls this with the application's `args`; the process settings come from its environment."""
    parsed = EntrypointArgs.model_validate(args)
    config = AppConfig.load(parsed.config) if parsed.config else AppConfig()
    return build_app(config, Settings())
