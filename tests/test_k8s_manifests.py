"""The manifests parse, and what they point at exists in this code base."""

from __future__ import annotations

import importlib
from pathlib import Path

import yaml

K8S = Path(__file__).resolve().parent.parent / "k8s"


def docs() -> list[dict]:  # type: ignore[type-arg]
    return [d for f in sorted(K8S.glob("*.yaml")) for d in yaml.safe_load_all(f.read_text()) if d]


def test_manifests_parse_with_kinds() -> None:
    kinds = {d["kind"] for d in docs()}
    assert {"Elasticsearch", "RayService", "RayJob", "ConfigMap"} <= kinds


def test_rayservice_import_path_and_config(tmp_path: Path) -> None:
    from serving.config import AppConfig

    svc = next(d for d in docs() if d["kind"] == "RayService")
    apps = yaml.safe_load(svc["spec"]["serveConfigV2"])["applications"]
    module, attr = apps[0]["import_path"].split(":")
    cfg_map = next(d for d in docs() if d["kind"] == "ConfigMap")
    cfg_file = tmp_path / "app.yaml"
    cfg_file.write_text(cfg_map["data"]["app.yaml"])
    AppConfig.load(cfg_file)  # the shipped config validates
    mod = importlib.import_module(module)
    assert getattr(mod, attr) is not None
    # The application builder, with the manifest's args pointing at the shipped config, builds the app.
    from ray.serve.deployment import Application

    args = apps[0]["args"]
    assert args["config"] == "/etc/sift/app.yaml"
    assert isinstance(getattr(mod, attr)({**args, "config": str(cfg_file)}), Application)
