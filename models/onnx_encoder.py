"""A sentence-transformers model run by ONNX Runtime, fp32 or int8 (dynamic quantization).

Why: on CPU, ONNX Runtime with int8 weight matrices encodes several times faster than torch fp32, which is
what bounds a reindex. The transformer is exported once with `torch.onnx.export` (no optimum: it would
downgrade transformers), quantized with `onnxruntime.quantization.quantize_dynamic`, and kept on disk under
the cache dir keyed by the model's fingerprint, so every process after the first just loads the file.
Pooling (mean or CLS) and normalisation run in numpy, as the model's own modules do.

`OnnxSentenceEncoder` mimics the parts of `SentenceTransformer` that `SentenceTransformerEmbedder` uses
(`encode`, `tokenizer`, `max_seq_length`, `get_sentence_embedding_dimension`), so the embedder stays one class.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("sift.models.onnx")

# Bump when the export or quantization recipe changes: old files are then never loaded again.
RECIPE = "v2"
_POOLINGS = ("mean", "cls")


def onnx_cache_path(cache_dir: Path, fingerprint: str, quantize: str) -> Path:
    """Where the exported (and maybe quantized) model of `fingerprint` lives."""
    digest = hashlib.sha256(f"{fingerprint}\x00{RECIPE}".encode()).hexdigest()[:20]
    name = "model.onnx" if quantize == "none" else f"model-{quantize}.onnx"
    return cache_dir / "onnx" / digest / name


class OnnxSentenceEncoder:
    """Tokenizer + ONNX transformer + numpy pooling; built from a sentence-transformers model folder."""

    def __init__(
        self, path: str, fingerprint: str, *, quantize: str, cache_dir: Path, max_seq_length: int | None
    ) -> None:
        target = onnx_cache_path(cache_dir, fingerprint, quantize)
        cached = _cached_settings(path, target) if target.exists() else None
        if cached is not None:  # exported before: what the model said then, its tokenizer, no torch model to load
            from transformers import AutoTokenizer

            self.pooling, self._dims, st_max = cached
            self.tokenizer = AutoTokenizer.from_pretrained(path)
            self.max_seq_length = int(max_seq_length or st_max)
            self._open(target)
            return
        from sentence_transformers import SentenceTransformer

        st = SentenceTransformer(path, device="cpu")
        self.pooling = _pooling_mode(st)
        self.tokenizer = st.tokenizer
        self.max_seq_length = int(max_seq_length or st.max_seq_length or 512)
        get_dim = getattr(st, "get_embedding_dimension", None) or st.get_sentence_embedding_dimension
        self._dims = int(get_dim() or 0)
        if not target.exists():
            fp32 = onnx_cache_path(cache_dir, fingerprint, "none")
            if not fp32.exists():
                _export(st, fp32)
            if quantize == "int8":
                _quantize_int8(fp32, target)
        _write_settings(target, self.pooling, self._dims, int(st.max_seq_length or 512))
        del st  # the torch weights are not needed any more
        self._open(target)

    def _open(self, target: Path) -> None:
        self.path = target
        self.session = _session(target)
        self.input_names = [i.name for i in self.session.get_inputs()]

    def get_sentence_embedding_dimension(self) -> int:
        return self._dims

    def encode(self, texts: Sequence[str], batch_size: int = 32, **_: Any) -> np.ndarray:
        """Unit vectors, longest texts batched together (as sentence-transformers does) to pad little."""
        out = np.zeros((len(texts), self._dims), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            out[idx] = self._encode_batch([texts[i] for i in idx])
        return out

    def _encode_batch(self, texts: list[str]) -> np.ndarray:
        enc = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_seq_length, return_tensors="np")
        feeds = {name: np.asarray(enc[name], dtype=np.int64) for name in self.input_names}
        hidden = self.session.run(None, feeds)[0]
        if self.pooling == "cls":
            vecs = hidden[:, 0]
        else:
            mask = feeds["attention_mask"][..., None].astype(np.float32)
            vecs = (hidden * mask).sum(axis=1) / np.clip(mask.sum(axis=1), 1e-9, None)
        norms = np.linalg.norm(vecs, axis=1, keepdims=True)
        return (vecs / np.clip(norms, 1e-12, None)).astype(np.float32)


def _settings_file(target: Path) -> Path:
    return target.parent / "settings.json"


def _write_settings(target: Path, pooling: str, dims: int, max_seq_length: int) -> None:
    """What the loaded SentenceTransformer said, beside the export, for the next process's fast start."""
    tmp = _atomic_target(target)
    tmp.write_text(json.dumps({"pooling": pooling, "dims": dims, "max_seq_length": max_seq_length}))
    os.replace(tmp, _settings_file(target))


def _cached_settings(path: str, target: Path) -> tuple[str, int, int] | None:
    """(pooling, dims, max_seq_length) that the SentenceTransformer gave when this export was last loaded, when the
    model folder is one whose tokenizer `AutoTokenizer` alone reproduces (a transformer at the folder's root, then
    pooling and maybe normalisation; no lower-casing, tokenizer arguments or other tokenizer path); else None, and
    the model is loaded as before. Why: a serving replica that only runs the export then starts without importing
    sentence-transformers or reading the torch weights, most of a replacement replica's start on a busy 2-CPU
    machine (bench/chaos.py, phase a)."""
    root = Path(path)
    try:
        saved = json.loads(_settings_file(target).read_text())
        modules = json.loads((root / "modules.json").read_text())
        kinds = [(str(m.get("type", "")).rsplit(".", 1)[-1], m.get("path", "")) for m in modules]
        st_cfg = root / "sentence_bert_config.json"
        extra = json.loads(st_cfg.read_text()) if st_cfg.exists() else {}
        pooling, dims, window = str(saved["pooling"]), int(saved["dims"]), int(saved["max_seq_length"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    plain = kinds[:1] == [("Transformer", "")] and [k for k, _ in kinds[1:]] in (["Pooling"], ["Pooling", "Normalize"])
    others = [f for f in root.glob("sentence_*_config.json") if f.name != st_cfg.name]
    if (
        not plain
        or others
        or extra.get("do_lower_case")
        or extra.get("tokenizer_args")
        or extra.get("tokenizer_name_or_path")
    ):
        return None
    return (pooling, dims, window) if pooling in _POOLINGS and dims > 0 and window > 0 else None


def _pooling_mode(st: Any) -> str:
    for module in st:
        mode = getattr(module, "pooling_mode", None)
        if mode is not None:
            if mode not in _POOLINGS:
                raise ValueError(f"the onnx backend supports {_POOLINGS} pooling, not {mode!r}")
            return str(mode)
    raise ValueError("the onnx backend needs a sentence-transformers model with a Pooling module")


def _session(path: Path) -> Any:
    import onnxruntime as ort
    import torch

    opts = ort.SessionOptions()
    # As many threads as torch may use here: `limit_threads` and Ray's OMP_NUM_THREADS both set that.
    opts.intra_op_num_threads = max(1, torch.get_num_threads())
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _atomic_target(target: Path) -> Path:
    """A temporary file beside `target`: concurrent exporters (Ray actors) each write their own, then rename."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-", suffix=".onnx")
    os.close(fd)
    os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide a shared cache from other users
    return Path(tmp)


def _export(st: Any, target: Path) -> None:
    """The transformer's last hidden state as an ONNX graph with dynamic batch and sequence axes."""
    import torch

    transformer = st[0].auto_model.eval()
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in st.tokenizer.model_input_names]

    class _Hidden(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = transformer

        def forward(self, *args: torch.Tensor) -> torch.Tensor:
            return self.inner(**dict(zip(names, args, strict=True))).last_hidden_state

    sample = st.tokenizer(["an example", "a second, longer example sentence"], padding=True, return_tensors="pt")
    tmp = _atomic_target(target)
    axes = {n: {0: "batch", 1: "sequence"} for n in [*names, "last_hidden_state"]}
    log.info("exporting %s to ONNX (once) at %s", type(transformer).__name__, target)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings about constant shapes: masks are inputs here
        torch.onnx.export(
            _Hidden(),
            tuple(sample[n] for n in names),
            str(tmp),
            input_names=names,
            output_names=["last_hidden_state"],
            dynamic_axes=axes,
            opset_version=17,
            dynamo=False,
        )
    os.replace(tmp, target)


def _quantize_int8(source: Path, target: Path) -> None:
    """Dynamic int8 of the weight matrices, one scale per output channel.

    Activation x activation products (attention scores) stay fp32. Per-tensor weight scales cost MiniLM ~0.06
    cosine to its fp32 vectors (the feed-forward down projection has outlier channels); per-channel scales keep
    cosine > 0.99 and were the fastest of the recipes measured (bench/indexing.py --only encoders).
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model = onnx.load(str(source))
    weights = {i.name for i in model.graph.initializer}
    keep_fp32 = [n.name for n in model.graph.node if n.op_type == "MatMul" and not any(i in weights for i in n.input)]
    tmp = _atomic_target(target)
    quantize_dynamic(
        str(source),
        str(tmp),
        weight_type=QuantType.QInt8,
        op_types_to_quantize=["MatMul"],
        nodes_to_exclude=keep_fp32,
        per_channel=True,
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
    )
    os.replace(tmp, target)
