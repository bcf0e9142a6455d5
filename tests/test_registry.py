"""The model registry: versions written once and atomically, the live pointer, the promotion gate, rollback."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from models.registry import LIVE, LIVE_LOCK, LiveWatcher, ModelCard, Registry, RegistryError, version_stamp


def _card(version: str, kind: str = "encoder", **metrics: float) -> ModelCard:
    return ModelCard(kind=kind, version=version, data_hash="ab" * 32, base_model="base", metrics=metrics)


def _write(text: str):  # type: ignore[no-untyped-def]
    def write(folder: Path) -> None:
        (folder / "weights.bin").write_text(text)

    return write


def test_register_writes_once_with_card_and_model_card(tmp_path: Path) -> None:
    reg = Registry(tmp_path)
    path = reg.register(_card("v1", heldout_ndcg10=0.5, nothing=math.nan), _write("w1"))
    assert path == tmp_path / "encoder" / "v1" and (path / "weights.bin").read_text() == "w1"
    card = reg.card("encoder", "v1")
    assert card.metrics["heldout_ndcg10"] == 0.5 and math.isnan(card.metrics["nothing"])  # NaN reads back
    assert "heldout_ndcg10: 0.5" in (path / "README.md").read_text()
    with pytest.raises(RegistryError, match="written once"):
        reg.register(_card("v1"), _write("w2"))
    assert (path / "weights.bin").read_text() == "w1"
    for bad in ("../escape", "a/b", "", ".hidden"):
        with pytest.raises(RegistryError):
            reg.register(_card(bad), _write("x"))
    with pytest.raises(RegistryError, match="unknown model kind"):
        reg.register(_card("v2", kind="tokenizer"), _write("x"))
    stamp = version_stamp("0123456789abcdef", "enc")
    assert stamp.startswith("enc-0123456789-") and stamp != version_stamp("0123456789abcdef", "enc")


def test_a_failed_write_leaves_nothing(tmp_path: Path) -> None:
    reg = Registry(tmp_path)

    def boom(folder: Path) -> None:
        (folder / "half.bin").write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        reg.register(_card("v1"), boom)
    assert list((tmp_path / "encoder").iterdir()) == [] and reg.versions("encoder") == []
    (tmp_path / "encoder" / ".tmp-v9-abc").mkdir()  # a registration killed midway is not a version
    assert reg.versions("encoder") == []
    with pytest.raises(RegistryError, match="no encoder version 'v1'"):
        reg.path("encoder", "v1")


def test_promote_gate_rollback_and_resolve(tmp_path: Path) -> None:
    reg = Registry(tmp_path)
    for v in ("v1", "v2", "v3"):
        reg.register(_card(v), _write(v))
    assert [c.version for c in reg.versions("encoder")] == ["v1", "v2", "v3"]
    scores = {"v1": 0.50, "v2": 0.52, "v3": 0.503}
    calls: list[str | None] = []

    def evaluate(path: Path | None) -> float:
        calls.append(path.name if path else None)
        return 0.45 if path is None else scores[path.name]

    with pytest.raises(RegistryError, match="no live encoder"):
        reg.resolve("registry:encoder")
    first = reg.promote("encoder", "v1", evaluate, margin=0.01)
    assert first.promoted and first.live is None and first.live_score == 0.45 and calls == ["v1", None]
    assert reg.live("encoder") == "v1" and reg.resolve("registry:encoder") == tmp_path / "encoder" / "v1"
    refused = reg.promote("encoder", "v3", evaluate, margin=0.01)  # +0.003 < 0.01
    assert not refused.promoted and "nothing changed" in refused.reason and refused.live == "v1"
    assert reg.live("encoder") == "v1"
    second = reg.promote("encoder", "v2", evaluate, margin=0.01)
    assert second.promoted and second.live_score == 0.50 and reg.live("encoder") == "v2"
    again = reg.promote("encoder", "v2", evaluate, margin=0.01)
    assert not again.promoted and again.reason == "already live"
    assert reg.resolve("registry:encoder@v3") == tmp_path / "encoder" / "v3"
    pointer = json.loads((tmp_path / "encoder" / LIVE).read_text())
    assert pointer["live"] == "v2" and pointer["history"] == ["v1"] and "promoted" in pointer["reason"]
    assert reg.rollback("encoder") == "v1" and reg.live("encoder") == "v1"
    assert reg.rollback("encoder") is None and reg.live("encoder") is None
    with pytest.raises(RegistryError, match="no live encoder to roll back"):
        reg.rollback("encoder")
    with pytest.raises(RegistryError):
        reg.resolve("encoder")
    leftovers = [p.name for p in (tmp_path / "encoder").iterdir() if p.name.startswith(".")]
    assert leftovers == [LIVE_LOCK]  # no temporary pointers: only the (empty) lock file of the pointer


def test_live_watcher_sees_promotions(tmp_path: Path) -> None:
    reg = Registry(tmp_path)
    reg.register(_card("r1", kind="reranker"), _write("r1"))
    seen: list[tuple[str | None, Path | None]] = []
    watcher = LiveWatcher(reg, "reranker", lambda v, p: seen.append((v, p)))
    assert not watcher.check()
    reg.set_live("reranker", "r1", "test")
    assert watcher.check() and seen == [("r1", tmp_path / "reranker" / "r1")]
    assert not watcher.check()
    reg.rollback("reranker")
    assert watcher.check() and seen[-1] == (None, None)


def test_model_config_values_take_registry_references(
    tmp_path: Path, tiny_embedder_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`registry:encoder@V` (or the live version) works wherever a model name does, e.g. `sift index`'s
    embedder, through the one resolver; unknown references fail with the registry's message."""
    import shutil

    import numpy as np

    from models.embedder import EmbedderConfig, SentenceTransformerEmbedder
    from models.references import resolve_model_path
    from models.registry import ModelCard, Registry, RegistryError

    monkeypatch.setenv("SIFT_REGISTRY_DIR", str(tmp_path / "reg"))
    reg = Registry(tmp_path / "reg")
    card = ModelCard(kind="encoder", version="e1", data_hash="0" * 64)
    path = reg.register(card, lambda d: shutil.copytree(tiny_embedder_path, d, dirs_exist_ok=True))
    assert resolve_model_path("registry:encoder@e1") == str(path)
    with pytest.raises(RegistryError, match="no live encoder"):
        resolve_model_path("registry:encoder")
    reg.set_live("encoder", "e1", "test")
    assert resolve_model_path("registry:encoder") == str(path)
    via_ref = SentenceTransformerEmbedder(EmbedderConfig(model="registry:encoder", device="cpu"))
    direct = SentenceTransformerEmbedder(EmbedderConfig(model=str(tiny_embedder_path), device="cpu"))
    assert np.allclose(via_ref.embed(["loops and files"]), direct.embed(["loops and files"]), atol=1e-6)
