"""Result randomisation for position-bias estimation (Joachims et al., 2017: swap interventions).

A click model can tell how much of a click is the document and how much its position only if the same
document is sometimes shown at other positions. With `rate` > 0, that share of first pages is randomised, in
one of two ways (`mode`):
- `shuffle`: the whole top `top_k` is shuffled (every pair of positions compared; costly for the user, a
  laboratory setting);
- `adjacent_swap`: one adjacent pair of the top `top_k`, drawn uniformly, is swapped (RandPair-style; the
  pair-swap interventions of Joachims et al. 2017 and the intervention harvesting of Agarwal et al. 2019):
  gentle enough for a production site, and each explored page compares ranks k and k+1.
The impression records `explored`, the order actually shown and, for a swap, the two ranks swapped. The draw is
seeded from the session and query, so one user sees a stable page on reload and a replayed simulation logs the
same pages.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from typing import Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

T = TypeVar("T")


class ExplorationConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rate: float = Field(default=0.0, ge=0.0, le=1.0, description="Share of first pages whose top is randomised.")
    top_k: int = Field(default=10, ge=2, le=100, description="How many top results a randomisation may reorder.")
    mode: Literal["shuffle", "adjacent_swap"] = Field(
        default="shuffle",
        description="`shuffle`: the whole top `top_k` is shuffled; `adjacent_swap`: one adjacent pair of the top "
        "`top_k`, drawn uniformly, is swapped (RandPair; the gentle randomisation a live site runs).",
    )


def _rng(key: str | None) -> random.Random:
    if key is None:
        return random.Random()
    return random.Random(int(hashlib.sha256(key.encode()).hexdigest()[:16], 16))


def explore_page(
    items: Sequence[T], config: ExplorationConfig, key: str | None
) -> tuple[list[T], bool, list[int] | None]:
    """`items` (the ranked list) randomised for a `rate` share of keys; whether it was; and for an adjacent swap
    the two 1-based ranks swapped (None otherwise).

    `key` (session + query) seeds the draw; None draws from fresh randomness."""
    out = list(items)
    if config.rate <= 0 or len(out) < 2:
        return out, False, None
    rng = _rng(key)
    if rng.random() >= config.rate:
        return out, False, None
    if config.mode == "adjacent_swap":
        i = rng.randrange(min(config.top_k, len(out)) - 1)
        out[i], out[i + 1] = out[i + 1], out[i]
        return out, True, [i + 1, i + 2]
    head = out[: config.top_k]
    rng.shuffle(head)
    return head + out[config.top_k :], True, None


def explore(items: Sequence[T], config: ExplorationConfig, key: str | None) -> tuple[list[T], bool]:
    """`explore_page` without the swapped ranks."""
    out, explored, _ = explore_page(items, config, key)
    return out, explored
