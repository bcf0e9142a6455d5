"""The dynamic Bayesian network click model (Chapelle & Zhang, WWW 2009), fitted by MAP-EM with a
forward-backward pass over each result page (Chuklin, Markov & de Rijke 2015, ch. 4). Public through
`training.click_models`."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Self

import numpy as np
from pydantic import Field

from training.click_base import BetaPrior, EMConfig, PairModel, Propensities, with_prior
from training.click_data import ClickArrays, PairIndex, Session


class DBNConfig(EMConfig):
    """Dynamic Bayesian network: attractiveness a, satisfaction s, continuation gamma."""

    satisfaction_prior: BetaPrior = Field(default_factory=BetaPrior, description="Prior of s_{q,d}.")
    continuation_prior: BetaPrior = Field(default_factory=BetaPrior, description="Prior of gamma.")


def _dbn_transitions(a: np.ndarray, s: np.ndarray, g: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, ...]:
    """P(E_{r+1}=e', C_r=c_r | E_r=e) per cell, for the observed c_r: (from0_to0, from1_to0, from1_to1).
    From E=0 nothing is clicked and the user stays gone; padding cells (a=0, g=1) are identities."""
    from0_to0 = np.where(c, 0.0, 1.0)
    from1_to1 = np.where(c, a * (1.0 - s) * g, (1.0 - a) * g)
    from1_to0 = np.where(c, a * (1.0 - (1.0 - s) * g), (1.0 - a) * (1.0 - g))
    return from0_to0, from1_to0, from1_to1


def forward_backward(
    a: np.ndarray, s: np.ndarray, g: np.ndarray, c: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Forward f[:, r, e] = P(C_<r, E_r=e) and backward b[:, r, e] = P(C_>=r | E_r=e) over all sessions at
    once (loop over ranks only; depth is small, so no rescaling is needed). Returns (f, b, P(C))."""
    n, d = c.shape
    t00, t10, t11 = _dbn_transitions(a, s, g, c)
    f = np.zeros((n, d + 1, 2))
    b = np.ones((n, d + 1, 2))
    f[:, 0, 1] = 1.0  # the first result is always examined
    for r in range(d):
        f[:, r + 1, 0] = f[:, r, 0] * t00[:, r] + f[:, r, 1] * t10[:, r]
        f[:, r + 1, 1] = f[:, r, 1] * t11[:, r]
    for r in range(d - 1, -1, -1):
        b[:, r, 0] = t00[:, r] * b[:, r + 1, 0]
        b[:, r, 1] = t10[:, r] * b[:, r + 1, 0] + t11[:, r] * b[:, r + 1, 1]
    return f, b, np.maximum(b[:, 0, 1], np.finfo(float).tiny)


class DBNModel(PairModel):
    """Dynamic Bayesian network (Chapelle & Zhang 2009): the user examines rank 1, clicks an examined doc if
    attractive (a_{q,d}), is satisfied after a click with probability s_{q,d} and then stops, otherwise goes
    on to the next rank with probability gamma. relevance = a * s: a click that ends the search counts."""

    name = "dbn"

    def __init__(self, config: DBNConfig | None = None) -> None:
        super().__init__()
        self.config = config or DBNConfig()
        self.depth = self.config.depth
        self.a = with_prior(np.zeros(0), self.config.attractiveness_prior)
        self.s = with_prior(np.zeros(0), self.config.satisfaction_prior)
        self.gamma = self.config.continuation_prior.mean

    def _cells(self, arrays: ClickArrays) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        a = np.where(arrays.shown, self.a[arrays.pairs], 0.0)
        g = np.where(arrays.shown, self.gamma, 1.0)
        return a, self.s[arrays.pairs], g

    def fit(self, sessions: Sequence[Session]) -> Self:
        start = time.perf_counter()
        cfg = self.config
        self.index = PairIndex()
        arrays = self._encode(sessions, grow=True)
        n, shown, c = len(self.index), arrays.shown, arrays.clicks
        clicked = shown & c
        has_next = np.zeros_like(shown)
        has_next[:, :-1] = shown[:, 1:]  # a continuation is observable only above a shown rank
        views = np.bincount(arrays.pairs[shown], minlength=n)
        click_counts = np.bincount(arrays.pairs[clicked], minlength=n)
        self.a = np.full(n + 1, cfg.attractiveness_prior.mean)
        self.s = np.full(n + 1, cfg.satisfaction_prior.mean)
        self.gamma = 0.5

        def step(update: bool) -> tuple[float, float]:
            a, s, g = self._cells(arrays)
            f, b, prob = forward_backward(a, s, g, c)
            ll = float(np.log(prob).sum())
            log_prior = cfg.attractiveness_prior.log_density(self.a[:n])
            log_prior += cfg.satisfaction_prior.log_density(self.s[:n])
            log_prior += cfg.continuation_prior.log_density(np.array([self.gamma]))
            if update:
                self._m_step(arrays, f, b, prob, clicked, has_next, views, click_counts)
            return ll, log_prior

        self._run_em(len(sessions), step, cfg, start)
        return self

    def _m_step(
        self, arrays: ClickArrays, f: np.ndarray, b: np.ndarray, prob: np.ndarray, clicked: np.ndarray,
        has_next: np.ndarray, views: np.ndarray, click_counts: np.ndarray,
    ) -> None:  # fmt: skip
        """Expected counts from the forward-backward posteriors (Chuklin et al. 2015, ch. 4), then MAP."""
        cfg, n = self.config, len(self.a) - 1
        a, s, g = self._cells(arrays)
        p = prob[:, None]
        exam = f[:, :-1, 1] * b[:, :-1, 1] / p  # P(E_r = 1 | C)
        gone = f[:, :-1, 0] * b[:, :-1, 0] / p  # P(E_r = 0 | C)
        post_a = np.where(arrays.clicks, 1.0, a * gone)  # unclicked: attractive only if not examined
        b0, b1 = b[:, 1:, 0], b[:, 1:, 1]
        after_click = (1.0 - (1.0 - s) * g) * b0 + (1.0 - s) * g * b1
        post_s = s * b0 / np.maximum(after_click, np.finfo(float).tiny)  # P(S_r = 1 | C), clicked cells
        trials = exam - np.where(clicked, post_s, 0.0)  # P(E_r = 1, S_r = 0 | C)
        successes = f[:, 1:, 1] * b[:, 1:, 1] / p  # P(E_{r+1} = 1 | C)
        pid, shown = arrays.pairs, arrays.shown
        new_a = cfg.attractiveness_prior.estimate(np.bincount(pid[shown], post_a[shown], minlength=n), views)
        new_s = cfg.satisfaction_prior.estimate(np.bincount(pid[clicked], post_s[clicked], minlength=n), click_counts)
        self.a = with_prior(new_a, cfg.attractiveness_prior)
        self.s = with_prior(new_s, cfg.satisfaction_prior)
        gamma = cfg.continuation_prior.estimate(
            np.array([successes[has_next].sum()]), np.array([trials[has_next].sum()])
        )
        self.gamma = float(gamma[0])

    def _click_matrix(self, arrays: ClickArrays) -> np.ndarray:
        """Marginal P(C_r = 1) = P(E_r = 1) * a_r, propagating P(E_r = 1) down the page."""
        a, s, g = self._cells(arrays)
        out = np.zeros_like(a)
        examined = np.ones(arrays.n_sessions)
        for r in range(arrays.depth):
            out[:, r] = examined * a[:, r]
            examined = examined * ((1.0 - a[:, r]) * g[:, r] + a[:, r] * (1.0 - s[:, r]) * g[:, r])
        return np.where(arrays.shown, out, 0.0)

    def _session_ll(self, arrays: ClickArrays) -> np.ndarray:
        a, s, g = self._cells(arrays)
        return np.log(forward_backward(a, s, g, arrays.clicks)[2])

    def relevance(self, query: str, doc: str) -> float:
        i = self.index.get(query, doc)
        return float(self.a[i] * self.s[i])

    @property
    def propensities(self) -> Propensities | None:
        return None  # examination in a DBN depends on the docs above, not on the rank alone
