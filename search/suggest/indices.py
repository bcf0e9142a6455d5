"""The query log in memory: past queries by prefix (`PrefixIndex`) and queries that co-occur in sessions
(`SessionIndex`), both scored by recency-decayed frequency.

Scores are stored in a time-invariant form (log2 Σ 2^(t_i/half_life)), so a score never has to be recomputed
as time passes and per-prefix top lists stay exact under incremental adds.
"""

from __future__ import annotations

import bisect
import heapq
import math
import threading
from collections import OrderedDict, deque
from dataclasses import dataclass

from search.suggest.schemas import DAY_S, MAX_K


def _logaddexp2(a: float, b: float) -> float:
    if a == -math.inf:
        return b
    hi, lo = (a, b) if a >= b else (b, a)
    return hi + math.log2(1.0 + 2.0 ** (lo - hi))


@dataclass(slots=True)
class _Entry:
    log2w: float  # log2 Σ 2^(t_i / half_life): grows with every search, never has to decay
    count: int
    last_ts: float


class PrefixIndex:
    """Past queries by prefix, scored by recency-decayed frequency.

    A sorted key list answers any prefix with two bisects; prefixes up to `precompute_chars` long (where
    the matching range can be huge) keep an exact top list, maintained on each add. That is correct
    because stored weights only ever grow, so an entry can only move up a list.
    """

    def __init__(self, half_life_s: float = 7 * DAY_S, precompute_chars: int = 6, top_n: int = MAX_K, max_scan=5000):
        self.half_life_s = half_life_s
        self.precompute_chars = precompute_chars
        self.top_n = top_n
        self.max_scan = max_scan
        self._entries: dict[str, _Entry] = {}
        self._keys: list[str] = []
        self._top: dict[str, list[str]] = {}
        self._lock = threading.RLock()

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, query: str, ts: float, weight: float = 1.0) -> None:
        """Count one search of the (already normalised) `query` at unix time `ts`."""
        if not query:
            return
        inc = ts / self.half_life_s + math.log2(weight)
        with self._lock:
            e = self._entries.get(query)
            if e is None:
                e = _Entry(inc, 1, ts)
                self._entries[query] = e
                bisect.insort(self._keys, query)
            else:
                e.log2w = _logaddexp2(e.log2w, inc)
                e.count += 1
                e.last_ts = max(e.last_ts, ts)
            for i in range(1, min(len(query), self.precompute_chars) + 1):
                self._bump(self._top.setdefault(query[:i], []), query, e.log2w)

    def _bump(self, lst: list[str], query: str, w: float) -> None:
        """Move/insert `query` in a top list ordered by (weight desc, text asc), keeping `top_n`."""
        if query in lst:
            lst.remove(query)
        elif len(lst) >= self.top_n and (-self._entries[lst[-1]].log2w, lst[-1]) < (-w, query):
            return
        pos = len(lst)
        while pos > 0 and (-self._entries[lst[pos - 1]].log2w, lst[pos - 1]) > (-w, query):
            pos -= 1
        lst.insert(pos, query)
        del lst[self.top_n :]

    def score(self, query: str, now: float) -> float:
        """Decayed count at `now`: each past search counts 2^-(age / half_life)."""
        e = self._entries.get(query)
        return 0.0 if e is None else 2.0 ** (e.log2w - now / self.half_life_s)

    def count(self, query: str) -> int:
        e = self._entries.get(query)
        return 0 if e is None else e.count

    def top(self, prefix: str, k: int, now: float) -> list[tuple[str, float]]:
        """Up to k (query, decayed count) starting with `prefix`, best first (ties alphabetical)."""
        if not prefix or k <= 0:
            return []
        with self._lock:
            if len(prefix) <= self.precompute_chars:
                names = self._top.get(prefix, [])[:k]
            else:
                lo = bisect.bisect_left(self._keys, prefix)
                hi = bisect.bisect_left(self._keys, prefix + "\U0010ffff", lo, min(len(self._keys), lo + self.max_scan))
                names = heapq.nsmallest(k, self._keys[lo:hi], key=lambda q: (-self._entries[q].log2w, q))
            return [(q, self.score(q, now)) for q in names]

    def frequent_prefixes(self, n: int, max_words: int = 3, min_chars: int = 3) -> list[str]:
        """The n prefixes with the most (decayed) searches under them: word prefixes (first 1..max_words words)
        and character prefixes of `min_chars`..`precompute_chars`; what a prefetcher should complete first."""
        mass: dict[str, float] = {}
        with self._lock:
            items = [(q, e.log2w) for q, e in self._entries.items()]
        if not items:
            return []
        ref = max(w for _, w in items)
        for q, w in items:
            v = 2.0 ** (w - ref)
            words = q.split(" ")
            cands = {" ".join(words[:i]) for i in range(1, min(max_words, len(words)) + 1)}
            cands.update(q[:i].rstrip() for i in range(min_chars, min(len(q), self.precompute_chars) + 1))
            for p in cands:
                if p:
                    mass[p] = mass.get(p, 0.0) + v
        return [p for p, _ in heapq.nlargest(n, mass.items(), key=lambda kv: (kv[1], kv[0]))]


class SessionIndex:
    """Queries that co-occur within a session window ("people who searched X also searched Y"), decayed."""

    def __init__(self, window_s: float = 1800.0, half_life_s: float = 7 * DAY_S, max_sessions: int = 50_000):
        self.window_s = window_s
        self.half_life_s = half_life_s
        self.max_sessions = max_sessions
        self._sessions: OrderedDict[str, deque[tuple[str, float]]] = OrderedDict()
        self._pairs: dict[str, dict[str, float]] = {}
        self._lock = threading.Lock()

    def add(self, session_id: str, query: str, ts: float) -> None:
        if not session_id or not query:
            return
        inc = ts / self.half_life_s
        with self._lock:
            recent = self._sessions.pop(session_id, None) or deque(maxlen=20)
            self._sessions[session_id] = recent
            while len(self._sessions) > self.max_sessions:
                self._sessions.popitem(last=False)
            seen = set()
            for prev, pts in recent:
                if prev == query or prev in seen or ts - pts > self.window_s:
                    continue
                seen.add(prev)
                for a, b in ((prev, query), (query, prev)):
                    row = self._pairs.setdefault(a, {})
                    row[b] = _logaddexp2(row.get(b, -math.inf), inc)
                    if len(row) > 200:  # keep the strongest neighbours only
                        for weak in heapq.nsmallest(len(row) - 100, row, key=row.__getitem__):
                            del row[weak]
            recent.append((query, ts))

    def related(self, query: str, k: int, now: float) -> list[tuple[str, float]]:
        with self._lock:
            row = dict(self._pairs.get(query, {}))
        best = heapq.nsmallest(k, row.items(), key=lambda kv: (-kv[1], kv[0]))
        return [(q, 2.0 ** (w - now / self.half_life_s)) for q, w in best]


class IssuerCounter:
    """Which queries enough distinct sessions issued to be shown to others (k-anonymity of suggestions).

    A query typed by one person (a name, an address, a case number) must never surface in another person's
    autocomplete. Each (index, query) collects the distinct issuers (`QueryEvent.issuer`) that issued it, up to
    `k`; from then on it is shown and its set is dropped. An impression the API logged names its issuer by the
    server-known client (API key and client address), not by the session id or user token the client chose, so
    one client cannot pass the rule alone by inventing session ids; only in-process impressions (simulations,
    imports) fall back to those ids. Events with no issuer never count: their issuers cannot be told apart.
    With `index` set, only searches on that index count (the index suggestions serve)."""

    def __init__(self, k: int, index: str | None = None) -> None:
        self.k = k
        self.index = index
        self._pending: dict[str, set[str]] = {}
        self._shown: set[str] = set()
        self._lock = threading.Lock()

    def add(self, query: str, issuer: str | None, index: str | None) -> None:
        if self.k <= 1 or not issuer or (self.index is not None and index not in (None, self.index)):
            return
        with self._lock:
            if query in self._shown:
                return
            issuers = self._pending.setdefault(query, set())
            issuers.add(issuer)
            if len(issuers) >= self.k:
                self._shown.add(query)
                del self._pending[query]

    def shown(self, query: str) -> bool:
        return self.k <= 1 or query in self._shown
