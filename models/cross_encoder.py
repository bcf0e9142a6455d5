"""The cross-encoder: reads (query, text) pairs together and scores them. The reranker and the summaries'
grounding check both load it here, so there is one loader and one device choice.

No cross-encoder ships offline; any sentence-transformers CrossEncoder (HF id or local path) plugs in.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from models.device import resolve_device
from models.references import resolve_model_path


class CrossEncoderConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(default=None, description="CrossEncoder HF id or local path; None disables reranking.")
    device: str | None = Field(default=None, description="Torch device; None uses the resolver.")
    batch_size: int = Field(default=16, ge=1, le=512, description="Pairs per forward pass.")
    max_length: int | None = Field(
        default=256, ge=16, le=4096, description="Token window of one (query, doc) pair; None: the model's own."
    )
    quantize: Literal["none", "int8"] = Field(
        default="none",
        description="int8: dynamic int8 quantization of the linear layers when running on CPU (torch's own "
        "quantize_dynamic; about 2.5x faster for MiniLM-sized models, scores within a few hundredths). "
        "Ignored on accelerators.",
    )


class CrossEncoderModel:
    """sentence-transformers' CrossEncoder; the weights load in `warm_up()` (idempotent, thread-safe)."""

    def __init__(self, config: CrossEncoderConfig) -> None:
        if not config.model:
            raise ValueError("a cross-encoder needs config.model")
        self.config = config
        self._path = resolve_model_path(config.model)
        self.model_id = config.model
        self._model: Any = None
        self._lock = threading.Lock()

    def warm_up(self) -> None:
        with self._lock:
            if self._model is None:
                from sentence_transformers import CrossEncoder

                device = resolve_device(self.config.device)
                model = CrossEncoder(self._path, device=device, max_length=self.config.max_length)
                if self.config.quantize == "int8" and device == "cpu":
                    import torch

                    torch.ao.quantization.quantize_dynamic(
                        model.model, {torch.nn.Linear}, dtype=torch.qint8, inplace=True
                    )
                self._model = model

    def rerank(self, query: str, texts: Sequence[str]) -> list[float]:
        """One relevance score per text, higher is better, aligned with `texts`."""
        return self.rerank_many([(query, t) for t in texts])

    def rerank_many(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        """Score pairs from several queries in one pass (what `@serve.batch` hands over)."""
        if not pairs:
            return []
        scores = self.predict(pairs)
        return [float(s) for s in scores.reshape(len(pairs), -1)[:, 0]]

    def predict(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        """The model's raw output for each pair: one score, or one per label (NLI models)."""
        self.warm_up()
        return np.asarray(
            self._model.predict(
                [list(p) for p in pairs],
                batch_size=self.config.batch_size,
                show_progress_bar=False,
                convert_to_numpy=True,
            )
        )
