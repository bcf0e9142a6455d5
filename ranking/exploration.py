"""Result randomisation for position-bias estimation (Joachims et al., 2017: swap interventions).

A click model can tell how much of a click is the document and how much its position only if the same
document is sometimes shown at other positions. With `rate` > 0, that share of first pages has its top `top_k`
shuffled; the impression records `explored` and the order actually shown. The shuffle is seeded from the
session and query, so one user sees a stable page on reload and a replayed simulation logs the same pages.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, Field

T = TypeVar("T")


class ExplorationConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rate: float = Field(default=0.0, ge=0.0, le=1.0, description="Share of first pages whose top is shuffled.")
    top_k: int = Field(default=10, ge=2, le=100, description="How many top results a shuffle reorders.")


def explore(items: Sequence[T], config: ExplorationConfig, key: str | None) -> tuple[list[T], bool]:
    """`items` (the ranked list) with its top shuffled for a `rate` share of keys; and whether it was.

    `key` (session + query) seeds the draw; None draws from the process's randomness."""
    out = list(items)
    if config.rate <= 0 or len(out) < 2:
        return out, False
    rng = random.Random(int(hashlib.sha256(key.encode()).hexdigest()[:16], 16)) if key is not None else random
    if rng.random() >= config.rate:
        return out, False
    head = out[: config.top_k]
    rng.shuffle(head)
    return head + out[config.top_k :], True
