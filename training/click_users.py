"""Simulated users: click flags for a shown ranking, given the graded relevance of its docs.

Why: click models and click-based training can only be checked offline against users whose behaviour is
known. These users click from the judged grades of a split's qrels (passed in as dicts; nothing is read from
disk here), following one of three behaviours:
- `pbm`: rank r is examined with probability 1 / r**eta, independently; an examined doc is clicked with
  probability attractiveness[grade];
- `cascade`: scan top-down, click the first doc found attractive (attractiveness[grade]) and stop;
- `dbn`: scan top-down; click an attractive doc; after a click stop if satisfied (satisfaction[grade]),
  otherwise (and after a skip) go on to the next rank with probability gamma.
attractiveness[0] > 0 is the noise: users sometimes click non-relevant docs. Grades above the last entry use
the last entry; unjudged docs count as `unjudged_grade`. Every draw comes from the caller's seeded
`numpy.random.Generator`, so a simulation is reproducible.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from training.click_data import DEFAULT_DEPTH, Session

Probability = Annotated[float, Field(ge=0.0, le=1.0)]


class UserConfig(BaseModel):
    """Behaviour of a simulated user."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["pbm", "cascade", "dbn"] = Field(default="pbm", description="Browsing behaviour.")
    eta: float = Field(default=0.8, ge=0.0, description="pbm: P(examine rank r) = 1 / r**eta.")
    attractiveness: tuple[Probability, ...] = Field(
        default=(0.1, 0.5, 0.9), min_length=1, description="P(click | examined, grade) for grades 0, 1, ..."
    )
    satisfaction: tuple[Probability, ...] = Field(
        default=(0.1, 0.5, 0.9), min_length=1, description="dbn: P(stop | clicked, grade) for grades 0, 1, ..."
    )
    gamma: Probability = Field(default=0.9, description="dbn: P(go on to the next rank | not satisfied).")
    unjudged_grade: int = Field(default=0, ge=0, description="Grade of docs missing from the qrels.")


def _by_grade(table: tuple[float, ...], grades: np.ndarray) -> np.ndarray:
    return np.asarray(table)[np.clip(grades, 0, len(table) - 1)]


class SimulatedUser:
    """Clicks per rank for shown rankings; vectorized over many rankings at once."""

    def __init__(self, config: UserConfig | None = None) -> None:
        self.config = config or UserConfig()

    def examination(self, depth: int) -> np.ndarray:
        """pbm examination probability per rank 1..depth (the propensities a PBM fit should recover)."""
        return 1.0 / np.arange(1, depth + 1) ** self.config.eta

    def click_matrix(self, grades: np.ndarray, shown: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Click flags (n, depth) for grades (n, depth); cells with shown False are never clicked."""
        cfg = self.config
        attractive = (rng.random(grades.shape) < _by_grade(cfg.attractiveness, grades)) & shown
        if cfg.kind == "pbm":
            examined = rng.random(grades.shape) < self.examination(grades.shape[1])
            return attractive & examined
        clicks = np.zeros(grades.shape, dtype=bool)
        if cfg.kind == "cascade":
            rows = np.flatnonzero(attractive.any(axis=1))
            clicks[rows, attractive[rows].argmax(axis=1)] = True
            return clicks
        satisfied = rng.random(grades.shape) < _by_grade(cfg.satisfaction, grades)
        goes_on = rng.random(grades.shape) < cfg.gamma
        examined = np.ones(grades.shape[0], dtype=bool)
        for r in range(grades.shape[1]):
            clicks[:, r] = examined & attractive[:, r]
            examined &= ~(clicks[:, r] & satisfied[:, r]) & goes_on[:, r]
        return clicks

    def grades(self, docs: Sequence[str], judged: Mapping[str, int]) -> np.ndarray:
        """Grade of each doc from one query's qrels."""
        return np.array([judged.get(d, self.config.unjudged_grade) for d in docs], dtype=np.int64)

    def clicks(self, docs: Sequence[str], judged: Mapping[str, int], rng: np.random.Generator) -> np.ndarray:
        """Click flags per rank for one ranking, given its query's qrels {doc: grade}."""
        g = self.grades(docs, judged)[None, :]
        return self.click_matrix(g, np.ones_like(g, dtype=bool), rng)[0]


def simulate_sessions(
    rankings: Mapping[str, Sequence[str]],
    qrels: Mapping[str, Mapping[str, int]],
    user: SimulatedUser,
    n_sessions: int,
    rng: np.random.Generator,
    shuffle: bool = True,
    depth: int = DEFAULT_DEPTH,
    queries: Mapping[str, str] | None = None,
) -> list[Session]:
    """A click log: each session picks a query uniformly, shows the top `depth` of its ranking (in a random
    order if shuffle, so rank and relevance are not confounded) and records the user's clicks.
    `queries` maps query ids to the text used as Session.query (default: the id itself)."""
    qids = sorted(rankings)
    if not qids:
        raise ValueError("no rankings")
    picks = rng.integers(len(qids), size=n_sessions)
    shown_docs: list[list[str]] = []
    grades = np.zeros((n_sessions, depth), dtype=np.int64)
    shown = np.zeros((n_sessions, depth), dtype=bool)
    for i, k in enumerate(picks):
        docs = list(rankings[qids[k]])[:depth]
        if shuffle:
            docs = [docs[j] for j in rng.permutation(len(docs))]
        shown_docs.append(docs)
        grades[i, : len(docs)] = user.grades(docs, qrels.get(qids[k], {}))
        shown[i, : len(docs)] = True
    clicks = user.click_matrix(grades, shown, rng)
    text = queries or {}
    return [
        Session(
            query_id=qids[k],
            query=text.get(qids[k], qids[k]),
            docs=tuple(docs),
            clicks=tuple(bool(x) for x in clicks[i, : len(docs)]),
            session_id=f"sim-{i}",
        )
        for i, (k, docs) in enumerate(zip(picks, shown_docs, strict=True))
    ]
