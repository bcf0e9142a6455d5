"""Faults around `sift index`: while a build runs, a second one fails fast naming it; SIGKILL leaves the alias on
the old version and a stale lock that the rerun takes over at once (its holder's pid is dead on this host).
The end-to-end run is on Elasticsearch (the CLI path is the same for both stores); the dead-holder takeover is
checked on both."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from indexing.pipeline import IndexingPipeline
from search.settings import Settings
from search.stores.base import IndexStore
from search.stores.factory import make_store
from tests.test_crash_safety import sift
from tests.test_pipeline import corpus, make_config, write_jsonl

HOLD_AND_DIE = """
import os, sys
from search.settings import Settings
from search.stores.factory import make_store
store = make_store(sys.argv[1], Settings(_env_file=None, data_dir=sys.argv[2], elasticsearch_url=sys.argv[3] or None))
lock = store.acquire_build_lock(sys.argv[4], "doomed-build", 120)
print(lock.lease.pid, flush=True)
os._exit(0)  # dies holding the lock, as a SIGKILLed build does
"""


@pytest.mark.parametrize("kind", ["embedded", pytest.param("es", marks=pytest.mark.es)])
def test_dead_holder_lock_taken_over_at_once(
    kind: str, tmp_path: Path, index_name: str, request: pytest.FixtureRequest
) -> None:
    url = request.getfixturevalue("es_url") if kind == "es" else ""
    args = [kind, str(tmp_path / "data"), url, index_name]
    dead = subprocess.run([sys.executable, "-c", HOLD_AND_DIE, *args], capture_output=True, text=True, timeout=120)
    assert dead.returncode == 0, dead.stderr
    settings = Settings(_env_file=None, data_dir=tmp_path / "data", elasticsearch_url=url or None)  # type: ignore[call-arg]
    store = make_store(kind, settings)  # type: ignore[arg-type]
    try:
        lock = store.acquire_build_lock(index_name, "rerun", 60)  # its 120 s lease is not over: the dead pid is
        assert lock.lease.owner == "rerun" and str(lock.lease.pid) != dead.stdout.strip()
        lock.release()
    finally:
        store.close()


@pytest.mark.slow
@pytest.mark.es
@pytest.mark.parametrize("kind", ["es"])
def test_concurrent_build_fails_fast_and_killed_build_is_taken_over(
    kind: str, tmp_path: Path, index_name: str, tiny_embedder_path: Path, request: pytest.FixtureRequest
) -> None:
    env = dict(os.environ, SIFT_DATA_DIR=str(tmp_path / "data"), SIFT_CACHE_DIR=str(tmp_path / "cache"))
    env["ELASTICSEARCH_URL"] = request.getfixturevalue("es_url")
    settings = Settings(_env_file=None, data_dir=tmp_path / "data", elasticsearch_url=env.get("ELASTICSEARCH_URL"))  # type: ignore[call-arg]
    store: IndexStore = make_store(kind, settings)  # type: ignore[arg-type]
    common = ["--index", index_name, "--store", kind, "--model", str(tiny_embedder_path), "--no-progress"]
    running = None
    try:
        v1 = IndexingPipeline(store, None, make_config(tmp_path, embed=False)).build(
            write_jsonl(tmp_path / "old.jsonl", corpus(30, "old")), index_name
        )
        big = write_jsonl(tmp_path / "big.jsonl", corpus(3000, "big"))
        running = sift(["index", "--source", str(big), "--batch-size", "5", *common], env)
        assert running.stderr is not None
        deadline = time.monotonic() + 300
        for line in running.stderr:
            if "batch written" in line:
                break
            assert time.monotonic() < deadline, "no batch written in time"

        # A second build of the same index, meanwhile: refused at once, naming the running one.
        second = sift(["index", "--source", str(big), "--no-embed", *common], env)
        _, err = second.communicate(timeout=120)
        assert second.returncode == 1, err
        assert "is being built by" in err and f"pid {running.pid}" in err
        assert running.poll() is None, "the first build ended before the second one tried"

        running.send_signal(signal.SIGKILL)
        running.wait(timeout=30)
        assert store.current_version(index_name) == v1.version and store.count(index_name) == 30

        # The rerun takes the dead build's lock over without waiting for its lease (120 s) to expire.
        started = time.monotonic()
        new = write_jsonl(tmp_path / "new.jsonl", corpus(50, "new"))
        rerun = sift(["index", "--source", str(new), "--no-embed", *common], env)
        out, err = rerun.communicate(timeout=300)
        assert rerun.returncode == 0, err
        assert time.monotonic() - started < 100
        report = json.loads(out)
        assert report["indexed"] == 50 and report["alias_switched"]
        assert store.current_version(index_name) == report["version"] and store.count(index_name) == 50
        assert {v.version for v in store.list_versions(index_name)} == {v1.version, report["version"]}
    finally:
        if running is not None and running.poll() is None:
            running.kill()
            running.wait(timeout=30)
        store.client.indices.delete(index=f"{index_name}-v*", ignore_unavailable=True, allow_no_indices=True)  # type: ignore[attr-defined]
        store.close()
