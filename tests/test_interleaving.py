"""Team-draft interleaving: the merge's invariants, credit, and that simulated users whose relevance comes from
qrels pick the better of two rankers in at least 95 % of 20 runs of 2,000 sessions."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np

from logs.clicklog import ClickRecord
from logs.querylog import QueryEvent
from ranking.interleaving import TEAM_A, TEAM_B, credit, team_draft
from training.click_users import SimulatedUser, UserConfig
from training.interleaving import interleaving_result


def test_team_draft_invariants() -> None:
    a = [f"d{i}" for i in range(10)]
    b = [f"d{i}" for i in (3, 11, 0, 12, 5, 1, 13, 2, 14, 4)]
    for key in ("s1\x1fq", "s2\x1fq", "s3\x1fother"):
        out, teams = team_draft(a, b, 10, key)
        assert len(out) == len(set(out)) == len(teams) == 10
        for n in range(1, 11):  # after every pick the teams differ by at most one
            assert abs(teams[:n].count(TEAM_A) - teams[:n].count(TEAM_B)) <= 1
        for team, ranking in ((TEAM_A, a), (TEAM_B, b)):  # a team's picks keep its ranking's order
            picked = [d for d, t in zip(out, teams, strict=True) if t == team]
            assert picked == sorted(picked, key=ranking.index)
        assert team_draft(a, b, 10, key) == (out, teams)  # seeded: a reload shows the same page
    same, teams = team_draft(a, a, 10, "k")
    assert same == a and set(teams) == {TEAM_A, TEAM_B}
    short, _ = team_draft(["x"], ["y", "x", "z"], 10, "k")
    assert sorted(short) == ["x", "y", "z"]


def test_credit() -> None:
    teams = [TEAM_A, TEAM_B, TEAM_B, TEAM_A]
    assert credit(teams, [2, 3]) == TEAM_B
    assert credit(teams, [1, 2]) is None
    assert credit(teams, [1, 9]) == TEAM_A  # a position past the page is ignored
    assert credit(teams, []) is None


def run_experiment(seed: int, sessions: int = 2000, weak_signal: float = 0.4) -> tuple[str | None, bool]:
    """One interleaving run: ranker a orders by noisy relevance (nDCG well above b's), b is a weaker
    shuffle; a pbm user clicks from the qrels. Goes through the logged records and `interleaving_result`."""
    rng = np.random.default_rng(seed)
    n_queries, depth = 200, 10
    qrels = {f"q{q}": {f"q{q}-d{i}": int(rng.random() < 0.2) for i in range(20)} for q in range(n_queries)}
    good, weak = {}, {}
    for q, judged in qrels.items():
        docs = list(judged)
        good[q] = sorted(docs, key=lambda d: -(judged[d] + rng.normal(0, 0.6)))
        weak[q] = sorted(docs, key=lambda d: -(weak_signal * judged[d] + rng.normal(0, 0.6)))
    user = SimulatedUser(UserConfig(kind="pbm", eta=0.8, attractiveness=(0.1, 0.8)))
    now = datetime.now(UTC)
    imps, clicks = [], []
    for i in range(sessions):
        q = f"q{rng.integers(n_queries)}"
        shown, teams = team_draft(good[q], weak[q], depth, f"s{seed}-{i}\x1f{q}")
        imps.append(QueryEvent(query=q, query_id=f"{seed}-{i}", shown=shown, offset=0, teams=teams))
        flags = user.clicks(shown, qrels[q], rng)
        for pos in np.flatnonzero(flags) + 1:
            clicks.append(
                ClickRecord(
                    event_id=f"{seed}-{i}-{pos}",
                    type="click",
                    event_name="click",
                    query_id=f"{seed}-{i}",
                    object_ids=[shown[pos - 1]],
                    positions=[int(pos)],
                    ts=now,
                    received_at=now,
                )
            )
    result = interleaving_result(imps, clicks)
    assert result.impressions == sessions and result.wins_a + result.wins_b + result.ties == sessions
    return result.winner, result.significant


def test_the_better_ranker_wins_in_95_percent_of_runs() -> None:
    runs = [run_experiment(seed) for seed in range(20)]
    assert [w for w, _ in runs].count("a") >= 19, runs
    assert sum(sig and w == "a" for w, sig in runs) >= 17, runs  # and mostly with p < 0.05


def test_equal_rankers_rarely_get_a_winner() -> None:
    """Two rankers of the same quality: the sign test should call a winner about alpha = 5 % of the time."""
    runs = [run_experiment(100 + seed, weak_signal=1.0) for seed in range(10)]
    assert sum(sig for _, sig in runs) <= 2, runs
