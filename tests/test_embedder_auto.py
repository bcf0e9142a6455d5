"""`backend: auto`: the fast encoder (ONNX int8) where there is no accelerator, torch where there is one; the demo's
server and its indexing config resolve to the same encoder, so their vectors never mix."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from models.embedder import EmbedderConfig
from serving.config import AppConfig

REPO = Path(__file__).resolve().parents[1]


def test_auto_is_onnx_int8_on_a_cpu_only_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIFT_DEVICE", "cpu")
    cfg = EmbedderConfig(backend="auto")
    assert (cfg.backend, cfg.quantize, cfg.encoder_tag) == ("onnx", "int8", "onnx-int8")


def test_auto_is_torch_where_there_is_an_accelerator(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIFT_DEVICE", "cuda")
    cfg = EmbedderConfig(backend="auto")
    assert (cfg.backend, cfg.quantize, cfg.encoder_tag) == ("torch", "none", "")


def test_auto_keeps_an_explicit_quantize(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIFT_DEVICE", "cpu")
    assert EmbedderConfig(backend="auto", quantize="none").encoder_tag == "onnx-none"
    monkeypatch.setenv("SIFT_DEVICE", "cuda")
    with pytest.raises(ValueError, match="int8 needs backend: onnx"):
        EmbedderConfig(backend="auto", quantize="int8")


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_demo_server_and_demo_index_resolve_alike(monkeypatch: pytest.MonkeyPatch, device: str) -> None:
    monkeypatch.setenv("SIFT_DEVICE", device)
    served = AppConfig.load(REPO / "configs" / "demo.yaml").embedder
    indexed = EmbedderConfig.model_validate(
        yaml.safe_load((REPO / "configs" / "demo-indexing.yaml").read_text())["embedder"]
    )
    assert served.encoder_tag == indexed.encoder_tag == ("onnx-int8" if device == "cpu" else "")
    assert AppConfig.load(REPO / "configs" / "demo.yaml").search.retrieval.fusion == "linear"
