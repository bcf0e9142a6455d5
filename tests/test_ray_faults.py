"""Faults in `sift reindex --engine ray`, each run starting its own local Ray as a batch job does: an encoder
actor SIGKILLed mid-run (Ray Data restarts it and the build completes), the driver SIGKILLed mid-run (Ray's
processes die with it; the alias stays and a rerun completes, encoding only what the killed run had not cached),
and a store refusing 30% of records with 429 (retried to a swap, or the build fails with the alias unchanged)."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from indexing.pipeline import IndexingPipeline
from indexing.ray_engine import RayEngineConfig, RayIndexingPipeline
from models.embedder import Embedder
from models.ray_session import shutdown_ray
from search.settings import Settings
from search.stores.factory import make_store
from tests.test_build_safety import Refusing
from tests.test_crash_safety import sift
from tests.test_pipeline import corpus, make_config, write_jsonl

pytestmark = pytest.mark.slow


def _wait_for_writes(p: object, timeout: float = 300) -> None:
    """Reads the run's stderr until its first bulk write is logged (it is mid-run from then on)."""
    deadline = time.monotonic() + timeout
    for line in p.stderr:  # type: ignore[attr-defined]
        if "batch written" in line:
            return
        assert time.monotonic() < deadline, "no batch written in time"
    raise AssertionError("the run ended before writing a batch")


def _encoder_actors(pid: int) -> list[psutil.Process]:
    found = []
    for c in psutil.Process(pid).children(recursive=True):
        try:
            if "EncodeActor" in " ".join(c.cmdline()) or "EncodeActor" in c.name():
                found.append(c)
        except psutil.Error:
            continue
    return found


def _ray_processes(pid: int) -> list[psutil.Process]:
    return [c for c in psutil.Process(pid).children(recursive=True) if c.is_running()]


def _setup(tmp_path: Path, index_name: str, tiny: Path) -> tuple[dict[str, str], list[str], object, str]:
    env = dict(os.environ, SIFT_DATA_DIR=str(tmp_path / "data"), SIFT_CACHE_DIR=str(tmp_path / "cache"))
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    store = make_store("embedded", Settings(_env_file=None, data_dir=tmp_path / "data"))  # type: ignore[call-arg]
    old = IndexingPipeline(store, None, make_config(tmp_path, embed=False)).build(
        write_jsonl(tmp_path / "old.jsonl", corpus(30, "old")), index_name
    )
    common = ["--index", index_name, "--store", "embedded", "--model", str(tiny), "--no-progress", "--verbose"]
    common += ["--engine", "ray", "--num-cpus", "2", "--encode-batch", "16", "--batch-size", "50"]
    return env, common, store, old.version


def test_killed_encoder_actor_or_driver_then_rerun(tmp_path: Path, index_name: str, tiny_embedder_path: Path) -> None:
    env, common, store, v1 = _setup(tmp_path, index_name, tiny_embedder_path)
    new = write_jsonl(tmp_path / "new.jsonl", corpus(4000, "new"))
    running = None
    try:
        # 1. An encoder actor dies mid-run: Ray Data restarts it and retries its batch; the alias serves the old
        #    version until the complete new one is swapped in.
        running = sift(["reindex", "--source", str(new), *common], env)
        _wait_for_writes(running)
        victims = _encoder_actors(running.pid)
        assert victims, "no encoder actor found under the driver"
        victims[0].send_signal(signal.SIGKILL)
        assert store.current_version(index_name) == v1 and store.count(index_name) == 30  # type: ignore[attr-defined]
        out, err = running.communicate(timeout=600)
        assert running.returncode == 0 and out.strip(), err[-3000:]
        report = _report(out)
        assert report["indexed"] == 4000 and report["alias_switched"] and report["dead_lettered"] == 0
        assert store.current_version(index_name) == report["version"] and store.count(index_name) == 4000  # type: ignore[attr-defined]
        v1 = report["version"]

        # 2. The driver dies mid-run (its local Ray goes with it): the alias stays, nothing keeps running.
        newer = write_jsonl(tmp_path / "newer.jsonl", corpus(4000, "newer"))
        running = sift(["reindex", "--source", str(newer), *common], env)
        _wait_for_writes(running)
        ray_procs = _ray_processes(running.pid)
        running.send_signal(signal.SIGKILL)
        running.wait(timeout=30)
        assert running.returncode == -signal.SIGKILL, "the build finished before it could be killed"
        assert store.current_version(index_name) == v1  # type: ignore[attr-defined]
        _, alive = psutil.wait_procs(ray_procs, timeout=30)
        core = [p.name() for p in alive if not p.name().endswith("Agent")]
        assert not core, f"Ray's core processes outlived their driver: {core}"

        # 3. The rerun takes the dead driver's lock over, reuses what it encoded, and swaps.
        started = time.monotonic()
        rerun = sift(["reindex", "--source", str(newer), *common], env)
        out, err = rerun.communicate(timeout=600)
        assert rerun.returncode == 0 and out.strip(), err[-3000:]
        assert time.monotonic() - started < 300
        report = _report(out)
        assert report["indexed"] == 4000 and report["alias_switched"]
        assert report["cache_hits"] > 0, "the rerun encoded everything again"
        assert store.current_version(index_name) == report["version"] and store.count(index_name) == 4000  # type: ignore[attr-defined]
        # Ray's agents notice their raylet is gone and exit after failing to report it to the (dead) GCS.
        _, alive = psutil.wait_procs(ray_procs, timeout=150)
        assert not alive, f"Ray processes outlived their driver: {[p.name() for p in alive]}"
    finally:
        if running is not None and running.poll() is None:
            running.kill()
            running.wait(timeout=30)
        store.close()  # type: ignore[attr-defined]


@pytest.mark.parametrize("times", [2, None], ids=["retried-to-success", "refused-for-good"])
def test_ray_engine_under_429s(
    times: int | None, tmp_path: Path, index_name: str, tiny_embedder: Embedder, tiny_embedder_path: Path
) -> None:
    """30% of records refused with 429 (`times` attempts each, None: always): retried with backoff to a swap,
    or the build fails, nothing dead-lettered, and the alias stays."""

    store = make_store("embedded", Settings(_env_file=None, data_dir=tmp_path / "data"))  # type: ignore[call-arg]
    first = IndexingPipeline(store, None, make_config(tmp_path, embed=False)).build(
        write_jsonl(tmp_path / "old.jsonl", corpus(10, "old")), index_name
    )
    busy = Refusing(store, share=0.3, times=times)
    cfg = make_config(tmp_path, write_retries=3, retry_backoff_s=0.01)
    cfg.embedder = cfg.embedder.model_copy(update={"model": str(tiny_embedder_path), "device": "cpu"})
    rc = RayEngineConfig(encoder_actors=1, encoder_num_cpus=0.5, num_cpus=2, object_store_mb=200)
    src = write_jsonl(tmp_path / "new.jsonl", corpus(120, "new"))
    try:
        pipeline = RayIndexingPipeline(busy, tiny_embedder, cfg, rc)  # type: ignore[arg-type]
        if times is not None:
            report = pipeline.build(src, index_name)
            assert busy.refused >= 0.2 * 120 * times
            assert report.indexed == 120 and report.dead_lettered == 0 and report.alias_switched
            assert store.count(index_name) == 120
        else:
            from indexing.errors import IndexingError

            with pytest.raises(IndexingError, match="still refused after 3 retries"):
                pipeline.build(src, index_name)
            assert store.current_version(index_name) == first.version and store.count(index_name) == 10
            assert not (tmp_path / "dead").exists() or not any((tmp_path / "dead").iterdir())
    finally:
        shutdown_ray()
        store.close()


def _report(out: str) -> dict[str, Any]:
    """The run's JSON report: stdout must hold nothing else (Ray's messages about the killed worker go to stderr)."""
    try:
        return json.loads(out)
    except json.JSONDecodeError as exc:
        raise AssertionError(f"stdout is not the JSON report: {out[:1500]!r}") from exc
