"""Team-draft interleaving (Radlinski, Kurup & Joachims, CIKM 2008): compare two rankers on live traffic.

Why: an offline metric says which ranker orders judged documents better; interleaving asks the users. Each
page mixes both rankings, every shown result belongs to the team that picked it, and the team whose results
get more clicks wins that impression. It needs ~10-100x fewer impressions than an A/B test for the same
confidence because both rankers face the same user, query and moment.

The draw is seeded by the session and the query (like exploration), so a reload shows the same page.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence

TEAM_A = "a"
TEAM_B = "b"


def _rng(key: str | None) -> random.Random:
    if key is None:
        return random.Random()
    return random.Random(int(hashlib.sha256(("tdi\x1f" + key).encode()).hexdigest()[:16], 16))


def team_draft(a: Sequence[str], b: Sequence[str], k: int, key: str | None = None) -> tuple[list[str], list[str]]:
    """The interleaved top `k` of rankings `a` and `b`, and the team ("a" or "b") of each position.

    Each round, the team with fewer picks (a coin flip when even) adds its highest document not yet shown."""
    rng = _rng(key)
    out: list[str] = []
    teams: list[str] = []
    seen: set[str] = set()
    picks = {TEAM_A: 0, TEAM_B: 0}
    lists = {TEAM_A: list(a), TEAM_B: list(b)}
    pos = {TEAM_A: 0, TEAM_B: 0}
    total = len(set(a) | set(b))
    while len(out) < min(k, total):
        if picks[TEAM_A] != picks[TEAM_B]:
            team = TEAM_A if picks[TEAM_A] < picks[TEAM_B] else TEAM_B
        else:
            team = TEAM_A if rng.random() < 0.5 else TEAM_B
        ranking = lists[team]
        while pos[team] < len(ranking) and ranking[pos[team]] in seen:
            pos[team] += 1
        if pos[team] >= len(ranking):  # this team has nothing left: the other one picks
            team = TEAM_B if team == TEAM_A else TEAM_A
            ranking = lists[team]
            while pos[team] < len(ranking) and ranking[pos[team]] in seen:
                pos[team] += 1
            if pos[team] >= len(ranking):
                break
        doc = ranking[pos[team]]
        out.append(doc)
        teams.append(team)
        seen.add(doc)
        picks[team] += 1
    return out, teams


def credit(teams: Sequence[str], clicked_positions: Sequence[int]) -> str | None:
    """Winner of one impression from its clicks (1-based positions): the team with more clicks, None on a tie."""
    a = sum(1 for p in clicked_positions if 1 <= p <= len(teams) and teams[p - 1] == TEAM_A)
    b = sum(1 for p in clicked_positions if 1 <= p <= len(teams) and teams[p - 1] == TEAM_B)
    if a == b:
        return None
    return TEAM_A if a > b else TEAM_B
