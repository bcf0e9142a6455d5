"""Training the LambdaMART ranker from the click log.

Rows are the (query, document) pairs users were shown, with the features logged at serving time (so the model
learns from what was served); labels are a click model's relevance (position bias removed by the model),
graded into `grades` levels. LightGBM's `lambdarank` trains grouped by query with early stopping on a held-out
share of the *train* queries.

The click prior of a document is the one feature computed here rather than read from the log: it is derived
from the same clicks as the labels, so each row gets a leave-one-query-out prior (its own query's clicks left
out), otherwise the model would learn to read its label back from the prior. Serving uses the full prior.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from ranking.features import FEATURES
from ranking.ltr import RankerMeta, base_scores, hash_rows
from search.querylog import QueryEvent
from search.text import normalize_query
from training.click_data import Session
from training.click_models import ClickModel, DBNModel, PBMModel

PRIOR = FEATURES.index("click_prior")
FUSED_RANK = FEATURES.index("fused_rank")


class RankerTrainConfig(BaseModel):
    """`sift train ranker` settings; defaults fit a few thousand sessions on 2 CPUs in seconds."""

    model_config = ConfigDict(extra="forbid")

    click_model: Literal["pbm", "dbn"] = Field(default="pbm", description="Click model whose relevance labels rows.")
    grades: int = Field(default=5, ge=2, le=31, description="Relevance in [0, 1] is cut into this many labels.")
    holdout: float = Field(default=0.2, gt=0.0, lt=0.9, description="Share of train queries for early stopping.")
    prior_strength: float = Field(default=2.0, ge=0.0, description="Pseudo-pairs at the mean in a doc's prior.")
    num_leaves: int = Field(default=15, ge=2, le=255, description="LightGBM leaves per tree.")
    learning_rate: float = Field(default=0.05, gt=0.0, le=1.0, description="LightGBM shrinkage.")
    rounds: int = Field(default=500, ge=1, description="Upper bound on boosting rounds.")
    early_stopping: int = Field(default=50, ge=1, description="Stop when held-out nDCG@10 has not improved this long.")
    min_data_in_leaf: int = Field(default=20, ge=1, description="LightGBM min_data_in_leaf.")
    seed: int = Field(default=0, description="Seeds the query split and LightGBM.")
    min_gain: float = Field(
        default=0.005,
        description="Gate: the learnt order must beat the served order on held-out train queries (click-model "
        "labels, nDCG@10) by this much to be written; otherwise serving keeps the order it has.",
    )
    base_weight: float = Field(
        default=2.0,
        ge=0.0,
        description="Boost from the served order: each row starts at -base_weight * log2(fused rank) and the trees "
        "learn corrections to it, so a small log moves the ranking a little instead of replacing it (0: off).",
    )


@dataclass
class RankerData:
    x: np.ndarray
    y: np.ndarray
    queries: list[str]  # per row
    docs: list[str]  # per row
    priors: dict[str, float]  # full (serving) prior per doc

    def groups(self, rows: np.ndarray) -> list[int]:
        """Group sizes of consecutive rows (rows are sorted by query)."""
        out: list[int] = []
        last = None
        for r in rows:
            if self.queries[r] != last:
                out.append(0)
                last = self.queries[r]
            out[-1] += 1
        return out


def served_features(impressions: Iterable[QueryEvent]) -> dict[tuple[str, str], list[float | None]]:
    """(normalized query, doc) → the latest features logged for it."""
    out: dict[tuple[str, str], list[float | None]] = {}
    for imp in impressions:
        if imp.type == "search" and imp.features:
            q = normalize_query(imp.query)
            for doc, row in imp.features.items():
                if len(row) == len(FEATURES):
                    out[(q, doc)] = row
    return out


Pair = tuple[str, str]


def _priors(rel: Mapping[Pair, float], strength: float) -> tuple[dict[str, float], dict[Pair, float]]:
    """Smoothed mean relevance per doc: full, and leave-one-query-out per pair."""
    mean = float(np.mean(list(rel.values()))) if rel else 0.0
    total: dict[str, float] = defaultdict(float)
    count: dict[str, int] = defaultdict(int)
    for (_, d), r in rel.items():
        total[d] += r
        count[d] += 1
    full = {d: (total[d] + strength * mean) / (count[d] + strength) for d in total}
    loo = {}
    for (q, d), r in rel.items():
        n = count[d] - 1 + strength
        loo[(q, d)] = (total[d] - r + strength * mean) / n if n > 0 else math.nan
    return full, loo


def ranker_data(
    impressions: Sequence[QueryEvent], sessions: Sequence[Session], cfg: RankerTrainConfig
) -> tuple[RankerData, ClickModel]:
    """Rows of every shown pair that has served features, labelled by the click model fitted on `sessions`."""
    feats = served_features(impressions)
    if not feats:
        raise ValueError("no impression in the logs carries ranking features (search.log_features is off?)")
    model: ClickModel = PBMModel() if cfg.click_model == "pbm" else DBNModel()
    model.fit(sessions)
    seen = {(s.query, d) for s in sessions for d in s.docs}
    pairs = sorted(p for p in feats if p in seen)
    if not pairs:
        raise ValueError("no shown (query, document) pair with features has a click-log session")
    rel = {p: model.relevance(*p) for p in pairs}
    full, loo = _priors(rel, cfg.prior_strength)
    x = np.array([[math.nan if v is None else v for v in feats[p]] for p in pairs], dtype=np.float64)
    x[:, PRIOR] = [loo[p] for p in pairs]
    y = np.array([min(cfg.grades - 1, int(rel[p] * cfg.grades)) for p in pairs], dtype=np.float64)
    return RankerData(x, y, [q for q, _ in pairs], [d for _, d in pairs], full), model


def ndcg_at(labels: np.ndarray, scores: np.ndarray, k: int = 10) -> float:
    """nDCG@k of one query's rows ordered by `scores` (gain 2^label - 1); NaN when nothing is relevant."""
    gains = 2.0**labels - 1.0
    disc = 1.0 / np.log2(np.arange(2, k + 2))
    ideal = float((np.sort(gains)[::-1][:k] * disc[: min(k, len(gains))]).sum())
    if ideal == 0:
        return math.nan
    order = np.lexsort((np.arange(len(scores)), -scores))[:k]
    return float((gains[order] * disc[: len(order)]).sum()) / ideal


def _split(queries: Sequence[str], holdout: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows of train and held-out queries, by a seeded hash of the query (stable across runs)."""

    def held(q: str) -> bool:
        digest = hashlib.sha256(f"{seed}\x1f{q}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64 < holdout

    mask = np.array([held(q) for q in queries])
    return np.flatnonzero(~mask), np.flatnonzero(mask)


def mean_ndcg(data: RankerData, rows: np.ndarray, scores: np.ndarray) -> float:
    per: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(rows):
        per[data.queries[r]].append(i)
    vals = [ndcg_at(data.y[rows[idx]], scores[idx]) for idx in per.values()]
    vals = [v for v in vals if not math.isnan(v)]
    return float(np.mean(vals)) if vals else math.nan


def gain(meta: RankerMeta) -> float:
    """Held-out nDCG@10 of the learnt order minus the served order's (click-model labels, train queries)."""
    return meta.metrics["heldout_ndcg10_ltr"] - meta.metrics["heldout_ndcg10_fused"]


def passes_gate(meta: RankerMeta, cfg: RankerTrainConfig) -> bool:
    return gain(meta) >= cfg.min_gain


def train_ranker(data: RankerData, cfg: RankerTrainConfig) -> tuple[Any, RankerMeta]:
    """Fit LambdaMART with early stopping on held-out train queries; the booster and its metadata."""
    import lightgbm as lgb

    train, held = _split(data.queries, cfg.holdout, cfg.seed)
    if len(train) == 0 or len(held) == 0:
        raise ValueError(f"{len(set(data.queries))} queries are too few to hold {cfg.holdout:.0%} out")
    params = {
        "objective": "lambdarank",
        "metric": "ndcg",
        "eval_at": [10],
        "num_leaves": cfg.num_leaves,
        "learning_rate": cfg.learning_rate,
        "min_data_in_leaf": cfg.min_data_in_leaf,
        "label_gain": [2.0**g - 1.0 for g in range(cfg.grades)],
        "seed": cfg.seed,
        "deterministic": True,
        "num_threads": 1,
        "verbose": -1,
    }
    t0 = time.perf_counter()
    base = base_scores(data.x, cfg.base_weight)
    dtrain = lgb.Dataset(
        data.x[train], data.y[train], group=data.groups(train), feature_name=list(FEATURES), init_score=base[train]
    )
    dheld = lgb.Dataset(data.x[held], data.y[held], group=data.groups(held), reference=dtrain, init_score=base[held])
    booster = lgb.train(
        params, dtrain, num_boost_round=cfg.rounds, valid_sets=[dheld],
        callbacks=[lgb.early_stopping(cfg.early_stopping, verbose=False)],
    )  # fmt: skip
    seconds = time.perf_counter() - t0
    learnt = np.asarray(booster.predict(data.x[held], num_iteration=booster.best_iteration)) + base[held]
    fused = -data.x[held, FUSED_RANK]
    digest = hash_rows(data.x, data.y, data.groups(np.arange(len(data.y))))
    metrics = {
        "heldout_ndcg10_ltr": round(mean_ndcg(data, held, learnt), 4),
        "heldout_ndcg10_fused": round(mean_ndcg(data, held, np.nan_to_num(fused, nan=-1e9)), 4),
        "train_queries": float(len({data.queries[r] for r in train})),
        "heldout_queries": float(len({data.queries[r] for r in held})),
        "rows": float(len(data.y)),
        "best_iteration": float(booster.best_iteration),
        "fit_s": round(seconds, 3),
    }
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    meta = RankerMeta(
        version=f"ltr-{digest[:12]}-{stamp}", features=list(FEATURES), priors=data.priors, metrics=metrics,
        data_hash=digest, base_weight=cfg.base_weight,
        params={**params, "click_model": cfg.click_model, "grades": cfg.grades},
    )  # fmt: skip
    return booster, meta
