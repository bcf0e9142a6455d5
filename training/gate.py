"""The counterfactual gate: judge a candidate ranker on randomized pages only, with inverse propensity weights.

Why: the old gate scored a learnt ranker with labels from the same biased clicks it was trained on (a click
model fitted on a log that hardly explored), so a ranker that had learnt the log's position bias looked better
than the served order and shipped (SciFact, exploration 0.1, attractiveness (0.2, 0.7): +.028 out of fold,
-.0945 nDCG@10 on test). Here the evidence is the clicks themselves, read only where the logging policy
randomized the order, so position bias cancels by construction instead of by a model:

- an **adjacent-swap** page (`explored`, `swapped` = [k, k+1]) puts one pair of the live order the other way
  round. For every adjacent pair j of the live order (the page with its swap undone) on which the candidate
  disagrees with the live ranker, the page is a draw of that pair in the candidate's order (swapped at j,
  propensity 1/(m-1) among explored pages, m = min(top_k, length of the list the swap was drawn from: the page,
  or top_k when a learnt ranker or cross-encoder ranked a longer list than the page)) or in the live order (the
  swap was at a pair that does not touch j, possibly below the page: propensity (#such pairs)/(m-1)); the page
  adds clicks(ranks j, j+1) * (1[swapped at j] / p_swap - 1[intact] / p_intact) (Joachims, Swaminathan &
  Schnabel 2017, swap interventions; Radlinski & Joachims 2006, FairPairs). Under any examination model that
  leaves ranks outside the pair alone, its expectation is the clicks the pair gets in the candidate's order
  minus in the live one: > 0 when the candidate puts the more attractive document first.
- a **shuffled** page (`explored`, no `swapped`: the top `top_k` uniformly permuted) shows every pair either
  way with propensity 1/2, and each disagreeing pair adds 2 * (clicks on the two) * (+1 in the candidate's
  orientation, -1 in the live one). The live order is the logged fused rank, re-sorted by the logged
  `rerank_score` when a cross-encoder ran (`ranking.rerank.apply_rerank`); a page that a learnt ranker had
  reordered before the shuffle is left out (`unknown_live_pages`): its scores are not logged, and the fused
  order in their place would judge the candidate against hybrid retrieval, not the live ranker. With a learnt
  ranker live, explore with `adjacent_swap`: the logged swap is undone exactly.
Unexplored pages are never read: there the order is the live ranker's, and clicks on it say nothing a ranker
trained on them could not reproduce.

The candidate's score of a (query, document) must not have seen that query's clicks: `sift train ranker` passes
its out-of-fold scores (`training.ltr` cross-fits by query, with a leave-one-query-out click prior), otherwise
a ranker that memorised which document was clicked would replay the very clicks it is judged on.

The decision: the mean gain per explored page must exceed `min_gain` with a one-sided bootstrap lower bound
(queries resampled) above 0, on at least `min_pages` explored pages where the candidate changes the live order.
A ranker that agrees with the live order everywhere the log explored, or only reorders what clicks cannot tell
apart, is refused: no randomized evidence, no promotion.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from logs.clicklog import ClickRecord
from logs.querylog import QueryEvent
from ranking.features import FEATURES
from search.text import normalize_query
from training.click_logs import clicked_positions

FUSED_RANK = FEATURES.index("fused_rank")
RERANK = FEATURES.index("rerank_score")
Scores = Mapping[tuple[str, str], float]  # (normalized query, doc id) -> candidate score


class GateConfig(BaseModel):
    """The counterfactual gate's settings (`sift train ranker --ips-gate/--no-ips-gate` and friends)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(
        default=True,
        description="Judge the candidate on explored pages with inverse propensity weights before it is "
        "registered or promoted (off: the click-model gate alone decides, as before).",
    )
    top_k: int = Field(
        default=10,
        ge=2,
        le=100,
        description="The logging policy's exploration top_k (`search.exploration.top_k`): the ranks it "
        "randomized, from which the propensities follow.",
    )
    min_gain: float = Field(
        default=0.0, description="Mean IPS gain (clicks per explored page) the candidate must exceed."
    )
    confidence: float = Field(
        default=0.9,
        ge=0.0,
        lt=1.0,
        description="One-sided bootstrap level of the lower bound on the mean gain, which must be above 0.",
    )
    min_pages: int = Field(
        default=30,
        ge=1,
        description="Explored pages on which the candidate changes the live order that the gate needs to decide: "
        "fewer is not evidence, and the candidate is refused.",
    )
    draws: int = Field(default=2000, ge=100, description="Bootstrap draws.")
    seed: int = Field(default=0, description="Seeds the bootstrap.")


class GateResult(BaseModel):
    """What the gate saw and decided; `metrics()` is what a model card keeps."""

    passed: bool
    reason: str
    explored_pages: int = Field(description="Explored first pages in the log (a client's repeats: the first).")
    swap_pages: int = Field(description="Of which adjacent-swap pages.")
    shuffle_pages: int = Field(description="Of which shuffled pages whose live order the features give.")
    unknown_live_pages: int = Field(
        default=0,
        description="Shuffled pages left out: no features, or a learnt ranker had reordered the list before the "
        "shuffle (its order is not logged; `adjacent_swap` exploration keeps it).",
    )
    judged_pages: int = Field(description="Explored pages where the candidate changes the live order.")
    queries: int = Field(description="Distinct queries of the judged pages (the bootstrap's unit).")
    gain: float = Field(description="Mean IPS click gain of the candidate over the live order per explored page.")
    lcb: float = Field(description="One-sided bootstrap lower bound of `gain` at the configured confidence.")

    def metrics(self) -> dict[str, float]:
        return {
            "ips_gain": round(self.gain, 5),
            "ips_gain_lcb": round(self.lcb, 5),
            "ips_explored_pages": float(self.explored_pages),
            "ips_judged_pages": float(self.judged_pages),
            "ips_passed": 1.0 if self.passed else 0.0,
        }


def _prefers(scores: Scores, q: str, upper: str, lower: str) -> bool:
    """The candidate puts `lower` (below `upper` in the live order) above it; an unscored pair is no change."""
    su, sl = scores.get((q, upper)), scores.get((q, lower))
    if su is None or sl is None or math.isnan(su) or math.isnan(sl):
        return False
    return sl > su


def swap_page_gain(shown: Sequence[str], swapped: Sequence[int], clicks: set[int], q: str, scores: Scores,
                   top_k: int, listed: int | None = None) -> tuple[float, bool]:  # fmt: skip
    """IPS gain of one adjacent-swap page and whether the candidate disagreed with the live order on it.

    `listed`: how many results the swap was drawn among (`explore_page` draws k from min(top_k, list length)
    - 1 pairs of the whole ranked list, which can be longer than the page); default the page's length. A swap
    below the page leaves every shown pair intact: those pages count, with the live order's clicks."""
    k = swapped[0]
    m = min(top_k, max(listed or len(shown), k + 1))
    seen = min(m, len(shown))  # pairs (j, j+1) with both ranks on the page
    if m < 2 or not 1 <= k < m:
        return 0.0, False
    live = list(shown)
    if k < len(shown):
        live[k - 1], live[k] = live[k], live[k - 1]
    total, disagreed = 0.0, False
    for j in range(1, seen):  # pair (j, j+1) of the live order, 1-based
        if not _prefers(scores, q, live[j - 1], live[j]):
            continue
        disagreed = True
        reward = float((j in clicks) + (j + 1 in clicks))
        p_swap = 1.0 / (m - 1)
        intact = sum(1 for i in range(1, m) if abs(i - j) >= 2)
        if k == j:
            total += reward / p_swap
        elif abs(k - j) >= 2 and intact:
            total -= reward / (intact / (m - 1))
        # a swap at j-1 or j+1 moved one of the pair: that draw says nothing about the pair's order
    return total, disagreed


def _stages(imp: QueryEvent) -> set[str]:
    return set(((imp.versions or {}).get("stages") or "").split(","))


def live_order_known(imp: QueryEvent) -> bool:
    """Whether a shuffled page's live order is its fused rank: not when a learnt ranker (or interleaving)
    reordered the list before the shuffle, since its scores are not logged; a cross-encoder's are, as
    `rerank_score`, and `shuffle_page_gain` redoes its order."""
    return not _stages(imp) & {"ltr", "interleave"}


def shuffle_page_gain(imp: QueryEvent, clicks: set[int], q: str, scores: Scores, top_k: int) -> tuple[float, bool]:
    """IPS gain of one shuffled page (live order: the logged fused rank) and whether the candidate disagreed."""
    shown = list(imp.shown or [])[:top_k]
    feats = imp.features or {}
    ranks = {}
    for d in shown:
        row = feats.get(d)
        if row is None or row[FUSED_RANK] is None:
            return 0.0, False
        ranks[d] = float(row[FUSED_RANK])  # type: ignore[arg-type]
    live = sorted(shown, key=lambda d: ranks[d])
    if "rerank" in _stages(imp):  # ranking.rerank.apply_rerank: reranked head by score, then the fused order
        rr = {d: feats[d][RERANK] for d in shown}
        live = sorted(shown, key=lambda d: (rr[d] is None, -float(rr[d] or 0.0), ranks[d]))
    pos = {d: i + 1 for i, d in enumerate(shown)}
    total, disagreed = 0.0, False
    for a_i, a in enumerate(live):
        for b in live[a_i + 1 :]:
            if not _prefers(scores, q, a, b):
                continue
            disagreed = True
            reward = float((pos[a] in clicks) + (pos[b] in clicks))
            total += 2.0 * reward * (1.0 if pos[b] < pos[a] else -1.0)
    return total, disagreed


def bootstrap_lcb(per_query: Sequence[tuple[float, int]], level: float, draws: int, seed: int) -> float:
    """One-sided lower bound of sum(gain) / sum(pages), queries resampled with replacement."""
    if len(per_query) < 2:
        return math.nan
    g = np.array([x for x, _ in per_query], dtype=np.float64)
    n = np.array([c for _, c in per_query], dtype=np.float64)
    idx = np.random.default_rng(seed).integers(0, len(g), size=(draws, len(g)))
    ratios = g[idx].sum(axis=1) / np.maximum(n[idx].sum(axis=1), 1.0)
    return float(np.quantile(ratios, 1.0 - level))


def first_per_client(pages: Iterable[QueryEvent]) -> list[QueryEvent]:
    """Each caller's repeated explored searches of one query (same `client`, index, normalised text) reduced to
    the first; pages without a `client` all kept. Not `one_per_client`'s first *clicked* one: choosing a page by
    its clicks tilts the draws toward the orders that got clicked, and the propensities no longer hold."""
    out: list[QueryEvent] = []
    seen: set[tuple[str, str | None, str]] = set()
    for imp in pages:
        if imp.client is not None:
            key = (imp.client, imp.index, normalize_query(imp.query))
            if key in seen:
                continue
            seen.add(key)
        out.append(imp)
    return out


def ips_gate(
    impressions: Iterable[QueryEvent],
    clicks: Iterable[ClickRecord],
    scores: Scores,
    config: GateConfig | None = None,
    index: str | None = None,
) -> GateResult:
    """The candidate (its `scores` per normalized query and document) against the live order, on the explored
    first pages of the log (of `index`, if given); see the module docstring."""
    cfg = config or GateConfig()
    clicked = clicked_positions(clicks)
    pages = [
        imp
        for imp in impressions
        if imp.type == "search" and not imp.offset and imp.explored and imp.shown and imp.query_id
        and (index is None or imp.index == index)
    ]  # fmt: skip
    per_query: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    swaps = shuffles = judged = unknown_live = 0
    for imp in first_per_client(pages):
        q = normalize_query(imp.query)
        got = clicked.get(imp.query_id or "", set())
        if imp.swapped:
            swaps += 1
            listed = cfg.top_k if _stages(imp) & {"ltr", "rerank"} else None  # ranked more than the page
            g, disagreed = swap_page_gain(imp.shown or [], imp.swapped, got, q, scores, cfg.top_k, listed)
        else:
            if not imp.features or not live_order_known(imp):
                unknown_live += 1
                continue
            g, disagreed = shuffle_page_gain(imp, got, q, scores, cfg.top_k)
            shuffles += 1
        per_query[q][0] += g
        per_query[q][1] += 1
        judged += disagreed
    explored = swaps + shuffles
    cells = [(v[0], int(v[1])) for v in per_query.values()]
    gain = sum(x for x, _ in cells) / explored if explored else math.nan
    lcb = bootstrap_lcb(cells, cfg.confidence or 0.5, cfg.draws, cfg.seed)
    queries = len(per_query)
    if judged < cfg.min_pages:
        passed = False
        reason = (
            f"the candidate changes the live order on {judged} explored page(s) of {explored}: the gate needs "
            f"{cfg.min_pages} (more exploration or more traffic)"
            + (f"; {unknown_live} shuffled page(s) left out, their live order unknown" if unknown_live else "")
        )
    elif not (gain > cfg.min_gain and (cfg.confidence == 0 or lcb > 0)):
        passed = False
        reason = (
            f"on {explored} explored pages the candidate gains {gain:+.4f} clicks per page over the live order "
            f"({cfg.confidence:.0%} lower bound {lcb:+.4f}); it needs > {cfg.min_gain} with a bound above 0"
        )
    else:
        passed = True
        reason = f"+{gain:.4f} clicks per explored page over the live order ({cfg.confidence:.0%} bound {lcb:+.4f})"
    return GateResult(
        passed=passed, reason=reason, explored_pages=explored, swap_pages=swaps, shuffle_pages=shuffles,
        judged_pages=judged, queries=queries, gain=gain, lcb=lcb, unknown_live_pages=unknown_live,
    )  # fmt: skip
