"""Training the LambdaMART ranker from the click log.

Rows are the (query, document) pairs users were shown, with the features logged at serving time (so the model
learns from what was served); labels are a click model's relevance (position bias removed by the model),
graded into `grades` levels. LightGBM's `lambdarank` trains grouped by query, cross-fitted over folds of the
*train* queries (early stopping and the gate read out-of-fold scores).

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

from logs.querylog import QueryEvent
from ranking.familiar import familiar_sets
from ranking.features import FEATURES
from ranking.ltr import RankerMeta, base_scores, hash_rows
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
    folds: int = Field(
        default=5, ge=3, le=20, description="Cross-fitting folds of train queries (early stopping and the gate)."
    )
    prior_strength: float = Field(default=2.0, ge=0.0, description="Pseudo-pairs at the mean in a doc's prior.")
    num_leaves: int = Field(default=15, ge=2, le=255, description="LightGBM leaves per tree.")
    learning_rate: float = Field(default=0.05, gt=0.0, le=1.0, description="LightGBM shrinkage.")
    rounds: int = Field(default=500, ge=1, description="Upper bound on boosting rounds.")
    early_stopping: int = Field(default=50, ge=1, description="Stop when held-out nDCG@10 has not improved this long.")
    min_data_in_leaf: int = Field(default=20, ge=1, description="LightGBM min_data_in_leaf.")
    seed: int = Field(default=0, description="Seeds the query split and LightGBM.")
    min_gain: float = Field(
        default=0.005,
        description="Gate: the learnt order must beat the served order on held-out (out-of-fold) train queries "
        "(click-model labels, nDCG@10) by this much, with a bootstrap lower bound above zero, to be written; "
        "otherwise serving keeps the order it has.",
    )
    confidence: float = Field(
        default=0.9,
        ge=0.0,
        lt=1.0,
        description="Gate: the one-sided bootstrap bound at this level on the mean per-query gain must be above "
        "zero (0: no bound, the mean alone decides).",
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
    oof: np.ndarray | None = None  # out-of-fold score per row, set by train_ranker (training.gate reads it)

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
        raise ValueError(
            "no impression in the logs carries ranking features (search.log_features is off, or the logs were "
            "imported: training.feature_replay.replay_features computes them, as `sift train ranker` does)"
        )
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


def _folds(queries: Sequence[str], k: int, seed: int) -> np.ndarray:
    """Fold (0..k-1) of every row, by a seeded hash of its query: a query's rows share a fold, stably."""

    def fold(q: str) -> int:
        digest = hashlib.sha256(f"{seed}\x1f{q}".encode()).digest()
        return int.from_bytes(digest[:8], "big") % k

    return np.array([fold(q) for q in queries], dtype=np.int64)


def per_query_ndcg(data: RankerData, rows: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """nDCG@10 of each query among `rows` ordered by `scores` (queries with no relevant row left out)."""
    per: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(rows):
        per[data.queries[r]].append(i)
    out = {q: ndcg_at(data.y[rows[idx]], scores[idx]) for q, idx in per.items()}
    return {q: v for q, v in out.items() if not math.isnan(v)}


def mean_ndcg(data: RankerData, rows: np.ndarray, scores: np.ndarray) -> float:
    vals = list(per_query_ndcg(data, rows, scores).values())
    return float(np.mean(vals)) if vals else math.nan


def lower_bound(diffs: Sequence[float], seed: int, level: float = 0.9, draws: int = 2000) -> float:
    """One-sided bootstrap lower bound of the mean per-query gain: the gate's confidence that it is real."""
    d = np.asarray(diffs, dtype=np.float64)
    if len(d) < 2:
        return math.nan
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, len(d), size=(draws, len(d)))].mean(axis=1)
    return float(np.quantile(means, 1.0 - level))


def gain(meta: RankerMeta) -> float:
    """Held-out nDCG@10 of the learnt order minus the served order's (click-model labels, train queries)."""
    return meta.metrics["heldout_ndcg10_ltr"] - meta.metrics["heldout_ndcg10_fused"]


def passes_gate(meta: RankerMeta, cfg: RankerTrainConfig) -> bool:
    """The mean out-of-fold gain reaches `min_gain` and (unless `confidence` is 0) its bound is above zero."""
    if gain(meta) < cfg.min_gain:
        return False
    lcb = meta.metrics.get("heldout_gain_lcb", math.nan)
    return cfg.confidence == 0 or (not math.isnan(lcb) and lcb > 0)


def train_ranker(data: RankerData, cfg: RankerTrainConfig) -> tuple[Any, RankerMeta]:
    """Cross-fitted LambdaMART: each of `folds` folds of train queries is scored by a model fitted on the other
    folds (early stopping on one of those), so every train query gets an honest held-out score for the gate; the
    model written is fitted on all queries for the folds' mean number of rounds.

    Why folds: one 20% hold-out of a few dozen queries let a lucky split through the gate (CISI, Cranfield at
    1k sessions); scoring every query out of fold, with a bootstrap bound on the gain, does not."""
    import lightgbm as lgb

    folds = _folds(data.queries, cfg.folds, cfg.seed)
    if len(set(folds.tolist())) < 3:
        raise ValueError(f"{len(set(data.queries))} queries are too few for {cfg.folds}-fold cross-fitting")
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
    names = list(FEATURES)

    def dataset(rows: np.ndarray, ref: Any = None) -> Any:
        return lgb.Dataset(
            data.x[rows], data.y[rows], group=data.groups(rows), feature_name=names, init_score=base[rows],
            reference=ref,
        )  # fmt: skip

    oof = np.zeros(len(data.y))
    rounds: list[int] = []
    present = sorted(set(folds.tolist()))
    for i, k in enumerate(present):
        # Early stopping reads the next fold, never the scored one: picking the best round on the very rows it
        # is scored on made pure-noise labels look like a gain (the old single hold-out did exactly that).
        stop = present[(i + 1) % len(present)]
        held, val = np.flatnonzero(folds == k), np.flatnonzero(folds == stop)
        train = np.flatnonzero((folds != k) & (folds != stop))  # >= 1 fold: at least 3 are present
        dtrain = dataset(train)
        booster = lgb.train(
            params, dtrain, num_boost_round=cfg.rounds, valid_sets=[dataset(val, dtrain)],
            callbacks=[lgb.early_stopping(cfg.early_stopping, verbose=False)],
        )  # fmt: skip
        rounds.append(max(1, booster.best_iteration))
        oof[held] = np.asarray(booster.predict(data.x[held], num_iteration=booster.best_iteration)) + base[held]
    data.oof = oof
    final_rounds = max(1, round(float(np.mean(rounds))))
    booster = lgb.train(params, dataset(np.arange(len(data.y))), num_boost_round=final_rounds)
    seconds = time.perf_counter() - t0
    every = np.arange(len(data.y))
    fused = np.nan_to_num(-data.x[:, FUSED_RANK], nan=-1e9)
    learnt_q, fused_q = per_query_ndcg(data, every, oof), per_query_ndcg(data, every, fused)
    diffs = [learnt_q[q] - fused_q[q] for q in learnt_q]
    digest = hash_rows(data.x, data.y, data.groups(every))
    metrics = {
        "heldout_ndcg10_ltr": round(float(np.mean(list(learnt_q.values()))), 4) if learnt_q else math.nan,
        "heldout_ndcg10_fused": round(float(np.mean(list(fused_q.values()))), 4) if fused_q else math.nan,
        "heldout_gain_lcb": round(lower_bound(diffs, cfg.seed, cfg.confidence or 0.5), 4),
        "heldout_queries": float(len(learnt_q)),
        "train_queries": float(len(set(data.queries))),
        "rows": float(len(data.y)),
        "best_iteration": float(final_rounds),
        "fit_s": round(seconds, 3),
    }
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    meta = RankerMeta(
        version=f"ltr-{digest[:12]}-{stamp}", features=list(FEATURES), priors=data.priors, metrics=metrics,
        data_hash=digest, base_weight=cfg.base_weight, familiar=familiar_sets(data.queries),
        params={**params, "click_model": cfg.click_model, "grades": cfg.grades, "folds": cfg.folds},
    )  # fmt: skip
    return booster, meta
