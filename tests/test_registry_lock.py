"""The live pointer's read-modify-write is locked: concurrent `set_live` calls (threads of one process, and
separate processes) lose no history entry, and a promotion whose live version changed meanwhile changes nothing."""

from __future__ import annotations

import multiprocessing
import threading
from pathlib import Path

import pytest

from models.registry import ModelCard, Registry, RegistryError

THREADS = 16
PROCESSES = 4
PER_PROCESS = 8


def _card(version: str) -> ModelCard:
    return ModelCard(kind="ranker", version=version, data_hash="cd" * 32)


def _register(reg: Registry, versions: list[str]) -> None:
    for v in versions:
        reg.register(_card(v), lambda folder: (folder / "w.bin").write_text("w"))


def _every_version_once(reg: Registry, versions: list[str]) -> None:
    """Each set_live moved the previous live version into the history: all of them are there, once each."""
    ptr = reg.pointer("ranker")
    assert ptr.live is not None
    assert sorted([*ptr.history, ptr.live]) == sorted(versions), (len(ptr.history), len(versions))


def test_threads_setting_live_lose_no_history(tmp_path: Path) -> None:
    reg = Registry(tmp_path)
    versions = [f"t{i:02d}" for i in range(THREADS)]
    _register(reg, versions)
    start = threading.Barrier(THREADS)
    errors: list[BaseException] = []

    def promote(version: str) -> None:
        try:
            start.wait()
            Registry(tmp_path).set_live("ranker", version, "test")  # a registry object per caller, as in a CLI
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    workers = [threading.Thread(target=promote, args=(v,)) for v in versions]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=60)
    assert not errors
    _every_version_once(reg, versions)


def _promote_many(root: str, versions: list[str], start: multiprocessing.synchronize.Event) -> None:
    start.wait(30)
    reg = Registry(root)
    for v in versions:
        reg.set_live("ranker", v, "test")


def test_processes_setting_live_lose_no_history(tmp_path: Path) -> None:
    reg = Registry(tmp_path)
    batches = [[f"p{p}-{i:02d}" for i in range(PER_PROCESS)] for p in range(PROCESSES)]
    _register(reg, [v for b in batches for v in b])
    ctx = multiprocessing.get_context("fork")
    start = ctx.Event()
    procs = [ctx.Process(target=_promote_many, args=(str(tmp_path), b, start)) for b in batches]
    for p in procs:
        p.start()
    start.set()
    for p in procs:
        p.join(timeout=60)
    assert [p.exitcode for p in procs] == [0] * PROCESSES
    _every_version_once(reg, [v for b in batches for v in b])


def test_rollback_under_lock_and_compare_and_swap(tmp_path: Path) -> None:
    reg = Registry(tmp_path)
    _register(reg, ["a", "b", "c"])
    reg.set_live("ranker", "a", "first", expect_live=(None,))
    with pytest.raises(RegistryError, match="changed meanwhile"):
        reg.set_live("ranker", "b", "stale gate", expect_live=(None,))
    assert reg.live("ranker") == "a"
    reg.set_live("ranker", "b", "gate saw a", expect_live=("a",))
    reg.set_live("ranker", "c", "no check")
    assert reg.rollback("ranker") == "b" and reg.pointer("ranker").history == ["a"]
    assert (tmp_path / "ranker" / ".LIVE.lock").is_file() and [c.version for c in reg.versions("ranker")] == [
        "a",
        "b",
        "c",
    ]
    with pytest.raises(RegistryError, match="no live encoder"):
        reg.rollback("encoder")
    assert not (tmp_path / "encoder").exists()
