"""The ONNX Runtime encoder backend: same vectors as torch (fp32 and int8), exported once, never mixed in the cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from models.embedder import CachedEmbedder, EmbedderConfig, EmbeddingCache, SentenceTransformerEmbedder

TEXTS = [
    "How do I read a file line by line?",
    "The garbage collector frees objects that are no longer referenced.",
    "Exceptions propagate up the call stack until a handler catches them.",
    "short",
    "A much longer sentence about dictionaries, their keys and values, and how iteration order is kept " * 3,
]


@pytest.fixture
def onnx_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SIFT_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _embedder(path: Path, **kw: str) -> SentenceTransformerEmbedder:
    return SentenceTransformerEmbedder(EmbedderConfig(model=str(path), device="cpu", **kw))  # type: ignore[arg-type]


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_onnx_fp32_and_int8_match_torch(tiny_embedder_path: Path, onnx_cache: Path) -> None:
    torch_vecs = _embedder(tiny_embedder_path).embed(TEXTS)
    fp32 = _embedder(tiny_embedder_path, backend="onnx")
    int8 = _embedder(tiny_embedder_path, backend="onnx", quantize="int8")
    fp32_vecs, int8_vecs = fp32.embed(TEXTS), int8.embed(TEXTS)
    assert fp32_vecs.shape == int8_vecs.shape == torch_vecs.shape
    assert _cosines(torch_vecs, fp32_vecs).min() > 0.99
    assert _cosines(torch_vecs, int8_vecs).min() > 0.95
    np.testing.assert_allclose(np.linalg.norm(int8_vecs, axis=1), 1.0, atol=1e-5)
    # Batch composition must not change a vector (padding is masked out of the mean).
    np.testing.assert_allclose(fp32.embed(TEXTS[:1])[0], fp32_vecs[0], atol=1e-5)
    assert fp32.dims == int8.dims == torch_vecs.shape[1]
    assert fp32.max_tokens == _embedder(tiny_embedder_path).max_tokens


def test_export_is_cached_on_disk(tiny_embedder_path: Path, onnx_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = _embedder(tiny_embedder_path, backend="onnx", quantize="int8")
    first.warm_up()
    files = sorted(onnx_cache.rglob("*.onnx"))
    assert [f.name for f in files] == ["model-int8.onnx", "model.onnx"]
    stamps = {f: f.stat().st_mtime_ns for f in files}
    import sentence_transformers

    def refuse(*_: object, **__: object) -> None:
        raise AssertionError("a cached export loads without the torch model")

    monkeypatch.setattr(sentence_transformers, "SentenceTransformer", refuse)
    second = _embedder(tiny_embedder_path, backend="onnx", quantize="int8")
    second.warm_up()  # loads the files, exports nothing, reads pooling and window from the folder
    assert {f: f.stat().st_mtime_ns for f in sorted(onnx_cache.rglob("*.onnx"))} == stamps
    np.testing.assert_array_equal(first.embed(TEXTS), second.embed(TEXTS))
    assert (second.dims, second.max_tokens) == (first.dims, first.max_tokens)


def test_a_folder_whose_tokenizer_lowercases_always_loads_the_model(
    tiny_embedder_path: Path, onnx_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """sentence-transformers lower-cases for `do_lower_case`; the plain tokenizer would not: no fast start then."""
    import json
    import shutil

    import sentence_transformers

    folder = tmp_path / "lower"
    shutil.copytree(tiny_embedder_path, folder)
    cfg = folder / "sentence_bert_config.json"
    cfg.write_text(json.dumps({**json.loads(cfg.read_text()), "do_lower_case": True}))
    _embedder(folder, backend="onnx").warm_up()  # exports, writes the settings
    loads = []
    real = sentence_transformers.SentenceTransformer

    def counted(*a: object, **k: object) -> object:
        loads.append(1)
        return real(*a, **k)

    monkeypatch.setattr(sentence_transformers, "SentenceTransformer", counted)
    again = _embedder(folder, backend="onnx")
    again.warm_up()
    assert loads == [1]
    assert np.allclose(again.embed(["Mixed CASE words"]), again.embed(["mixed case words"]), atol=1e-5)


def test_cache_keys_differ_by_backend_and_quantization(
    tiny_embedder_path: Path, onnx_cache: Path, tmp_path: Path
) -> None:
    cache = EmbeddingCache(tmp_path / "emb.sqlite")
    encoders = {
        "torch": CachedEmbedder(_embedder(tiny_embedder_path), cache),
        "onnx": CachedEmbedder(_embedder(tiny_embedder_path, backend="onnx"), cache),
        "int8": CachedEmbedder(_embedder(tiny_embedder_path, backend="onnx", quantize="int8"), cache),
    }
    assert len({e.model_id for e in encoders.values()}) == 3
    vecs = {name: e.embed(TEXTS) for name, e in encoders.items()}
    # Each encoder missed on its own: a vector of one backend is never served for another.
    assert all(e.misses == len(TEXTS) and e.hits == 0 for e in encoders.values())
    assert not np.array_equal(vecs["torch"], vecs["int8"])
    again = CachedEmbedder(_embedder(tiny_embedder_path, backend="onnx", quantize="int8"), cache)
    np.testing.assert_array_equal(again.embed(TEXTS), vecs["int8"])
    assert again.hits == len(TEXTS) and again.misses == 0


def test_int8_without_onnx_is_refused() -> None:
    with pytest.raises(ValidationError, match="int8 needs backend: onnx"):
        EmbedderConfig(quantize="int8")
    with pytest.raises(ValidationError):
        EmbedderConfig(backend="tensorrt")  # type: ignore[arg-type]


def test_serving_config_takes_the_backend(tiny_embedder_path: Path, onnx_cache: Path, tmp_path: Path) -> None:
    """The query encoder is built from the app config's `embedder`, so it can run the same backend as the index."""
    from serving.config import AppConfig

    cfg_file = tmp_path / "app.yaml"
    cfg_file.write_text(f"embedder:\n  model: {tiny_embedder_path}\n  backend: onnx\n  quantize: int8\n")
    cfg = AppConfig.load(cfg_file)
    query_encoder = SentenceTransformerEmbedder(cfg.embedder)
    assert "|onnx-int8|" in query_encoder.model_id
    index_encoder = _embedder(tiny_embedder_path, backend="onnx", quantize="int8")
    np.testing.assert_array_equal(query_encoder.embed(["a query"]), index_encoder.embed(["a query"]))
