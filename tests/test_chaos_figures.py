"""The chaos benchmark's figures and verdicts (bench/chaos_figures.py) on hand-made timelines."""

from __future__ import annotations

from bench.chaos_figures import Outcome, es_outage, reindex_kill, replica_kill


def steady(n: int, rate: float = 10.0, status: int = 200, kind: str = "search") -> list[Outcome]:
    return [Outcome(t=i / rate, kind=kind, status=status, latency=0.05) for i in range(n)]


def test_replica_kill_counts_failures_and_the_time_to_recover() -> None:
    ok = steady(1000)  # 100 s at 10/s
    failed = [Outcome(t=20.0 + i * 0.5, kind="search", status=500, latency=0.01) for i in range(4)]  # 20.0 .. 21.5
    timeout = [Outcome(t=21.8, kind="suggest", status=None, latency=30.0, error="ReadTimeout: x")]
    f = replica_kill(ok + failed + timeout, kill_t=20.0)
    assert f["failed"] == 5 and f["failed_pct"] == round(100 * 5 / 1005, 3)
    assert f["recovery_s"] == 1.8 and f["failed_after_10s"] == 0
    assert f["failures"] == {"500": 4, "ReadTimeout": 1}
    assert f["goal_met"]  # 0.498% <= 0.5%, nothing after 10 s
    late = replica_kill([*ok, *failed, Outcome(t=31.0, kind="search", status=502, latency=0.01)], kill_t=20.0)
    assert late["failed_after_10s"] == 1 and not late["goal_met"]
    many = replica_kill(ok[:100] + failed, kill_t=5.0)
    assert many["failed_pct"] > 0.5 and not many["goal_met"]
    assert replica_kill(ok, kill_t=20.0)["recovery_s"] == 0.0


def test_es_outage_accepts_only_503_while_down_and_nothing_after() -> None:
    before = steady(100)  # 0 .. 9.9 s
    during = [Outcome(t=10.0 + i * 0.1, kind="search", status=503, latency=0.01) for i in range(100)]
    during_ok = [Outcome(t=12.0, kind="suggest", status=200, latency=0.01)]
    after = [Outcome(t=40.0 + i * 0.1, kind="search", status=200, latency=0.01) for i in range(50)]
    f = es_outage(before + during + during_ok + after, down_t=10.0, up_t=30.0)
    assert f["503_during"] == 100 and f["ok_during"] == 1 and f["share_503_of_failed_during"] == 1.0
    assert f["failed_after_recovery"] == 0 and f["goal_met"]
    # a 500 while down, or a 503 after the node is back, fails the goal
    bad = es_outage([*during, Outcome(t=15.0, kind="search", status=500, latency=0.01)], 10.0, 30.0)
    assert bad["non_503_failures_during"] == {"500": 1} and bad["share_503_of_failed_during"] == round(100 / 101, 4)
    assert not bad["goal_met"]
    slow = es_outage([*during, Outcome(t=31.0, kind="search", status=503, latency=0.01)], 10.0, 30.0)
    assert slow["failed_after_recovery"] == 1 and slow["last_failure_after_up_s"] == 1.0 and not slow["goal_met"]
    # a request sent before the stop but answered during it counts as during the outage
    straddling = Outcome(t=9.5, kind="search", status=503, latency=1.0)
    assert es_outage([straddling], 10.0, 30.0)["503_during"] == 1


def test_reindex_kill_needs_no_failed_search_and_the_alias_unchanged() -> None:
    load = steady(50) + steady(50, kind="suggest")
    f = reindex_kill(load, "docs-v1", "docs-v1", "docs-v2")
    assert f["failed_searches"] == 0 and f["alias_unchanged"] and f["killed_mid_way"] and f["goal_met"]
    moved = reindex_kill(load, "docs-v1", "docs-v2", "docs-v2")
    assert not moved["alias_unchanged"] and not moved["goal_met"]
    missed = reindex_kill(load, "docs-v1", "docs-v1", None)  # the reindex ended before it could be killed
    assert not missed["killed_mid_way"] and not missed["goal_met"]
    failing = reindex_kill([*load, Outcome(t=1.0, kind="search", status=503, latency=0.1)], "v1", "v1", "v2")
    assert failing["failed_searches"] == 1 and not failing["goal_met"]
