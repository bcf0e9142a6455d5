"""Click models — a CTR baseline, the position-based model (PBM) and the dynamic Bayesian network (DBN) —
fitted on click logs by EM in plain numpy.

Why click models: a click says "seen and wanted", and what is seen depends on the rank. A click model
separates the two, so the "wanted" part (attractiveness / relevance of a (query, doc) pair) can serve as a
judgment, and PBM's examination probabilities serve as propensities for unbiased learning to rank.

Why numpy and not `clax-models` (PyPI, suggested in the issue): clax is built on JAX and trains by gradient
descent; our stack is torch + numpy, and EM over a few parameter tables is a handful of `bincount`s per
iteration, so adding JAX is not worth it.

References: Chuklin, Markov & de Rijke, "Click Models for Web Search" (2015), ch. 3-4 (PBM and DBN EM);
Chapelle & Zhang, "A Dynamic Bayesian Network Click Model for Web Search Ranking" (WWW 2009).

Conventions shared by all models:
- parameters are keyed by (Session.query, doc); a pair never seen in training gets the prior mean;
- `log_likelihood` is the MEAN PER SESSION of log P(click vector at ranks 1..depth), in nats;
- priors are Beta pseudo-counts added in every M-step (MAP-EM), so what EM never decreases is the
  objective LL + log prior (`FitReport.objective`); with zero pseudo-counts that is the plain LL;
- ranks below `depth` are ignored, and `click_probs` returns at most `depth` values.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Protocol, Self, runtime_checkable

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from training.click_data import DEFAULT_DEPTH, UNKNOWN, ClickArrays, PairIndex, Session, encode_sessions

EPS = 1e-9  # probabilities are kept in [EPS, 1 - EPS] so logs stay finite


class BetaPrior(BaseModel):
    """Beta pseudo-counts: smooth sparse pairs and give unseen pairs a value."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    clicks: float = Field(default=1.0, ge=0.0, description="Pseudo-successes added to every estimate.")
    skips: float = Field(default=1.0, ge=0.0, description="Pseudo-failures added to every estimate.")

    @property
    def mean(self) -> float:
        """Value of a parameter with no data (0.5 with no pseudo-counts at all)."""
        total = self.clicks + self.skips
        return self.clicks / total if total > 0 else 0.5

    def estimate(self, successes: np.ndarray, trials: np.ndarray) -> np.ndarray:
        """MAP estimate per parameter: (successes + clicks) / (trials + clicks + skips)."""
        num = np.asarray(successes, dtype=float) + self.clicks
        den = np.asarray(trials, dtype=float) + self.clicks + self.skips
        out = np.divide(num, den, out=np.full(num.shape, self.mean), where=den > 0)
        return np.clip(out, EPS, 1.0 - EPS)

    def log_density(self, p: np.ndarray) -> float:
        """Unnormalized log prior of the parameters (the term MAP-EM adds to the LL)."""
        q = np.clip(np.asarray(p, dtype=float), EPS, 1.0 - EPS)
        return float(np.sum(self.clicks * np.log(q) + self.skips * np.log1p(-q)))


class CTRConfig(BaseModel):
    """Click-through-rate baseline."""

    model_config = ConfigDict(extra="forbid")

    depth: int = Field(default=DEFAULT_DEPTH, ge=1, description="Ranks modelled; lower ranks are dropped.")
    prior: BetaPrior = Field(default_factory=BetaPrior, description="Smoothing of the per-pair CTR.")


class EMConfig(BaseModel):
    """What every EM-fitted model shares."""

    model_config = ConfigDict(extra="forbid")

    depth: int = Field(default=DEFAULT_DEPTH, ge=1, description="Ranks modelled; lower ranks are dropped.")
    max_iter: int = Field(default=300, ge=0, description="Upper bound on EM iterations (M-steps).")
    tol: float = Field(default=1e-7, ge=0.0, description="Stop when the per-session objective gains less.")
    attractiveness_prior: BetaPrior = Field(default_factory=BetaPrior, description="Prior of alpha / a_{q,d}.")


class PBMConfig(EMConfig):
    """Position-based model: P(click) = gamma_rank * alpha_{q,d}."""

    examination_prior: BetaPrior = Field(default_factory=BetaPrior, description="Prior of gamma_rank.")


class DBNConfig(EMConfig):
    """Dynamic Bayesian network: attractiveness a, satisfaction s, continuation gamma."""

    satisfaction_prior: BetaPrior = Field(default_factory=BetaPrior, description="Prior of s_{q,d}.")
    continuation_prior: BetaPrior = Field(default_factory=BetaPrior, description="Prior of gamma.")


class FitReport(BaseModel):
    """How a fit went: the EM trace lets a caller check convergence and monotonicity."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    iterations: int = Field(description="M-steps done (0 for closed-form models).")
    converged: bool = Field(description="The objective gain fell below tol before max_iter.")
    seconds: float = Field(description="Wall time of the fit.")
    log_likelihood: tuple[float, ...] = Field(description="Mean per-session training LL before each M-step.")
    objective: tuple[float, ...] = Field(description="Per-session LL + log prior / n_sessions, same points.")


class Propensities(BaseModel):
    """Examination probability per rank 1..depth, raw and relative to rank 1."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    raw: tuple[float, ...] = Field(description="Fitted value per rank (scale is not identifiable in PBM).")
    relative: tuple[float, ...] = Field(description="raw / raw[0]: what inverse-propensity weighting needs.")

    @classmethod
    def of(cls, raw: np.ndarray) -> Propensities:
        base = float(raw[0]) if raw[0] > 0 else 1.0
        return cls(raw=tuple(float(x) for x in raw), relative=tuple(float(x) / base for x in raw))


@runtime_checkable
class ClickModel(Protocol):
    """What training code needs from a click model: fit, predict, score, judge."""

    name: str

    def fit(self, sessions: Sequence[Session]) -> Self:
        """Learn parameters from a click log; returns the model."""
        ...

    def click_probs(self, session: Session) -> np.ndarray:
        """Marginal P(click) per rank 1..min(len, depth) for the docs the session shows (its clicks unused)."""
        ...

    def log_likelihood(self, sessions: Sequence[Session]) -> float:
        """Mean per-session log P(observed clicks), nats."""
        ...

    def relevance(self, query: str, doc: str) -> float:
        """Relevance estimate of a pair for judgments; the prior for unseen pairs."""
        ...

    @property
    def propensities(self) -> Propensities | None:
        """Examination probability per rank, where the model has one."""
        ...


def _bernoulli_ll(p: np.ndarray, arrays: ClickArrays) -> np.ndarray:
    """Per-session LL of independent clicks with probabilities p (padding cells contribute 0)."""
    q = np.clip(p, EPS, 1.0 - EPS)
    cell = np.where(arrays.clicks, np.log(q), np.log1p(-q))
    return np.where(arrays.shown, cell, 0.0).sum(axis=1)


def _with_prior(values: np.ndarray, prior: BetaPrior) -> np.ndarray:
    """Append the prior mean, so indexing with UNKNOWN (-1) yields the prior."""
    return np.append(values, prior.mean)


class _PairModel:
    """Shared plumbing: pair index, encoding, LL and per-session prediction from the array form."""

    name = "base"
    depth: int

    def __init__(self) -> None:
        self.index = PairIndex()
        self.report: FitReport | None = None

    def _encode(self, sessions: Sequence[Session], grow: bool) -> ClickArrays:
        return encode_sessions(sessions, self.index, self.depth, grow=grow)

    def _click_matrix(self, arrays: ClickArrays) -> np.ndarray:
        raise NotImplementedError

    def _session_ll(self, arrays: ClickArrays) -> np.ndarray:
        raise NotImplementedError

    def click_probs(self, session: Session) -> np.ndarray:
        arrays = self._encode([session], grow=False)
        return self._click_matrix(arrays)[0, : min(len(session.docs), self.depth)]

    def log_likelihood(self, sessions: Sequence[Session]) -> float:
        if not sessions:
            raise ValueError("no sessions")
        return float(self._session_ll(self._encode(sessions, grow=False)).mean())

    def _run_em(
        self, n_sessions: int, step: Callable[[bool], tuple[float, float]], cfg: EMConfig, start: float
    ) -> None:
        """EM loop: `step(update)` runs an E-step at the current parameters, returns (total LL, log prior),
        and does the M-step when update is True. Records the trace in `self.report`."""
        lls: list[float] = []
        objs: list[float] = []
        converged = False
        for _ in range(cfg.max_iter):
            ll, log_prior = step(True)
            lls.append(ll / n_sessions)
            objs.append((ll + log_prior) / n_sessions)
            if len(objs) >= 2 and objs[-1] - objs[-2] < cfg.tol:
                converged = True
                break
        ll, log_prior = step(False)  # trace point of the final parameters
        lls.append(ll / n_sessions)
        objs.append((ll + log_prior) / n_sessions)
        seconds = time.perf_counter() - start
        self.report = FitReport(
            iterations=len(lls) - 1, converged=converged, seconds=seconds, log_likelihood=tuple(lls),
            objective=tuple(objs),
        )  # fmt: skip


class CTRModel(_PairModel):
    """P(click) = smoothed CTR of the (query, doc) pair, whatever the rank; per-rank CTR for unseen pairs.

    The baseline every click model must beat. Its propensities are the per-rank CTRs, which estimate
    examination only when result orders were randomized (otherwise rank and relevance are confounded)."""

    name = "ctr"

    def __init__(self, config: CTRConfig | None = None) -> None:
        super().__init__()
        self.config = config or CTRConfig()
        self.depth = self.config.depth
        self.ctr = _with_prior(np.zeros(0), self.config.prior)
        self.rank_ctr = np.full(self.depth, self.config.prior.mean)

    def fit(self, sessions: Sequence[Session]) -> Self:
        start = time.perf_counter()
        self.index = PairIndex()
        arrays = self._encode(sessions, grow=True)
        n, shown, clicked = len(self.index), arrays.shown, arrays.shown & arrays.clicks
        views = np.bincount(arrays.pairs[shown], minlength=n)
        clicks = np.bincount(arrays.pairs[clicked], minlength=n)
        self.ctr = _with_prior(self.config.prior.estimate(clicks, views), self.config.prior)
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
        return _bernoulli_ll(self._click_matrix(arrays), arrays)

    def relevance(self, query: str, doc: str) -> float:
        return float(self.ctr[self.index.get(query, doc)])

    @property
    def propensities(self) -> Propensities | None:
        return Propensities.of(self.rank_ctr)


class PBMModel(_PairModel):
    """Position-based model: a doc at rank r is examined with probability gamma_r, independently of the
    docs around it, and clicked if examined and attractive (probability alpha_{q,d}). gamma_r is the
    propensity that inverse-propensity weighting divides by."""

    name = "pbm"

    def __init__(self, config: PBMConfig | None = None) -> None:
        super().__init__()
        self.config = config or PBMConfig()
        self.depth = self.config.depth
        self.alpha = _with_prior(np.zeros(0), self.config.attractiveness_prior)
        self.gamma = np.full(self.depth, 0.5)

    def fit(self, sessions: Sequence[Session]) -> Self:
        start = time.perf_counter()
        cfg = self.config
        self.index = PairIndex()
        arrays = self._encode(sessions, grow=True)
        n = len(self.index)
        pid, rank = arrays.pairs[arrays.shown], arrays.ranks()[arrays.shown]
        click = arrays.clicks[arrays.shown]
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
                self.alpha = _with_prior(alpha, cfg.attractiveness_prior)
                self.gamma = cfg.examination_prior.estimate(np.bincount(rank, post_e, minlength=self.depth), rank_views)
            return ll, log_prior

        self._run_em(len(sessions), step, cfg, start)
        return self

    def _click_matrix(self, arrays: ClickArrays) -> np.ndarray:
        return np.where(arrays.shown, self.alpha[arrays.pairs] * self.gamma[arrays.ranks()], 0.0)

    def _session_ll(self, arrays: ClickArrays) -> np.ndarray:
        return _bernoulli_ll(self._click_matrix(arrays), arrays)

    def relevance(self, query: str, doc: str) -> float:
        return float(self.alpha[self.index.get(query, doc)])

    @property
    def propensities(self) -> Propensities | None:
        return Propensities.of(self.gamma)


def _dbn_transitions(a: np.ndarray, s: np.ndarray, g: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, ...]:
    """P(E_{r+1}=e', C_r=c_r | E_r=e) per cell, for the observed c_r: (from0_to0, from1_to0, from1_to1).
    From E=0 nothing is clicked and the user stays gone; padding cells (a=0, g=1) are identities."""
    from0_to0 = np.where(c, 0.0, 1.0)
    from1_to1 = np.where(c, a * (1.0 - s) * g, (1.0 - a) * g)
    from1_to0 = np.where(c, a * (1.0 - (1.0 - s) * g), (1.0 - a) * (1.0 - g))
    return from0_to0, from1_to0, from1_to1


def _forward_backward(
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


class DBNModel(_PairModel):
    """Dynamic Bayesian network (Chapelle & Zhang 2009): the user examines rank 1, clicks an examined doc if
    attractive (a_{q,d}), is satisfied after a click with probability s_{q,d} and then stops, otherwise goes
    on to the next rank with probability gamma. relevance = a * s: a click that ends the search counts."""

    name = "dbn"

    def __init__(self, config: DBNConfig | None = None) -> None:
        super().__init__()
        self.config = config or DBNConfig()
        self.depth = self.config.depth
        self.a = _with_prior(np.zeros(0), self.config.attractiveness_prior)
        self.s = _with_prior(np.zeros(0), self.config.satisfaction_prior)
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
            f, b, prob = _forward_backward(a, s, g, c)
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
        self.a = _with_prior(new_a, cfg.attractiveness_prior)
        self.s = _with_prior(new_s, cfg.satisfaction_prior)
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
        return np.log(_forward_backward(a, s, g, arrays.clicks)[2])

    def relevance(self, query: str, doc: str) -> float:
        i = self.index.get(query, doc)
        return float(self.a[i] * self.s[i])

    @property
    def propensities(self) -> Propensities | None:
        return None  # examination in a DBN depends on the docs above, not on the rank alone
