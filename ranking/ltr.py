"""The learning-to-rank stage: a LightGBM LambdaMART model re-orders the fused (or reranked) head.

Why LightGBM: a few hundred trees over a dozen features score 50 candidates in well under a millisecond on
CPU, so the stage runs in the ingress with no Serve hop, and the booster's own per-feature contributions
(`pred_contrib`, TreeSHAP) explain each result's score in terms a person can read.

A model is a folder written by `save_ranker`: `model.txt` (the booster), `meta.json` (feature names, the
document priors learnt from clicks, metrics, the training-data hash). `training/ltr.py` writes it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from ranking.familiar import FamiliarIndex
from ranking.features import FEATURES, Candidate, CandidateDoc, feature_matrix

log = logging.getLogger(__name__)

MODEL_FILE = "model.txt"
META_FILE = "meta.json"


class LTRConfig(BaseModel):
    """`ranker:` in the app YAML."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(
        default=None,
        description="Folder of a trained ranker (sift train ranker), or `registry:ranker` (the live version, "
        "followed: a promoted version is swapped in without a restart) / `registry:ranker@VERSION`; none: off.",
    )
    watch_s: float = Field(
        default=2.0, ge=0, description="With `registry:ranker`, how often the live pointer is checked (0: never)."
    )
    top_n: int = Field(
        default=10,
        ge=2,
        le=500,
        description="How many fused candidates the ranker re-orders. Clicks label only what users were shown (the "
        "first page), so a deeper head would ask the model about candidates unlike any it was trained on.",
    )
    contributions: int = Field(default=3, ge=0, le=len(FEATURES), description="Top feature contributions shown.")
    interleave: bool = Field(
        default=False,
        description="Team-draft interleave the order without the ranker (team a) and with it (team b) on first "
        "pages, logging each result's team; `sift clicks interleaving` says who won.",
    )
    familiar_only: bool = Field(
        default=True,
        description="Re-order only queries the ranker has click evidence for (word-set Jaccard >= familiar_jaccard "
        "with a query it was trained on); others keep the fused order (stage `ltr-skipped:unfamiliar`). Its "
        "learnt gain transfers only to near-twins of logged queries. Rankers saved without their queries: all.",
    )
    familiar_jaccard: float = Field(
        default=0.5, gt=0.0, le=1.0, description="Word-set Jaccard a query needs with a training query to be familiar."
    )


class RankerMeta(BaseModel):
    """What travels with a booster: without the feature order and priors its scores mean nothing."""

    model_config = ConfigDict(extra="forbid")

    version: str = Field(description="Model version: the training-data hash and the time it was trained.")
    features: list[str] = Field(description="Feature names in the column order the booster expects.")
    priors: dict[str, float] = Field(default_factory=dict, description="Click-model prior per document id.")
    metrics: dict[str, float] = Field(default_factory=dict, description="Held-out metrics at training time.")
    data_hash: str = Field(description="sha256 of the training rows (features, labels, groups).")
    params: dict[str, Any] = Field(default_factory=dict, description="LightGBM parameters used.")
    base_weight: float = Field(default=0.0, ge=0.0, description="Trees add to -base_weight * log2(fused rank).")
    familiar: list[list[str]] | None = Field(
        default=None,
        description="Word sets (ranking.familiar) of the training queries it learnt from, at most 100k; None: an "
        "older ranker saved without them (applied to every query).",
    )


def save_ranker(booster: Any, meta: RankerMeta, out: Path) -> Path:
    """Write a model folder atomically enough for a reader: the files go in, then nothing else changes."""
    out.mkdir(parents=True, exist_ok=True)
    booster.save_model(str(out / MODEL_FILE))
    (out / META_FILE).write_text(meta.model_dump_json(indent=2))
    return out


@dataclass(frozen=True)
class LTROutcome:
    order: list[str]
    scores: dict[str, float]
    contributions: dict[str, list[tuple[str, float]]]
    features: dict[str, np.ndarray]  # the rows the booster scored, reused for the impression log


class LTRRanker:
    """A trained ranker; light constructor, the booster loads in `warm_up()` (idempotent)."""

    def __init__(self, config: LTRConfig) -> None:
        if not config.model:
            raise ValueError("LTRConfig.model names no ranker folder")
        self.config = config
        self.path = Path(config.model)
        self._booster: Any = None
        self.meta: RankerMeta | None = None
        self._familiar: FamiliarIndex | None = None
        self._lock = threading.Lock()

    def warm_up(self) -> None:
        with self._lock:
            if self._booster is not None:
                return
            import lightgbm as lgb

            if not (self.path / MODEL_FILE).is_file():
                raise FileNotFoundError(f"no ranker at {self.path} (expected {MODEL_FILE}; run `sift train ranker`)")
            meta = RankerMeta.model_validate_json((self.path / META_FILE).read_text())
            if tuple(meta.features) != FEATURES:
                raise ValueError(f"ranker {self.path} was trained on features {meta.features}, not {list(FEATURES)}")
            self._booster = lgb.Booster(model_file=str(self.path / MODEL_FILE))
            self._familiar = FamiliarIndex(meta.familiar) if meta.familiar is not None else None
            if meta.familiar is None and self.config.familiar_only:
                log.info("ranker %s was saved without its training queries: it re-orders every query", self.path)
            self.meta = meta

    def applies(self, query: str, stages: list[str]) -> bool:
        """Whether the ranker re-orders `query`: always, unless `familiar_only` and the ranker knows its training
        queries and none is a near-twin of this one (then `ltr-skipped:unfamiliar` is added to `stages`)."""
        self.warm_up()
        if not self.config.familiar_only or self._familiar is None:
            return True
        if self._familiar.familiar(query, self.config.familiar_jaccard):
            return True
        stages.append("ltr-skipped:unfamiliar")
        return False

    @property
    def version(self) -> str:
        self.warm_up()
        assert self.meta is not None
        return self.meta.version

    @property
    def priors(self) -> Mapping[str, float]:
        self.warm_up()
        assert self.meta is not None
        return self.meta.priors

    def rank(
        self,
        query_terms: Sequence[str],
        candidates: Sequence[Candidate],
        docs: Mapping[str, CandidateDoc | None],
        rerank: Mapping[str, float] | None = None,
        ranks: Sequence[int] | None = None,
    ) -> LTROutcome:
        """The candidates re-ordered by the booster, with each one's score and its top contributions."""
        self.warm_up()
        if not candidates:
            return LTROutcome([], {}, {}, {})
        x = feature_matrix(query_terms, candidates, docs, priors=self.priors, rerank=rerank, ranks=ranks)
        contrib = np.asarray(self._booster.predict(x, pred_contrib=True))  # per feature, then the bias column
        base = base_scores(x, self.meta.base_weight if self.meta else 0.0)
        scores = contrib.sum(axis=1) + base
        top = self.config.contributions
        out_scores: dict[str, float] = {}
        explain: dict[str, list[tuple[str, float]]] = {}
        names = [*FEATURES, "served_order"]  # the boosting start, -base_weight * log2(fused rank)
        for c, s, row in zip(candidates, scores, np.column_stack([contrib[:, :-1], base]), strict=True):
            out_scores[c.id] = float(s)
            if top:
                idx = np.argsort(-np.abs(row))[:top]
                explain[c.id] = [(names[j], round(float(row[j]), 4)) for j in idx if row[j] != 0]
        order = sorted(out_scores, key=lambda d: (-out_scores[d], d))
        return LTROutcome(order, out_scores, explain, {c.id: row for c, row in zip(candidates, x, strict=True)})


def load_ranker(config: LTRConfig, path: str) -> LTRRanker:
    """A warmed ranker from `path` with `config`'s other settings (what a registry reference loads)."""
    ranker = LTRRanker(config.model_copy(update={"model": path}))
    ranker.warm_up()
    return ranker


def base_scores(x: np.ndarray, weight: float) -> np.ndarray:
    """The served order as a score, -weight * log2(fused rank): what boosting starts from."""
    rank = np.nan_to_num(x[:, FEATURES.index("fused_rank")], nan=1000.0)
    return -weight * np.log2(np.maximum(rank, 1.0))


def load_meta(path: Path) -> RankerMeta:
    return RankerMeta.model_validate_json((Path(path) / META_FILE).read_text())


def hash_rows(x: np.ndarray, y: np.ndarray, groups: Sequence[int]) -> str:
    h = hashlib.sha256()
    for part in (np.ascontiguousarray(x, dtype=np.float64), np.ascontiguousarray(y, dtype=np.float64)):
        h.update(part.tobytes())
    h.update(json.dumps(list(map(int, groups))).encode())
    return h.hexdigest()
