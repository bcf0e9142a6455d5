"""Click caps: how many clicks one response, and one caller per query per day, may add before the rest is flagged.

A click model trusts every click as one user's judgment, so a single caller replaying clicks (20,000 on one
response, or a search plus a click at rank 10 sixty times) could write the judgments. Events past a cap are still
stored (an honest burst loses no data), but flagged: training reads only unflagged events. Far past a cap
(`REFUSE_FACTOR` times it) nothing honest is left: the batch is refused, so a flood stores nothing and costs no
memory. Counts live in the API process (per replica, in memory, a few days' worth and at most `MAX_REMEMBERED`
entries a table, oldest dropped first); training also collapses one caller's repeated searches of a query into one
session, so a caller that spreads its clicks over replicas still counts once.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from logs.clicklog import ClickRecord, trim_oldest
from logs.querylog import to_utc
from search.text import normalize_query

CAPPED_TYPES = ("click", "conversion")
REFUSE_FACTOR = 10  # a batch that would take a count past this many times its cap is refused whole
MAX_REMEMBERED = 200_000  # entries per table (about 100 MB at most for the three); the oldest days go first


class FloodRefused(Exception):
    """Events of a batch that would take a count far past its cap: position in the batch → why. Nothing of the
    batch was counted."""

    def __init__(self, refused: dict[int, str]) -> None:
        super().__init__(f"{len(refused)} event(s) refused")
        self.refused = refused


@dataclass
class _Pending:
    """What one batch would add, committed only when nothing of it is refused."""

    oldest: str  # the first day the counts still hold
    impressions: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))
    identities: dict[tuple[str, tuple[str, str]], int] = field(default_factory=lambda: defaultdict(int))
    decided: dict[str, tuple[str, str | None]] = field(default_factory=dict)  # storage id → (day, flag)


class ClickCaps:
    """Per-impression and per-(identity, query, day) counts of clicked objects; `decide` flags or refuses a batch."""

    def __init__(
        self,
        per_impression: int,
        per_identity_query: int,
        keep_days: float,
        max_entries: int = MAX_REMEMBERED,
        refuse_factor: int = REFUSE_FACTOR,
    ) -> None:
        self.per_impression = per_impression
        self.per_identity_query = per_identity_query
        self.keep_days = keep_days
        self.max_entries = max_entries
        self.refuse_factor = refuse_factor
        self._lock = threading.Lock()
        # day (of the impression, or of the event for the identity count) → key → count, so old days drop whole
        self._impressions: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self._identities: dict[str, dict[tuple[str, str], int]] = defaultdict(lambda: defaultdict(int))
        self._decided: dict[str, dict[str, str | None]] = defaultdict(dict)  # day → storage id → flag

    def flag(self, rec: ClickRecord, shown_at: datetime) -> str | None:
        """`decide` for one record."""
        return self.decide([(rec, shown_at)])[0]

    def decide(self, batch: Sequence[tuple[ClickRecord, datetime]]) -> list[str | None]:
        """Count each record (once per storage id: a retry is not counted again) and return its flag, or None; or
        raise `FloodRefused`, counting nothing, when a record would take a count past `refuse_factor` × its cap.
        `batch`: (record, when its impression was shown)."""
        with self._lock:
            now = max((to_utc(r.received_at) for r, _ in batch), default=None)
            if now is not None:
                self._forget(now)
            pending = _Pending(oldest=self._oldest(now))
            flags: list[str | None] = []
            refused: dict[int, str] = {}
            for i, (rec, shown_at) in enumerate(batch):
                key = rec.storage_id()
                prior = pending.decided.get(key) or self._find(key)
                if rec.type not in CAPPED_TYPES or prior is not None:
                    flags.append(prior[1] if prior is not None else None)
                    continue
                flag, refusal = self._count(rec, shown_at, pending)
                if refusal:
                    refused[i] = refusal
                pending.decided[key] = (f"{to_utc(rec.received_at):%Y-%m-%d}", flag)
                flags.append(flag)
            if refused:
                raise FloodRefused(refused)
            self._commit(pending)
            return flags

    def _count(self, rec: ClickRecord, shown_at: datetime, pending: _Pending) -> tuple[str | None, str | None]:
        """(flag, reason to refuse) of one new record, its counts added to `pending`."""
        n, flag, refusal = len(rec.object_ids), None, None
        shown_day = f"{to_utc(shown_at):%Y-%m-%d}"
        if shown_day < pending.oldest:  # its count would be forgotten at once: not trusted
            flag = "impression_cap"
        else:
            pending.impressions[(shown_day, rec.query_id)] += n
            total = self._impressions.get(shown_day, {}).get(rec.query_id, 0)
            total += pending.impressions[(shown_day, rec.query_id)]
            if total > self.refuse_factor * self.per_impression:
                refusal = (
                    f"refused: more than {self.refuse_factor * self.per_impression} clicked objects on response "
                    f"{rec.query_id} ({self.refuse_factor} times click_log.max_clicks_per_impression); "
                    "nothing of the batch was stored"
                )
            elif total > self.per_impression:
                flag = "impression_cap"
        if rec.client is not None:
            day, who = f"{to_utc(rec.received_at):%Y-%m-%d}", (rec.client, normalize_query(rec.query))
            pending.identities[(day, who)] += n
            total = self._identities.get(day, {}).get(who, 0) + pending.identities[(day, who)]
            if total > self.refuse_factor * self.per_identity_query:
                refusal = refusal or (
                    f"refused: more than {self.refuse_factor * self.per_identity_query} clicked objects from this "
                    f"caller on this query today ({self.refuse_factor} times "
                    "click_log.max_clicks_per_identity_query); nothing of the batch was stored"
                )
            elif flag is None and total > self.per_identity_query:
                flag = "identity_cap"
        return flag, refusal

    def _commit(self, pending: _Pending) -> None:
        for (day, query_id), n in pending.impressions.items():
            self._impressions[day][query_id] += n
        for (day, who), n in pending.identities.items():
            self._identities[day][who] += n
        for key, (day, flag) in pending.decided.items():
            self._decided[day][key] = flag
        trim_oldest(self._impressions, self.max_entries)
        trim_oldest(self._identities, self.max_entries)
        trim_oldest(self._decided, self.max_entries)

    def _find(self, key: str) -> tuple[str, str | None] | None:
        """(day, flag) of a storage id already decided (flag None: unflagged), or None."""
        for day, decided in self._decided.items():
            if key in decided:
                return day, decided[key]
        return None

    def _oldest(self, now: datetime | None) -> str:
        """The first day still remembered (days before it are dropped)."""
        if now is None:
            return ""
        return f"{to_utc(now) - timedelta(days=self.keep_days + 1):%Y-%m-%d}"

    def _forget(self, now: datetime) -> None:
        oldest = self._oldest(now)
        for table in (self._impressions, self._identities, self._decided):
            for day in [d for d in table if d < oldest]:
                del table[day]

    def remembered(self) -> int:
        """Entries held in memory (bounded: days past `keep_days` are dropped, and each table holds at most
        `max_entries`)."""
        with self._lock:
            tables = (self._impressions, self._identities, self._decided)
            return sum(len(v) for table in tables for v in table.values())
