"""Click caps: how many clicks one response, and one caller per query per day, may add before the rest is flagged.

A click model trusts every click as one user's judgment, so a single caller replaying clicks (20,000 on one
response, or a search plus a click at rank 10 sixty times) could write the judgments. Events past a cap are still
stored (a client is told nothing it could tune an attack by, and an honest burst loses no data), but flagged:
training reads only unflagged events. Counts live in the API process (per replica, in memory, a few days' worth);
training also collapses one caller's repeated searches of a query into one session, so a caller that spreads
its clicks over replicas still counts once.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from datetime import datetime, timedelta

from search.clicklog import ClickRecord
from search.querylog import to_utc
from search.text import normalize_query

CAPPED_TYPES = ("click", "conversion")


class ClickCaps:
    """Per-impression and per-(identity, query, day) counts of clicked objects; `flag` decides each record."""

    def __init__(self, per_impression: int, per_identity_query: int, keep_days: float) -> None:
        self.per_impression = per_impression
        self.per_identity_query = per_identity_query
        self.keep_days = keep_days
        self._lock = threading.Lock()
        # day (of the impression, or of the event for the identity count) → key → count, so old days drop whole
        self._impressions: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self._identities: dict[str, dict[tuple[str, str], int]] = defaultdict(lambda: defaultdict(int))
        self._decided: dict[str, dict[str, str | None]] = defaultdict(dict)  # day → storage id → flag

    def flag(self, rec: ClickRecord, shown_at: datetime) -> str | None:
        """Count `rec` (once per storage id: a retry is not counted again) and return its flag, or None."""
        if rec.type not in CAPPED_TYPES:
            return None
        day = f"{to_utc(rec.received_at):%Y-%m-%d}"
        key = rec.storage_id()
        with self._lock:
            self._forget(rec.received_at)
            for decided in self._decided.values():
                if key in decided:
                    return decided[key]
            n = len(rec.object_ids)
            shown_day = f"{to_utc(shown_at):%Y-%m-%d}"
            flag: str | None = None
            if shown_day < self._oldest(rec.received_at):  # its count would be forgotten at once: not trusted
                flag = "impression_cap"
            else:
                by_imp = self._impressions[shown_day]
                by_imp[rec.query_id] += n
                if by_imp[rec.query_id] > self.per_impression:
                    flag = "impression_cap"
            if rec.client is not None:
                by_id = self._identities[day]
                by_id[(rec.client, normalize_query(rec.query))] += n
                if flag is None and by_id[(rec.client, normalize_query(rec.query))] > self.per_identity_query:
                    flag = "identity_cap"
            self._decided[day][key] = flag
            return flag

    def _oldest(self, now: datetime) -> str:
        """The first day still remembered (days before it are dropped)."""
        return f"{to_utc(now) - timedelta(days=self.keep_days + 1):%Y-%m-%d}"

    def _forget(self, now: datetime) -> None:
        oldest = self._oldest(now)
        for table in (self._impressions, self._identities, self._decided):
            for day in [d for d in table if d < oldest]:
                del table[day]

    def remembered(self) -> int:
        """Entries held in memory (bounded: days past `keep_days` are dropped)."""
        with self._lock:
            tables = (self._impressions, self._identities, self._decided)
            return sum(len(v) for table in tables for v in table.values())
