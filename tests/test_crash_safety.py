"""SIGKILL to `sift index` halfway leaves the alias on the old complete version; a rerun completes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from search.settings import Settings
from search.stores.base import IndexStore
from search.stores.factory import make_store
from tests.test_pipeline import corpus, write_jsonl


def sift(args: list[str], env: dict[str, str], **kw: object) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "sift.cli", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,  # type: ignore[call-overload]
    )


@pytest.mark.parametrize("kind", ["embedded", pytest.param("es", marks=pytest.mark.es)])
def test_sigkill_midway_then_rerun(
    kind: str, tmp_path: Path, index_name: str, tiny_embedder_path: Path, request: pytest.FixtureRequest
) -> None:
    env = dict(os.environ, SIFT_DATA_DIR=str(tmp_path / "data"), SIFT_CACHE_DIR=str(tmp_path / "cache"))
    if kind == "es":
        env["ELASTICSEARCH_URL"] = request.getfixturevalue("es_url")
    settings = Settings(_env_file=None, data_dir=tmp_path / "data", elasticsearch_url=env.get("ELASTICSEARCH_URL"))  # type: ignore[call-arg]
    store: IndexStore = make_store(kind, settings)  # type: ignore[arg-type]
    common = ["--index", index_name, "--store", kind, "--model", str(tiny_embedder_path), "--no-progress"]
    try:
        old = write_jsonl(tmp_path / "old.jsonl", corpus(30, "old"))
        p = sift(["index", "--source", str(old), *common], env)
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
        v1 = json.loads(out)["version"]
        assert store.current_version(index_name) == v1

        new = write_jsonl(tmp_path / "new.jsonl", corpus(3000, "new"))
        p = sift(["index", "--source", str(new), "--batch-size", "5", *common], env)
        assert p.stderr is not None
        deadline = time.monotonic() + 300
        for line in p.stderr:
            if "batch written" in line:
                break
            assert time.monotonic() < deadline, "no batch written in time"
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=30)
        assert p.returncode == -signal.SIGKILL, "the build finished before it could be killed"

        # Readers still see the old, complete version.
        assert store.current_version(index_name) == v1
        store.refresh(index_name)
        assert store.count(index_name) == 30
        assert store.bm25_search(index_name, "exceptions errors", 3)
        versions = store.list_versions(index_name)
        assert len(versions) == 2 and not versions[1].complete  # the partial one is never served

        p = sift(["index", "--source", str(new), "--batch-size", "200", *common], env)
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err
        report = json.loads(out)
        assert report["indexed"] == 3000 and report["alias_switched"]
        assert store.current_version(index_name) == report["version"]
        assert store.count(index_name) == 3000
        assert {v.version for v in store.list_versions(index_name)} == {v1, report["version"]}
    finally:
        if kind == "es":
            store.client.indices.delete(index=f"{index_name}-v*", ignore_unavailable=True, allow_no_indices=True)  # type: ignore[attr-defined]
        store.close()
