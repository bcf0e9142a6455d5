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
