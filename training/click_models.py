"""Click models — a CTR baseline, the position-based model (PBM) and the dynamic Bayesian network (DBN) —
fitted on click logs by EM in plain numpy.

Why click models: a click says "seen and wanted", and what is seen depends on the rank. A click model
separates the two, so the "wanted" part (attractiveness / relevance of a (query, doc) pair) can serve as a
judgment, and PBM's examination probabilities serve as propensities for unbiased learning to rank.

Why numpy and not `clax-models` (PyPI, suggested in the issue): clax is built on JAX and trains by gradient
descent; our stack is torch + numpy, and EM over a few parameter tables is a handful of `bincount`s per
iteration, so adding JAX is not worth it.

References: Chuklin, Markov & de Rijke, "Click Models for Web Search" (2015), ch. 3-4 (PBM and DBN EM);
Chapelle & Zhang, "A Dynamic Bayesian Network Click Model for Web Search Ranking" (WWW 2009); Laird,
"Nonparametric maximum likelihood estimation of a mixing distribution" (JASA 1978) for PBM's learnt prior.

The shared conventions (pair keys, per-session LL, priors, depth) are in `training.click_base`; the DBN
lives in `training.click_dbn` and is re-exported here.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Literal, Self

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from training.click_base import (
    EPS,
    BetaPrior,
    ClickModel,
    EMConfig,
    FitReport,
    PairModel,
    Propensities,
    bernoulli_ll,
    with_prior,
)
from training.click_data import DEFAULT_DEPTH, UNKNOWN, ClickArrays, PairIndex, Session
from training.click_dbn import DBNConfig, DBNModel

__all__ = [
    "BetaPrior",
    "CTRConfig",
    "CTRModel",
    "ClickModel",
    "DBNConfig",
    "DBNModel",
    "FitReport",
    "PBMConfig",
    "PBMModel",
    "Propensities",
]


class CTRConfig(BaseModel):
    """Click-through-rate baseline."""

    model_config = ConfigDict(extra="forbid")

    depth: int = Field(default=DEFAULT_DEPTH, ge=1, description="Ranks modelled; lower ranks are dropped.")
    prior: BetaPrior = Field(default_factory=BetaPrior, description="Smoothing of the per-pair CTR.")


class PBMConfig(EMConfig):
    """Position-based model: P(click) = gamma_rank * alpha_{q,d}."""

    examination_prior: BetaPrior = Field(default_factory=BetaPrior, description="Prior of gamma_rank.")
    attractiveness: Literal["mixture", "beta"] = Field(
        default="mixture",
        description="How alpha_{q,d} is estimated. 'mixture': the distribution of attractiveness over all "
        "pairs is learnt (a discrete distribution on `grid` points, started from attractiveness_prior's "
        "shape), each pair gets its posterior mean, and gamma_1 = 1 fixes the scale. 'beta': MAP with "
        "attractiveness_prior for every pair; on sparse logs (a few dozen views per pair) its fixed prior "
        "bends the propensities.",
    )
    max_iter: int = Field(default=1000, ge=0, description="Upper bound on EM iterations (M-steps).")
    grid: int = Field(default=32, ge=4, le=512, description="mixture: support points of the alpha distribution.")


class CTRModel(PairModel):
    """P(click) = smoothed CTR of the (query, doc) pair, whatever the rank; per-rank CTR for unseen pairs.

    The baseline every click model must beat. Its propensities are the per-rank CTRs, which estimate
    examination only when result orders were randomized (otherwise rank and relevance are confounded)."""

    name = "ctr"

    def __init__(self, config: CTRConfig | None = None) -> None:
        super().__init__()
        self.config = config or CTRConfig()
        self.depth = self.config.depth
        self.ctr = with_prior(np.zeros(0), self.config.prior)
        self.rank_ctr = np.full(self.depth, self.config.prior.mean)

    def fit(self, sessions: Sequence[Session]) -> Self:
        start = time.perf_counter()
        self.index = PairIndex()
        arrays = self._encode(sessions, grow=True)
        n, shown, clicked = len(self.index), arrays.shown, arrays.shown & arrays.clicks
        views = np.bincount(arrays.pairs[shown], minlength=n)
        clicks = np.bincount(arrays.pairs[clicked], minlength=n)
        self.ctr = with_prior(self.config.prior.estimate(clicks, views), self.config.prior)
        self.rank_ctr = self.config.prior.estimate(clicked.sum(axis=0), shown.sum(axis=0))
        ll = float(self._session_ll(arrays).sum()) / max(len(sessions), 1)
        self.report = FitReport(
            iterations=0, converged=True, seconds=time.perf_counter() - start, log_likelihood=(ll,), objective=(ll,)
        )
        return self

    def _click_matrix(self, arrays: ClickArrays) -> np.ndarray:
        p = np.where(arrays.pairs != UNKNOWN, self.ctr[arrays.pairs], self.rank_ctr[arrays.ranks()])
        return np.where(arrays.shown, p, 0.0)

    def _session_ll(self, arrays: ClickArrays) -> np.ndarray:
        return bernoulli_ll(self._click_matrix(arrays), arrays)

    def relevance(self, query: str, doc: str) -> float:
        return float(self.ctr[self.index.get(query, doc)])

    @property
    def propensities(self) -> Propensities | None:
        return Propensities.of(self.rank_ctr)


class PBMModel(PairModel):
    """Position-based model: a doc at rank r is examined with probability gamma_r, independently of the
    docs around it, and clicked if examined and attractive (probability alpha_{q,d}). gamma_r is the
    propensity that inverse-propensity weighting divides by."""

    name = "pbm"

    def __init__(self, config: PBMConfig | None = None) -> None:
        super().__init__()
        self.config = config or PBMConfig()
        self.depth = self.config.depth
        self.alpha = with_prior(np.zeros(0), self.config.attractiveness_prior)
        self.gamma = np.full(self.depth, 0.5)
        self.mixture: tuple[np.ndarray, np.ndarray] | None = None  # (grid, weights) after a mixture fit

    def fit(self, sessions: Sequence[Session]) -> Self:
        start = time.perf_counter()
        cfg = self.config
        self.index = PairIndex()
        arrays = self._encode(sessions, grow=True)
        n = len(self.index)
        pid, rank = arrays.pairs[arrays.shown], arrays.ranks()[arrays.shown]
        click = arrays.clicks[arrays.shown]
        if cfg.attractiveness == "mixture":
            self._fit_mixture(len(sessions), n, pid, rank, click, start)
            return self
        views, rank_views = np.bincount(pid, minlength=n), np.bincount(rank, minlength=self.depth)
        self.alpha = np.full(n + 1, cfg.attractiveness_prior.mean)
        self.gamma = np.full(self.depth, 0.5)

        def step(update: bool) -> tuple[float, float]:
            a, g = self.alpha[pid], self.gamma[rank]
            p = np.clip(a * g, EPS, 1.0 - EPS)
            ll = float(np.where(click, np.log(p), np.log1p(-p)).sum())
            log_prior = cfg.attractiveness_prior.log_density(self.alpha[:n])
            log_prior += cfg.examination_prior.log_density(self.gamma)
            if update:  # posteriors of "attractive" and "examined"; both are certain on a click
                post_a = np.where(click, 1.0, a * (1.0 - g) / (1.0 - p))
                post_e = np.where(click, 1.0, g * (1.0 - a) / (1.0 - p))
                alpha = cfg.attractiveness_prior.estimate(np.bincount(pid, post_a, minlength=n), views)
                self.alpha = with_prior(alpha, cfg.attractiveness_prior)
                self.gamma = cfg.examination_prior.estimate(np.bincount(rank, post_e, minlength=self.depth), rank_views)
            return ll, log_prior

        self._run_em(len(sessions), step, cfg, start)
        return self

    def _fit_mixture(
        self, n_sessions: int, n: int, pid: np.ndarray, rank: np.ndarray, click: np.ndarray, start: float
    ) -> None:
        """EM for PBM with alpha drawn from a learnt discrete distribution (weights `pi` on a grid).

        Why: with per-pair MAP, a fixed Beta prior is worth as much as a pair's few examined views and the
        scale of gamma vs alpha is left to the priors; both bend the propensities on sparse logs (0.06-0.08
        off at rank 2 on a SciFact-train-sized log). Integrating alpha out against a prior learnt from all
        pairs removes the per-pair bias. A pair's likelihood depends only on its (rank, clicked) counts,
        so each iteration is a few (pairs x grid) matrix products."""
        cfg, depth = self.config, self.depth
        grid = (np.arange(cfg.grid) + 0.5) / cfg.grid
        counts = np.bincount((pid * depth + rank) * 2 + click, minlength=n * depth * 2).reshape(n, depth, 2)
        skips, clicks = counts[..., 0].astype(float), counts[..., 1].astype(float)
        rank_views = counts.sum(axis=(0, 2))
        prior = cfg.attractiveness_prior
        shape = prior.clicks * np.log(grid) + prior.skips * np.log1p(-grid)  # the prior's shape on the grid
        pi = np.exp(shape - shape.max())
        pi /= pi.sum()
        self.gamma = np.full(depth, 0.5)
        self.gamma[0] = 1.0 - EPS  # rank 1 is always examined: fixes the scale clicks leave open

        def step(update: bool) -> tuple[float, float]:
            nonlocal pi
            p = np.clip(self.gamma[:, None] * grid[None, :], EPS, 1.0 - EPS)  # depth x grid
            log_post = clicks @ np.log(p) + skips @ np.log1p(-p) + np.log(np.maximum(pi, 1e-300))
            top = log_post.max(axis=1, keepdims=True)
            w = np.exp(log_post - top)
            total = w.sum(axis=1, keepdims=True)
            ll = float((np.log(total[:, 0]) + top[:, 0]).sum())  # marginal: alpha integrated out
            w /= total
            self.alpha = np.append(w @ grid, pi @ grid)  # posterior means; unseen pairs get the learnt mean
            self.mixture = (grid, pi)
            log_prior = cfg.examination_prior.log_density(self.gamma[1:])
            if update:
                pi = w.mean(axis=0)
                unclicked_examined = self.gamma[:, None] * (1.0 - grid[None, :]) / (1.0 - p)  # depth x grid
                examined = clicks.sum(axis=0) + (skips * (w @ unclicked_examined.T)).sum(axis=0)
                self.gamma = cfg.examination_prior.estimate(examined, rank_views)
                self.gamma[0] = 1.0 - EPS
            return ll, log_prior

        self._run_em(n_sessions, step, cfg, start)

    def _click_matrix(self, arrays: ClickArrays) -> np.ndarray:
        return np.where(arrays.shown, self.alpha[arrays.pairs] * self.gamma[arrays.ranks()], 0.0)

    def _session_ll(self, arrays: ClickArrays) -> np.ndarray:
        return bernoulli_ll(self._click_matrix(arrays), arrays)

    def relevance(self, query: str, doc: str) -> float:
        return float(self.alpha[self.index.get(query, doc)])

    @property
    def propensities(self) -> Propensities | None:
        return Propensities.of(self.gamma)
