"""The realistic click profile: users as noisy as a live site's (docs/notes/click-profiles.md).

Why: the `ideal` profile (uniform query choice, every first page shuffled, clicks from the qrels alone) gives
click labels that are almost the binary qrels, so anything learnt from them looks better than it would on real
traffic. This profile changes every one of those conditions towards what published click-log studies report:
- queries are drawn from a Zipf law over the split's queries (a head repeated often, a tail seen once or
  twice; which query gets which frequency rank is shuffled by the seed);
- exploration is gentle: at most `exploration.rate` of first pages, one adjacent pair swapped
  (ranking/exploration.py `adjacent_swap`), run by the served search;
- a session is abandoned (no click at all) with P `abandonment`; otherwise rank r is examined with P 1/r**eta,
  and an examined result is clicked with P
      noise + (1 - noise) * shown(o) * (relevant_click[grade] if grade >= 1 else trust / r)
  where o is the share of the query's words (stems) that the result's title and snippet show, and
  shown(o) = snippet_floor + (1 - snippet_floor) * o: users click what *looks* relevant (attractiveness), trust
  the top ranks even for non-relevant results (trust bias), and sometimes click at random (noise).
Grades come from the simulated split's qrels only. Every draw comes from the caller's seeded generator.
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping, Sequence
from typing import Annotated

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from ranking.exploration import ExplorationConfig
from search.text import query_terms, snowball_stem

Probability = Annotated[float, Field(ge=0.0, le=1.0)]
_TAG = re.compile(r"<[^>]+>")
_WORD = re.compile(r"\w+", re.UNICODE)


def _gentle_exploration() -> ExplorationConfig:
    return ExplorationConfig(rate=0.1, top_k=10, mode="adjacent_swap")


class RealisticProfile(BaseModel):
    """Parameters of the realistic profile; each description names where its default comes from."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    zipf_exponent: float = Field(
        default=1.0,
        ge=0.0,
        le=3.0,
        description="P(query of frequency rank k) ~ 1/k**s; 0 is uniform. Search-log studies report power-law "
        "query frequencies (Xie & O'Hallaron 2002; Baeza-Yates et al. 2007); 1.0, Zipf's classic exponent, is an "
        "order-of-magnitude choice, not fitted to a log.",
    )
    exploration: ExplorationConfig = Field(
        default_factory=_gentle_exploration,
        description="Randomisation of first pages, run by the served search (the in-process CLI sets it; a server "
        "reached with --api uses its own `search.exploration`). Default: 10% of first pages, one adjacent "
        "pair of the top 10 swapped (FairPairs/RandPair, Radlinski & Joachims 2006; the swap interventions of "
        "Joachims et al. 2017; Agarwal et al. 2019 intervention harvesting). The rate is an order-of-magnitude "
        "choice for a live site.",
    )
    eta: float = Field(
        default=1.0,
        ge=0.0,
        description="P(examine rank r) = 1/r**eta: the position-bias model of Joachims et al. 2017, whose "
        "simulations take eta = 1 as the base setting and vary it; 1.5 gives a stronger bias.",
    )
    relevant_click: tuple[Probability, ...] = Field(
        default=(0.8, 0.95),
        min_length=1,
        description="P(click | examined, grade 1, 2, ... and a snippet showing every query word) before noise; "
        "grades above the last use the last. Order-of-magnitude choice (Chuklin et al. 2015, click models: "
        "attractiveness well below 1 even for relevant results).",
    )
    trust: Probability = Field(
        default=0.2,
        description="Trust bias: a non-relevant result at rank r is clicked with extra P trust/r (times the snippet "
        "factor) once examined (Joachims et al. 2005; Agarwal et al. 2019, rank-dependent click P on "
        "non-relevant results). 0.2 is an order-of-magnitude choice.",
    )
    noise: Probability = Field(
        default=0.05,
        description="P(click | examined) on any result, whatever it shows (noise clicks; Chuklin et al. 2015). "
        "0.05 at the low end of the 0.05-0.1 range used in simulated click studies.",
    )
    snippet_floor: Probability = Field(
        default=0.5,
        description="shown(o) = floor + (1 - floor) * o: how attractive a result whose title and snippet show none "
        "of the query's words is, relative to one that shows all (attractiveness from the snippet, Chuklin "
        "et al. 2015; Yue et al. 2010 on snippet attractiveness). Order-of-magnitude choice.",
    )
    abandonment: Probability = Field(
        default=0.1,
        description="P(a session clicks nothing at all, whatever is shown) (abandoned searches; Li, Huffman & "
        "Tokuda 2009 'Good abandonment in mobile and PC internet search'). Sessions that examine and find "
        "nothing add to it: the observed no-click share is higher (reported by the simulator).",
    )
    unjudged_grade: int = Field(default=0, ge=0, description="Grade of docs missing from the split's qrels.")


def zipf_weights(n: int, exponent: float) -> np.ndarray:
    """Probabilities of frequency ranks 1..n under a Zipf law (sum 1)."""
    w = 1.0 / np.arange(1, n + 1, dtype=np.float64) ** exponent
    return w / w.sum()


class ZipfQueries:
    """Query draws with Zipf frequencies; the query → frequency-rank mapping is a permutation fixed by `seed`."""

    def __init__(self, qids: Sequence[str], exponent: float, seed: int) -> None:
        order = np.random.default_rng([seed, 0x5A1F]).permutation(len(qids))
        self.by_rank = [qids[int(i)] for i in order]
        self.cdf = np.cumsum(zipf_weights(len(qids), exponent))

    def draw(self, rng: np.random.Generator) -> str:
        k = int(np.searchsorted(self.cdf, rng.random() * self.cdf[-1], side="right"))
        return self.by_rank[min(k, len(self.by_rank) - 1)]


def _stems(text: str) -> set[str]:
    return {snowball_stem(w) for w in _WORD.findall(html.unescape(_TAG.sub(" ", text)).lower())}


def overlap(query: str, shown_text: str) -> float:
    """Share of the query's words (stems, stop words left out) that a result's title + snippet show."""
    want = {snowball_stem(t) for t in query_terms(query)}
    if not want:
        return 0.0
    return len(want & _stems(shown_text)) / len(want)


class RealisticUser:
    """Clicks of one realistic user on one page (see the module docstring for the model)."""

    def __init__(self, profile: RealisticProfile | None = None) -> None:
        self.profile = profile or RealisticProfile()

    def click_probability(self, grades: np.ndarray, overlaps: np.ndarray) -> np.ndarray:
        """P(click | examined) per rank 1..len(grades), for grades and snippet overlaps in [0, 1]."""
        p = self.profile
        ranks = np.arange(1, len(grades) + 1, dtype=np.float64)
        rel = np.asarray(p.relevant_click)[np.clip(grades - 1, 0, len(p.relevant_click) - 1)]
        base = np.where(grades >= 1, rel, p.trust / ranks)
        shown = p.snippet_floor + (1.0 - p.snippet_floor) * np.clip(overlaps, 0.0, 1.0)
        return p.noise + (1.0 - p.noise) * shown * base

    def clicks(
        self, docs: Sequence[str], judged: Mapping[str, int], overlaps: Sequence[float], rng: np.random.Generator
    ) -> np.ndarray:
        """Click flags per rank; the draws (abandonment, examination, click) always consume the same numbers."""
        p = self.profile
        grades = np.array([judged.get(d, p.unjudged_grade) for d in docs], dtype=np.int64)
        abandon = rng.random() < p.abandonment
        examined = rng.random(len(docs)) < 1.0 / np.arange(1, len(docs) + 1) ** p.eta
        attracted = rng.random(len(docs)) < self.click_probability(grades, np.asarray(overlaps, dtype=np.float64))
        return examined & attracted & (not abandon)
