"""Embedding with sentence-transformers, and a persistent cache keyed by (model, text hash).

The cache is what makes reindexing cheap: an unchanged chunk is never encoded twice, across runs and
across stores.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from models.device import resolve_device
from models.onnx_encoder import RECIPE as ONNX_RECIPE
from models.references import DEFAULT_EMBEDDER, resolve_model_path, sift_cache_dir


class EmbedderConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(default=DEFAULT_EMBEDDER, description="HF id or local path of a sentence-transformers model.")
    device: str | None = Field(default=None, description="Torch device; None uses the resolver.")
    batch_size: int = Field(default=32, ge=1, le=4096, description="Texts per forward pass.")
    max_seq_length: int | None = Field(default=None, ge=8, description="Override the model's token window.")
    fp16: bool = Field(default=False, description="Half precision on CUDA (ignored on CPU).")
    backend: Literal["torch", "onnx", "auto"] = Field(
        default="torch",
        description="torch (sentence-transformers), onnx (ONNX Runtime on CPU, exported once), or auto: onnx with "
        "int8 weights where the device resolver finds no accelerator (SciFact dense nDCG@10 -.0025, ~7x less "
        "CPU per query), torch otherwise. Resolved when the config loads: index and server must resolve alike.",
    )
    quantize: Literal["none", "int8"] = Field(
        default="none", description="int8: dynamic int8 weights (onnx backend only), ~2x faster on CPU."
    )

    @model_validator(mode="after")
    def _int8_needs_onnx(self) -> EmbedderConfig:
        if self.backend == "auto":
            cpu = resolve_device(self.device) == "cpu"
            self.backend = "onnx" if cpu else "torch"
            if "quantize" not in self.model_fields_set:
                self.quantize = "int8" if cpu else "none"
        if self.quantize != "none" and self.backend != "onnx":
            raise ValueError("quantize: int8 needs backend: onnx")
        return self

    @property
    def encoder_tag(self) -> str:
        """'' for plain torch, else e.g. 'onnx-int8': part of every cache key, so encoders' vectors never mix."""
        return "" if self.backend == "torch" else f"{self.backend}-{self.quantize}"


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into unit-length vectors."""

    model_id: str

    def warm_up(self) -> None: ...

    @property
    def dims(self) -> int: ...

    @property
    def max_tokens(self) -> int:
        """Token window of one input, special tokens included."""
        ...

    @property
    def tokenizer(self) -> Any: ...

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """float32 array (len(texts), dims), L2-normalised."""
        ...


class SentenceTransformerEmbedder:
    """Embedder over a sentence-transformers model; light constructor, model loads in warm_up()."""

    def __init__(self, config: EmbedderConfig | None = None) -> None:
        self.config = config or EmbedderConfig()
        self._path = resolve_model_path(self.config.model)
        self._fingerprint = _model_fingerprint(self._path)
        tag = self.config.encoder_tag
        # Torch keys stay as they were; onnx ones carry the export/quantization recipe too.
        self.model_id = f"{self._fingerprint}|{tag}|{ONNX_RECIPE}" if tag else self._fingerprint
        self._model: Any = None
        self._lock = threading.Lock()

    def warm_up(self) -> None:
        with self._lock:
            if self._model is not None:
                return
            if self.config.backend == "onnx":
                from models.onnx_encoder import OnnxSentenceEncoder

                self._model = OnnxSentenceEncoder(
                    self._path,
                    self._fingerprint,
                    quantize=self.config.quantize,
                    cache_dir=sift_cache_dir(),
                    max_seq_length=self.config.max_seq_length,
                )
                return
            from sentence_transformers import SentenceTransformer

            device = resolve_device(self.config.device)
            model = SentenceTransformer(self._path, device=device)
            if self.config.max_seq_length:
                model.max_seq_length = self.config.max_seq_length
            if self.config.fp16 and device.startswith("cuda"):
                model = model.half()
            self._model = model

    @property
    def model(self) -> Any:
        self.warm_up()
        return self._model

    @property
    def dims(self) -> int:
        m = self.model
        get = getattr(m, "get_embedding_dimension", None) or m.get_sentence_embedding_dimension
        return int(get())

    @property
    def max_tokens(self) -> int:
        return int(self.model.max_seq_length)

    @property
    def tokenizer(self) -> Any:
        return self.model.tokenizer

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dims), dtype=np.float32)
        out = self.model.encode(
            list(texts),
            batch_size=self.config.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.asarray(out, dtype=np.float32)


def _model_fingerprint(path: str) -> str:
    """Cache key part for a model: the id, plus the weights' size and mtime for local directories."""
    p = Path(path)
    if not p.is_dir():
        return path
    parts = [str(p)]
    for f in sorted(p.glob("*.safetensors")) + sorted(p.glob("*.bin")):
        st = f.stat()
        parts.append(f"{f.name}:{st.st_size}:{int(st.st_mtime)}")
    return "|".join(parts)


class EmbeddingCache:
    """Vectors on disk in SQLite, keyed by sha256(model id, text). Safe across threads and processes."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._local = threading.local()

    def _conn(self) -> sqlite3.Connection:
        c: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if c is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            c = sqlite3.connect(self.path, timeout=60, isolation_level=None, check_same_thread=False)
            c.execute("PRAGMA journal_mode=WAL")
            c.execute("PRAGMA synchronous=NORMAL")
            c.execute("CREATE TABLE IF NOT EXISTS emb (k TEXT PRIMARY KEY, v BLOB NOT NULL)")
            self._local.conn = c
        return c

    @staticmethod
    def key(model_id: str, text: str) -> str:
        return hashlib.sha256(f"{model_id}\x00{text}".encode()).hexdigest()

    def get_many(self, keys: Sequence[str]) -> dict[str, np.ndarray]:
        """Stored vectors by key. A corrupt or truncated entry is left out, so the caller encodes the text again
        and `put_many` rewrites it; an unreadable cache file makes every key a miss. Both with a warning."""
        out: dict[str, np.ndarray] = {}
        keys = list(keys)
        try:
            c = self._conn()
            for i in range(0, len(keys), 500):
                part = keys[i : i + 500]
                rows = c.execute(f"SELECT k, v FROM emb WHERE k IN ({','.join('?' * len(part))})", part).fetchall()
                out.update(self._valid(rows))
        except sqlite3.DatabaseError as exc:
            self._warn("embedding cache %s unreadable (%s): encoding without it", self.path, exc)
            return {}
        return out

    def _valid(self, rows: list[tuple[str, Any]]) -> dict[str, np.ndarray]:
        """Whole float32s, all finite, and as long as the batch's other vectors (one model per batch)."""
        vecs: dict[str, np.ndarray] = {}
        bad = 0
        for k, v in rows:
            if not isinstance(v, bytes) or not v or len(v) % 4:
                bad += 1
                continue
            arr = np.frombuffer(v, dtype=np.float32)
            if np.isfinite(arr).all():
                vecs[k] = arr
            else:
                bad += 1
        sizes = [a.size for a in vecs.values()]
        common = max(set(sizes), key=sizes.count) if sizes else 0
        odd = [k for k, a in vecs.items() if a.size != common]
        for k in odd:
            del vecs[k]
        if bad or odd:
            self._warn(
                "%d corrupt or truncated embedding cache entries in %s: re-encoding them", bad + len(odd), self.path
            )
        return vecs

    @staticmethod
    def _warn(msg: str, *args: object) -> None:
        import logging

        logging.getLogger("sift.embedder").warning(msg, *args)

    def put_many(self, items: dict[str, np.ndarray]) -> None:
        if not items:
            return
        c: sqlite3.Connection | None = None
        try:
            c = self._conn()
            c.execute("BEGIN")
            c.executemany(
                "INSERT OR REPLACE INTO emb (k, v) VALUES (?, ?)",
                [(k, np.asarray(v, dtype=np.float32).tobytes()) for k, v in items.items()],
            )
            c.execute("COMMIT")
        except sqlite3.DatabaseError as exc:  # a corrupt file: the vectors are still returned, just not kept
            if c is not None and c.in_transaction:
                c.execute("ROLLBACK")
            self._warn("embedding cache %s not writable (%s)", self.path, exc)


class EmbedderWrapper:
    """Base for wrappers that change `embed` only; everything else is the wrapped embedder's."""

    def __init__(self, inner: Embedder) -> None:
        self.inner = inner
        self.model_id = inner.model_id

    def warm_up(self) -> None:
        self.inner.warm_up()

    @property
    def dims(self) -> int:
        return self.inner.dims

    @property
    def max_tokens(self) -> int:
        return self.inner.max_tokens

    @property
    def tokenizer(self) -> Any:
        return self.inner.tokenizer


class CachedEmbedder(EmbedderWrapper):
    """Wraps an Embedder so only texts never seen with this model get encoded."""

    def __init__(self, inner: Embedder, cache: EmbeddingCache) -> None:
        super().__init__(inner)
        self.cache = cache
        self.hits = 0
        self.misses = 0

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        keys = [EmbeddingCache.key(self.model_id, t) for t in texts]
        found = self.cache.get_many(keys)
        missing = sorted({i for i, k in enumerate(keys) if k not in found}, key=lambda i: keys[i])
        uniq: dict[str, int] = {}
        for i in missing:
            uniq.setdefault(keys[i], i)
        if uniq:
            vecs = self.inner.embed([texts[i] for i in uniq.values()])
            new = dict(zip(uniq.keys(), vecs, strict=True))
            self.cache.put_many(new)
            found.update(new)
        self.misses += len(uniq)
        self.hits += len(texts) - len(uniq)
        if not texts:
            return np.zeros((0, self.dims), dtype=np.float32)
        return np.vstack([found[k] for k in keys]).astype(np.float32)
