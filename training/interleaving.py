"""Who won an interleaving experiment, and how sure: from interleaved impressions and the click log.

Each impression logged with `teams` (team-draft interleaving, `ranking.interleaving`) is credited to the team
whose results got more clicks; impressions without clicks, or with as many for each team, are ties. The
confidence is a two-sided sign test (binomial, p = 0.5) over the impressions that had a winner. Flagged clicks
(past a click cap) are ignored, and one caller's repeated searches of a query count once (`one_per_client`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from pydantic import BaseModel, Field
from scipy.stats import binomtest

from logs.clicklog import ClickRecord
from logs.querylog import QueryEvent
from ranking.interleaving import TEAM_A, TEAM_B, credit
from training.click_logs import clicked_positions, one_per_client


class InterleavingResult(BaseModel):
    impressions: int = Field(description="Interleaved first pages in the log.")
    wins_a: int = Field(description="Impressions whose clicks favoured ranker a.")
    wins_b: int = Field(description="Impressions whose clicks favoured ranker b.")
    ties: int = Field(description="Impressions with no clicks or equal clicks for both.")
    delta: float = Field(description="(wins_b - wins_a) / impressions: > 0 means b is preferred.")
    p_value: float = Field(description="Two-sided sign test over the impressions with a winner.")
    winner: Literal["a", "b"] | None = Field(description="The ranker that won more impressions (None: as many).")
    confidence: float = Field(description="1 - p_value: how sure the log is that the winner is not chance.")
    significant: bool = Field(description="p_value < alpha: the winner can be acted on.")
    rankers: dict[str, str] = Field(default_factory=dict, description="What a and b were (from the impressions).")


def interleaving_result(
    impressions: Iterable[QueryEvent], clicks: Iterable[ClickRecord], alpha: float = 0.05
) -> InterleavingResult:
    clicked = clicked_positions(clicks)
    wins = {TEAM_A: 0, TEAM_B: 0}
    ties = n = 0
    rankers: dict[str, str] = {}
    interleaved = [imp for imp in impressions if imp.type == "search" and imp.teams and not imp.offset]
    for imp in one_per_client(interleaved, clicked):
        if not imp.teams or not imp.query_id:
            continue
        n += 1
        for part in ((imp.versions or {}).get("interleave") or "").split(","):
            if "=" in part:
                team, name = part.split("=", 1)
                rankers.setdefault(team, name)
        won = credit(imp.teams, sorted(clicked.get(imp.query_id, ())))
        if won is None:
            ties += 1
        else:
            wins[won] += 1
    decided = wins[TEAM_A] + wins[TEAM_B]
    p = float(binomtest(wins[TEAM_B], decided, 0.5).pvalue) if decided else 1.0
    winner: Literal["a", "b"] | None = None
    if wins[TEAM_A] != wins[TEAM_B]:
        winner = "b" if wins[TEAM_B] > wins[TEAM_A] else "a"
    return InterleavingResult(
        impressions=n, wins_a=wins[TEAM_A], wins_b=wins[TEAM_B], ties=ties,
        delta=(wins[TEAM_B] - wins[TEAM_A]) / n if n else 0.0, p_value=p, winner=winner, confidence=1.0 - p,
        significant=winner is not None and p < alpha, rankers=rankers,
    )  # fmt: skip
