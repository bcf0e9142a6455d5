"""Import path for `serve run serving.entrypoint:app` and KubeRay's RayService, configured by the YAML file
named in SIFT_CONFIG (AppConfig defaults otherwise)."""

from __future__ import annotations

import os

from serving.app import build_app
from serving.config import AppConfig

_path = os.environ.get("SIFT_CONFIG")
app = build_app(AppConfig.load(_path) if _path else AppConfig())
