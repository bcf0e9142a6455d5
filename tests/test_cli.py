"""The `sift` command end to end (in-process via typer's runner): index, incremental, versions, search."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sift.cli import app
from tests.test_pipeline import corpus, write_jsonl


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SIFT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("SIFT_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path


def invoke(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.stdout


def test_index_incremental_versions_search(env: Path, tiny_embedder_path: Path) -> None:
    src = write_jsonl(env / "a.jsonl", corpus(20))
    model = ["--model", str(tiny_embedder_path)]
    report = json.loads(invoke("index", "--source", str(src), "--index", "cli", "--no-progress", "--quiet", *model))
    assert report["indexed"] == 20 and report["alias_switched"]
    ids = env / "ids.txt"
    ids.write_text("doc1\ndoc2\n\n")
    upd = write_jsonl(env / "b.jsonl", [{"id": "x1", "title": "Decorators", "text": "wrap functions"}])
    report = json.loads(
        invoke(
            "index",
            "--incremental",
            "--source",
            str(upd),
            "--delete-ids",
            str(ids),
            "--index",
            "cli",
            "--no-progress",
            "--quiet",
            *model,
        )
    )
    assert report["mode"] == "incremental" and report["indexed"] == 1 and report["deleted"] == 2
    versions = invoke("versions", "--index", "cli")
    assert versions.startswith("* cli-v") and "count=19" in versions
    out = json.loads(invoke("search", "decorators", "--index", "cli", "--mode", "bm25", "--json"))
    assert out[0]["id"] == "x1"
    out = invoke("search", "decorators", "--index", "cli", "--model", str(tiny_embedder_path))
    assert "Decorators" in out


def test_errors_are_clear(env: Path) -> None:
    runner = CliRunner()
    r = runner.invoke(app, ["index", "--source", str(env / "missing.jsonl"), "--index", "x"])
    assert r.exit_code == 2 and "source not found" in r.output
    r = runner.invoke(app, ["index", "--source", str(env), "--index", "Bad Name", "--no-embed"])
    assert r.exit_code != 0 and "invalid index name" in r.output
    r = runner.invoke(app, ["search", "q", "--index", "nothing-here", "--mode", "bm25"])
    assert r.exit_code == 2 and "does not exist" in r.output
    r = runner.invoke(app, ["index", "--source", str(env), "--index", "x", "--store", "mongo"])
    assert r.exit_code == 2 and "--store must be" in r.output
    r = runner.invoke(app, ["eval-suggest", "--term-coverage-of", "typed", "--no-lm"])
    assert r.exit_code == 2 and "'typed' is not one of" in r.output
    r = runner.invoke(app, ["eval-suggest", "--dataset", str(env), "--term-coverage-of", "candidate", "--no-lm"])
    assert r.exit_code == 2 and "has no queries_train.jsonl" in r.output


def test_demo_corpus_command(env: Path) -> None:
    out = env / "demo.jsonl"
    assert "wrote 50 documents" in invoke("demo-corpus", "--out", str(out), "--limit", "50")
    assert len(out.read_text().splitlines()) == 50
