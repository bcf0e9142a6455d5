"""`sift reindex`: bad options are refused with a message (exit 2); the local engine builds and swaps."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sift.cli import app


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SIFT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("SIFT_CACHE_DIR", str(tmp_path / "cache"))
    src = tmp_path / "docs.jsonl"
    rows = [{"id": f"d{i}", "title": f"title {i}", "text": f"body about topic {i % 3}"} for i in range(12)]
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return src


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--engine", "spark"], "--engine must be 'ray' or 'local'"),
        (["--quantize", "int8"], "int8 needs backend: onnx"),
        (["--backend", "tensorrt"], "backend"),
        (["--store", "solr"], "--store must be"),
    ],
)
def test_bad_options_exit_2_with_a_message(env: Path, args: list[str], message: str) -> None:
    result = CliRunner().invoke(app, ["reindex", "--source", str(env), "--index", "x", *args])
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_missing_source_exits_2(env: Path) -> None:
    result = CliRunner().invoke(app, ["reindex", "--source", str(env.parent / "nope.jsonl")])
    assert result.exit_code == 2 and "source not found" in result.output


def test_local_engine_with_onnx_int8_builds_and_swaps(env: Path, tiny_embedder_path: Path, tmp_path: Path) -> None:
    args = ["reindex", "--source", str(env), "--index", "cli", "--engine", "local", "--no-progress"]
    args += ["--model", str(tiny_embedder_path), "--backend", "onnx", "--quantize", "int8"]
    result = CliRunner().invoke(app, [*args, "--report", str(tmp_path / "r.json")])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["indexed"] == 12 and report["alias_switched"] and report["encoded"] == report["chunks"] > 0
    assert list((tmp_path / "cache").rglob("model-int8.onnx"))


def test_rayjob_manifest_runs_a_valid_reindex_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shlex

    import yaml

    k8s = Path(__file__).resolve().parent.parent / "k8s"
    job = yaml.safe_load((k8s / "rayjob-reindex.yaml").read_text())
    argv = shlex.split(job["spec"]["entrypoint"])
    assert argv[:4] == ["sift", "reindex", "--engine", "ray"]
    # Every option parses (an unknown one would say "No such option"); only the cluster's paths are missing here.
    argv = [str(tmp_path / "absent") if a == "/data/corpus" else a for a in argv]
    monkeypatch.setenv("SIFT_DATA_DIR", str(tmp_path))
    result = CliRunner().invoke(app, argv[1:])
    assert result.exit_code == 2 and "source not found" in result.output, result.output
    cluster = job["spec"]["rayClusterSpec"]
    assert cluster["headGroupSpec"]["rayStartParams"]["dashboard-host"] == "127.0.0.1"
    groups = {g["groupName"]: g for g in cluster["workerGroupSpecs"]}
    gpu = groups["gpu"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert set(groups) == {"cpu", "gpu"} and gpu["nvidia.com/gpu"] == "1"
    texts = [(k8s / f).read_text() for f in ("rayjob-reindex.yaml", "cronjob-reindex.yaml")]
    images = [line.split("image:")[1].strip() for t in texts for line in t.splitlines() if "image:" in line]
    assert images and all(":" in i and not i.endswith(":latest") for i in images)
    cron = next(d for d in yaml.safe_load_all(texts[1]) if d["kind"] == "CronJob")
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert "rayjob-reindex.yaml" in " ".join(pod["containers"][0]["args"])
