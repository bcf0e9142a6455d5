"""Click-log records as click models read them, and their dense array form for vectorized EM.

A click model sees a session as one query and the documents shown for it, top-down, with a click flag per
rank. EM over tens of thousands of sessions is only fast if it runs on arrays, not per-session Python, so
`encode_sessions` turns sessions into fixed-width matrices (padded to a max depth, 10 by default: the first
result page, where nearly all clicks are) whose cells index a table of (query, document) pairs.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

DEFAULT_DEPTH = 10
UNKNOWN = -1  # pair id of a cell whose (query, doc) pair is not in the table, and of padding cells


class Session(BaseModel):
    """One result page shown for one query, and what was clicked on it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    query_id: str = Field(description="Id of the query (e.g. the split's query id); not used as the model key.")
    query: str = Field(description="Normalized query text: the key click models learn parameters under.")
    docs: tuple[str, ...] = Field(min_length=1, description="Doc ids in the order shown: docs[0] is rank 1.")
    clicks: tuple[bool, ...] = Field(description="Click flag per rank, same length as docs.")
    timestamp: float | None = Field(default=None, description="Unix time of the session, if logged.")
    session_id: str | None = Field(default=None, description="Id of the search session, if logged.")

    @model_validator(mode="after")
    def _same_length(self) -> Session:
        if len(self.clicks) != len(self.docs):
            raise ValueError(f"{len(self.clicks)} click flags for {len(self.docs)} docs")
        return self


class PairIndex:
    """Dense ids for (query, doc) pairs, so model parameters are flat arrays indexed by pair id."""

    def __init__(self) -> None:
        self._ids: dict[tuple[str, str], int] = {}

    def __len__(self) -> int:
        return len(self._ids)

    def get(self, query: str, doc: str) -> int:
        """Pair id, or UNKNOWN for a pair never added."""
        return self._ids.get((query, doc), UNKNOWN)

    def add(self, query: str, doc: str) -> int:
        """Pair id, assigning the next one to a new pair."""
        return self._ids.setdefault((query, doc), len(self._ids))

    def pairs(self) -> list[tuple[str, str]]:
        """All pairs, in id order."""
        return list(self._ids)


@dataclass(frozen=True)
class ClickArrays:
    """Sessions as (n_sessions, depth) matrices; cells past a session's length are padding (shown False)."""

    pairs: np.ndarray  # int64 pair ids; UNKNOWN for padding and for pairs not in the index
    clicks: np.ndarray  # bool click flags; False on padding
    shown: np.ndarray  # bool: a document was shown at this rank

    @property
    def n_sessions(self) -> int:
        return int(self.pairs.shape[0])

    @property
    def depth(self) -> int:
        return int(self.pairs.shape[1])

    def ranks(self) -> np.ndarray:
        """0-based rank of every cell, broadcast to the matrix shape."""
        return np.broadcast_to(np.arange(self.depth), self.pairs.shape)


def encode_sessions(
    sessions: Sequence[Session], index: PairIndex, depth: int = DEFAULT_DEPTH, grow: bool = True
) -> ClickArrays:
    """Pad and index sessions; ranks below `depth` are dropped. grow=False leaves unseen pairs UNKNOWN
    (held-out data must not add parameters the model never fitted)."""
    if depth < 1:
        raise ValueError("depth must be >= 1")
    n = len(sessions)
    pairs = np.full((n, depth), UNKNOWN, dtype=np.int64)
    clicks = np.zeros((n, depth), dtype=bool)
    shown = np.zeros((n, depth), dtype=bool)
    lookup = index.add if grow else index.get
    for i, s in enumerate(sessions):
        k = min(len(s.docs), depth)
        pairs[i, :k] = [lookup(s.query, d) for d in s.docs[:k]]
        clicks[i, :k] = s.clicks[:k]
        shown[i, :k] = True
    return ClickArrays(pairs=pairs, clicks=clicks, shown=shown)


def train_test_split(
    sessions: Sequence[Session], test_fraction: float, rng: np.random.Generator
) -> tuple[list[Session], list[Session]]:
    """Split by session (each session goes wholly to one side), shuffled with the given generator."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError("test_fraction must be in (0, 1)")
    order = rng.permutation(len(sessions))
    n_test = round(len(sessions) * test_fraction)
    test = {int(i) for i in order[:n_test]}
    train = [s for i, s in enumerate(sessions) if i not in test]
    held = [s for i, s in enumerate(sessions) if i in test]
    return train, held


def click_through_rates(sessions: Iterable[Session], depth: int = DEFAULT_DEPTH) -> np.ndarray:
    """Share of sessions with a click at each rank 1..depth, over the sessions that showed that rank."""
    clicks = np.zeros(depth)
    shown = np.zeros(depth)
    for s in sessions:
        k = min(len(s.docs), depth)
        shown[:k] += 1
        clicks[:k] += np.asarray(s.clicks[:k], dtype=float)
    return np.divide(clicks, shown, out=np.zeros(depth), where=shown > 0)
