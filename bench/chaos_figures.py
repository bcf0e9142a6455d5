"""The figures of `bench/chaos.py`, from plain request outcomes: free of Ray, Elasticsearch and HTTP, so they test
fast and the bench's verdicts can be checked against hand-made timelines.

Times are seconds after the phase's start. A request is *in flight* over [t, t + latency]; a failure is any
reply that is not 2xx, or no reply at all (status None).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

RECOVERY_GRACE_S = 10.0  # goal (a): no failed request sent later than this after the kill
MAX_FAILED_PCT = 0.5  # goal (a): at most this share of the phase's requests fail


@dataclass(frozen=True)
class Outcome:
    """One request of the load: when it was due, what it was, what came back and how long it took."""

    t: float
    kind: str  # "search" | "suggest"
    status: int | None  # None: no HTTP reply (connection refused, reset, timeout)
    latency: float
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def label(self) -> str:
        return str(self.status) if self.status is not None else (self.error or "error").split(":")[0]


def _pct(part: int, whole: int) -> float:
    return round(100.0 * part / whole, 3) if whole else 0.0


def _kinds(outcomes: Sequence[Outcome]) -> dict[str, int]:
    return dict(Counter(o.label for o in outcomes if not o.ok))


def replica_kill(outcomes: Sequence[Outcome], kill_t: float, grace_s: float = RECOVERY_GRACE_S) -> dict[str, Any]:
    """(a) A replica killed at `kill_t`: failed share of the phase, seconds from the kill until the last failed
    request was sent (0 when none failed), failures sent later than `grace_s` after the kill."""
    failed = [o for o in outcomes if not o.ok]
    after = [o for o in failed if o.t + o.latency >= kill_t]
    recovery = max((o.t - kill_t for o in after), default=0.0)
    late = [o for o in failed if o.t > kill_t + grace_s]
    pct = _pct(len(failed), len(outcomes))
    return {
        "requests": len(outcomes),
        "failed": len(failed),
        "failed_pct": pct,
        "failed_before_kill": len(failed) - len(after),
        "recovery_s": round(max(0.0, recovery), 2),
        f"failed_after_{grace_s:g}s": len(late),
        "failures": _kinds(failed),
        "goal_met": pct <= MAX_FAILED_PCT and not late,
    }


def es_outage(outcomes: Sequence[Outcome], down_t: float, up_t: float) -> dict[str, Any]:
    """(b) The store down from `down_t` (stop begins) to `up_t` (node answers again): requests in flight during
    it may fail only with 503; requests sent after it, and before it, must not fail at all."""
    during = [o for o in outcomes if o.t < up_t and o.t + o.latency >= down_t]
    before = [o for o in outcomes if o.t + o.latency < down_t]
    after = [o for o in outcomes if o.t >= up_t]
    failed_during = [o for o in during if not o.ok]
    other = [o for o in failed_during if o.status != 503]
    failed_after = [o for o in after if not o.ok]
    last_failure = max((o.t for o in failed_after), default=None)
    return {
        "outage_s": round(up_t - down_t, 2),
        "requests_during": len(during),
        "ok_during": len(during) - len(failed_during),
        "503_during": len(failed_during) - len(other),
        "share_503_of_failed_during": round(1 - len(other) / len(failed_during), 4) if failed_during else 1.0,
        "non_503_failures_during": _kinds(other),
        "failed_before": len([o for o in before if not o.ok]),
        "requests_after": len(after),
        "failed_after_recovery": len(failed_after),
        "last_failure_after_up_s": round(last_failure - up_t, 2) if last_failure is not None else None,
        "failures_after": _kinds(failed_after),
        "goal_met": not other and not failed_after and not any(not o.ok for o in before),
    }


def reindex_kill(
    outcomes: Sequence[Outcome], alias_before: str | None, alias_after: str | None, killed_version: str | None
) -> dict[str, Any]:
    """(c) A reindex SIGKILLed mid-way (`killed_version`: the version it was writing, None if it was not caught
    mid-way): no failed search, and the alias still on the version it served before."""
    searches = [o for o in outcomes if o.kind == "search"]
    failed = [o for o in searches if not o.ok]
    unchanged = alias_before is not None and alias_before == alias_after
    return {
        "searches": len(searches),
        "failed_searches": len(failed),
        "failed_other": len([o for o in outcomes if o.kind != "search" and not o.ok]),
        "failures": _kinds([o for o in outcomes if not o.ok]),
        "alias_before": alias_before,
        "alias_after": alias_after,
        "alias_unchanged": unchanged,
        "killed_mid_way": killed_version is not None and killed_version != alias_before,
        "killed_version": killed_version,
        "goal_met": not failed and unchanged and killed_version is not None,
    }
