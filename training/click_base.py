"""Shared plumbing of the click models (`training.click_models` is the public module): Beta priors, fit
reports, propensities, the `ClickModel` protocol, and the pair-table base class with its EM loop.

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

from training.click_data import DEFAULT_DEPTH, ClickArrays, PairIndex, Session, encode_sessions

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


class EMConfig(BaseModel):
    """What every EM-fitted model shares."""

    model_config = ConfigDict(extra="forbid")

    depth: int = Field(default=DEFAULT_DEPTH, ge=1, description="Ranks modelled; lower ranks are dropped.")
    max_iter: int = Field(default=300, ge=0, description="Upper bound on EM iterations (M-steps).")
    tol: float = Field(default=1e-7, ge=0.0, description="Stop when the per-session objective gains less.")
    attractiveness_prior: BetaPrior = Field(default_factory=BetaPrior, description="Prior of alpha / a_{q,d}.")


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


def bernoulli_ll(p: np.ndarray, arrays: ClickArrays) -> np.ndarray:
    """Per-session LL of independent clicks with probabilities p (padding cells contribute 0)."""
    q = np.clip(p, EPS, 1.0 - EPS)
    cell = np.where(arrays.clicks, np.log(q), np.log1p(-q))
    return np.where(arrays.shown, cell, 0.0).sum(axis=1)


def with_prior(values: np.ndarray, prior: BetaPrior) -> np.ndarray:
    """Append the prior mean, so indexing with UNKNOWN (-1) yields the prior."""
    return np.append(values, prior.mean)


class PairModel:
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
