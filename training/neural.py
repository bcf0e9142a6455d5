"""Training Sift's neural models on clicks, with the library trainers, into the model registry.

- Encoder: sentence-transformers' `SentenceTransformerTrainer` with MultipleNegativesRanking loss on
  (query, clicked document, hard negative) triplets; the other rows of a batch are further negatives, so a
  batch never holds the same text twice (`NO_DUPLICATES`).
- Reranker: `CrossEncoderTrainer` with binary cross-entropy on (query, clicked document) = 1 and (query, hard
  negative) = 0, positives weighted up by the negatives per positive so neither class drowns the other. No
  cross-encoder ships offline, so the default start is the offline MiniLM encoder with a fresh 1-logit head.

Both measure held-out nDCG@10 (the evaluation set of `training/neural_data.py`) of the starting point and of the
trained model, and register the result (weights, card with data hash, metrics and config) as a new version;
nothing is made live here: `sift models promote` is the gated way in.
"""

from __future__ import annotations

import contextlib
import math
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from models.cross_encoder import CrossEncoderConfig
from models.device import limit_threads, resolve_device
from models.references import DEFAULT_EMBEDDER, resolve_model_path
from models.registry import ModelCard, Registry, version_stamp
from training.neural_data import (
    EvalSet,
    Example,
    NeuralData,
    embedding_ndcg,
    pair_ndcg,
    served_cross_encoder,
    served_ndcg,
)


class NeuralTrainConfig(BaseModel):
    """Settings shared by both trainers; defaults fit a 2-CPU machine (one epoch of a few thousand clicks)."""

    model_config = ConfigDict(extra="forbid")

    base: str = Field(default=DEFAULT_EMBEDDER, description="Weights to start from: HF id or local folder.")
    epochs: float = Field(default=1.0, gt=0.0, description="Passes over the examples.")
    batch_size: int = Field(default=16, ge=2, le=4096, description="Examples per step (MNRL: in-batch negatives).")
    max_steps: int | None = Field(default=None, ge=1, description="Stop after this many steps (overrides epochs).")
    learning_rate: float = Field(default=2e-5, gt=0.0, le=1.0, description="AdamW peak learning rate.")
    warmup_ratio: float = Field(default=0.1, ge=0.0, lt=1.0, description="Share of steps with a rising rate.")
    max_seq_length: int = Field(default=256, ge=16, le=4096, description="Tokens per input (reranker: per pair).")
    seed: int = Field(default=0, description="Seeds initialisation and batch order.")
    device: str | None = Field(default=None, description="Torch device; None: the resolver (SIFT_DEVICE, GPU, CPU).")
    progress: bool = Field(default=True, description="The trainer's progress bar.")
    threads: int | None = Field(
        default=None, ge=1, le=256, description="Torch/BLAS threads (None: torch's default, every core)."
    )


class EncoderTrainConfig(NeuralTrainConfig):
    scale: float = Field(default=20.0, gt=0.0, description="MNRL similarity scale (inverse temperature).")


class RerankerTrainConfig(NeuralTrainConfig):
    max_seq_length: int = Field(
        default=128, ge=16, le=4096, description="Tokens per (query, document) pair: the served reranker's window."
    )
    negatives: int = Field(default=3, ge=1, le=50, description="Hard negatives per positive pair.")
    balance: bool = Field(default=True, description="Weight positives by negatives per positive in the loss.")
    latency_queries: int = Field(
        default=20, ge=0, description="Held-out queries timed reranking their top 20 (p50 ms on the training device)."
    )


@dataclass(frozen=True)
class Trained:
    path: Path
    card: ModelCard


def triplets(examples: Sequence[Example], seed: int) -> dict[str, list[str]]:
    """(query, positive, negative) doc-id columns; an example without a hard negative borrows another query's
    positive (seeded), so every row has the third column MNRL reads."""
    rng = np.random.default_rng(seed)
    pool = sorted({e.positive for e in examples})
    out: dict[str, list[str]] = {"anchor": [], "positive": [], "negative": []}
    for e in examples:
        neg = e.negatives[0] if e.negatives else None
        while neg is None or neg == e.positive:
            neg = pool[int(rng.integers(len(pool)))]
            if len(pool) == 1:
                break
        out["anchor"].append(e.query)
        out["positive"].append(e.positive)
        out["negative"].append(neg)
    return out


def labelled_pairs(examples: Sequence[Example], texts: dict[str, str], negatives: int) -> dict[str, list[Any]]:
    """(query, text, label) rows: each click 1, each of its first `negatives` hard negatives 0."""
    out: dict[str, list[Any]] = {"query": [], "document": [], "label": []}
    for e in examples:
        for doc, label in [(e.positive, 1.0), *((n, 0.0) for n in e.negatives[:negatives])]:
            out["query"].append(e.query)
            out["document"].append(texts[doc])
            out["label"].append(label)
    return out


def _args(cfg: NeuralTrainConfig, device: str, out: str, args_cls: Any, **extra: Any) -> Any:
    return args_cls(
        output_dir=out,
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps or -1,
        per_device_train_batch_size=cfg.batch_size,
        learning_rate=cfg.learning_rate,
        warmup_steps=cfg.warmup_ratio,  # transformers 5: a float below 1 is a share of the steps
        seed=cfg.seed,
        data_seed=cfg.seed,
        save_strategy="no",
        report_to="none",
        logging_strategy="no",
        disable_tqdm=not cfg.progress,
        use_cpu=device == "cpu",
        dataloader_num_workers=0,
        **extra,
    )


def _prepare(cfg: NeuralTrainConfig) -> str:
    """The device, after capping threads: on a busy 2-CPU machine one spinning thread per core too many makes a
    step tens of times slower."""
    if cfg.threads:
        limit_threads(cfg.threads)
    return resolve_device(cfg.device)


def _card(kind: str, prefix: str, data: NeuralData, cfg: NeuralTrainConfig, metrics: dict[str, float]) -> ModelCard:
    return ModelCard(
        kind=kind,
        version=version_stamp(data.data_hash, prefix),
        base_model=cfg.base,
        data_hash=data.data_hash,
        metrics={**metrics, **{k: float(v) for k, v in data.stats.items()}},
        config={"train": cfg.model_dump(), "data": data.config.model_dump(), "evaluation": data.heldout.source},
        notes=f"Trained on clicks by `sift train {kind}`; promote with `sift models promote {kind} VERSION`.",
    )


def _metric(v: float) -> float:
    return round(v, 4)


def train_encoder(data: NeuralData, cfg: EncoderTrainConfig, registry: Registry) -> Trained:
    """Fine-tune a bi-encoder on the click triplets; register it as a new `encoder` version."""
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    from sentence_transformers.sentence_transformer.training_args import (
        BatchSamplers,
        SentenceTransformerTrainingArguments,
    )

    device = _prepare(cfg)
    model = SentenceTransformer(resolve_model_path(cfg.base), device=device)
    model.max_seq_length = cfg.max_seq_length

    def embed(texts: list[str]) -> np.ndarray:
        vecs = model.encode(texts, batch_size=64, normalize_embeddings=True, show_progress_bar=False)
        return np.asarray(vecs, dtype=np.float32)

    before = embedding_ndcg(data.heldout, embed) if data.heldout.queries else float("nan")
    cols = triplets(data.examples, cfg.seed)
    rows = {k: [v if k == "anchor" else data.texts[v] for v in col] for k, col in cols.items()}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="sift-encoder-") as tmp:
        args = _args(cfg, device, tmp, SentenceTransformerTrainingArguments, batch_sampler=BatchSamplers.NO_DUPLICATES)
        loss = MultipleNegativesRankingLoss(model, scale=cfg.scale)
        trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=Dataset.from_dict(rows), loss=loss)
        with contextlib.redirect_stdout(sys.stderr):  # the trainer prints its logs; stdout carries results
            trainer.train()
    seconds = time.perf_counter() - t0
    metrics = {"train_s": round(seconds, 2)}
    if data.heldout.queries:
        metrics |= {
            "heldout_ndcg10": _metric(embedding_ndcg(data.heldout, embed)),
            "heldout_ndcg10_base": _metric(before),
        }
    card = _card("encoder", "enc", data, cfg, metrics)
    path = registry.register(card, lambda d: model.save(str(d), create_model_card=False))
    return Trained(path, card)


def rerank_latency_ms(score: Callable[[list[tuple[str, str]]], Any], evalset: EvalSet, n: int, top: int = 20) -> float:
    """p50 ms of scoring `top` (query, text) pairs, one query at a time, as the rerank stage does."""
    texts = list(evalset.texts.values())
    if n == 0 or not texts or not evalset.queries:
        return float("nan")
    score([(evalset.queries[0].query, texts[0])])  # warm-up
    times = []
    for i, q in enumerate(evalset.queries[:n]):
        docs = [evalset.texts[d] for d in q.candidates][:top]
        docs += [texts[(i + j) % len(texts)] for j in range(top - len(docs))]
        t0 = time.perf_counter()
        score([(q.query, d) for d in docs])
        times.append((time.perf_counter() - t0) * 1000)
    return float(np.median(times))


def train_reranker(
    data: NeuralData, cfg: RerankerTrainConfig, registry: Registry, serve: CrossEncoderConfig | None = None
) -> Trained:
    """Fine-tune a cross-encoder on clicked (1) and hard-negative (0) pairs; register a new `reranker` version
    whose held-out nDCG@10 and latency are measured on the saved weights loaded as `serve` says the app serves
    them (default: the served reranker defaults, int8 on CPU)."""
    import torch
    from datasets import Dataset
    from sentence_transformers.cross_encoder import CrossEncoder, CrossEncoderTrainer, CrossEncoderTrainingArguments
    from sentence_transformers.cross_encoder.losses import BinaryCrossEntropyLoss

    device = _prepare(cfg)
    model = CrossEncoder(resolve_model_path(cfg.base), num_labels=1, max_length=cfg.max_seq_length, device=device)
    rows = labelled_pairs(data.examples, data.texts, cfg.negatives)
    positives = sum(1 for label in rows["label"] if label > 0)
    weight = (len(rows["label"]) - positives) / positives if cfg.balance and positives else 1.0
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="sift-reranker-") as tmp:
        args = _args(cfg, device, tmp, CrossEncoderTrainingArguments)
        loss = BinaryCrossEntropyLoss(model, pos_weight=torch.tensor(max(weight, 1e-3)))
        trainer = CrossEncoderTrainer(model=model, args=args, train_dataset=Dataset.from_dict(rows), loss=loss)
        with contextlib.redirect_stdout(sys.stderr):
            trainer.train()
    seconds = time.perf_counter() - t0
    metrics = {"train_s": round(seconds, 2), "train_pairs": float(len(rows["label"]))}
    with tempfile.TemporaryDirectory(prefix="sift-reranker-out-") as out:
        model.save(out, create_model_card=False)
        served = served_cross_encoder(out, serve)
        if data.heldout.queries:
            metrics |= {
                "heldout_ndcg10": _metric(pair_ndcg(data.heldout, served.predict)),
                "heldout_ndcg10_served": _metric(served_ndcg(data.heldout)),
            }
            latency = rerank_latency_ms(served.predict, data.heldout, cfg.latency_queries)
            if not math.isnan(latency):
                metrics["rerank20_p50_ms"] = round(latency, 1)
        card = _card("reranker", "rer", data, cfg, metrics)
        card.config["measured_as"] = {
            "device": resolve_device(served.config.device), "max_length": served.config.max_length,
            "quantize": served.config.quantize, "threads": torch.get_num_threads(),
        }  # fmt: skip

        def write(folder: Path) -> None:
            shutil.copytree(out, folder, dirs_exist_ok=True)

        path = registry.register(card, write)
    return Trained(path, card)
