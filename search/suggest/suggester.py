"""Query suggestions (autocomplete) and related searches: past queries blended with causal-LM candidates.

Three sources, three risks. The prefix index of past queries is fast and trustworthy but only knows
prefixes seen before. The LM completes unseen prefixes but is slow and can invent queries that find
nothing or say something harmful. So:

- the prefix index lives in memory and answers in microseconds; scores are frequencies with exponential
  recency decay, stored in a time-invariant form (log2 Σ 2^(t_i/half_life)) so a score never has to be
  recomputed as time passes and per-prefix top lists stay exact under incremental adds;
- the LM never holds a request past its deadline: completions run on background workers, are cached,
  and are prefetched for frequent prefixes; a request takes whatever is ready at the deadline;
- every LM candidate passes the blocklist, the PII filter and a "the store returns at least one result"
  check (cached) before it is cached; past queries pass the blocklist and PII filter before they are
  indexed, and only searches that returned results are indexed.

The class is plain (no Ray): the API ingress, `sift eval-suggest` and the tests all use `Suggester`.
"""

from __future__ import annotations

import asyncio
import atexit
import bisect
import concurrent.futures
import heapq
import logging
import math
import queue
import re
import threading
import time
import unicodedata
import weakref
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from search.querylog import QueryEvent
from search.suggest.lm_completer import Completion, LMCompleterConfig, Task
from search.text import query_terms

log = logging.getLogger("sift.suggest")

MAX_PREFIX_CHARS = 200
MAX_K = 20
DAY_S = 86_400.0

# A conservative default; deployments extend it with `blocklist` / `blocklist_file`. A trailing `*` matches
# any word that starts with the entry.
DEFAULT_BLOCKLIST = [
    "porn*",
    "xxx",
    "nude*",
    "hentai",
    "kill yourself",
    "suicide method*",
    "how to make a bomb",
    "child abuse material",
]

CompleteFn = Callable[[str, Task], list[Completion]]
HasResultsFn = Callable[[str], bool]

# -- text normalisation ---------------------------------------------------------------------------------
_WS = re.compile(r"\s+")
_EDGE = "\"'`.,;:!?()[]{}<>«»“”‘’ \t\n"


def normalize_query(text: str) -> str:
    """Case-, width- and whitespace-insensitive form; punctuation at the ends is dropped ("Foo bar." → "foo bar")."""
    t = unicodedata.normalize("NFKC", text).lower()
    t = "".join(ch for ch in t if ch.isprintable() or ch.isspace())
    return _WS.sub(" ", t).strip(_EDGE).strip()


def normalize_prefix(text: str) -> str:
    """Like `normalize_query`, but a trailing space is kept: it says the last word is complete."""
    core = normalize_query(text)
    if core and text[-1:].isspace():
        return core + " "
    return core


# -- filters ----------------------------------------------------------------------------------------------
_EMAIL = re.compile(r"[\w.+\-]+@[\w\-]+(?:\.[\w\-]+)*", re.UNICODE)
_DIGIT_RUN = re.compile(r"\+?\d(?:[\s().\-/]{0,2}\d)+")
_LOCAL_PHONE = re.compile(r"(?<!\d)\d{3}[\-.\s]\d{4}(?!\d)")


def contains_pii(text: str) -> str | None:
    """The kind of personal data in `text` (e-mail, phone/card-like digits), or None.

    Any run of 9+ digits (allowing spaces, dashes, dots, slashes, brackets between them) counts: that
    covers phone numbers with area codes, card numbers (13-19 digits) and id numbers. Cheap false
    positives (a list of years) are acceptable; a suggested phone number is not.
    """
    if _EMAIL.search(text):
        return "email"
    for m in _DIGIT_RUN.finditer(text):
        digits = sum(ch.isdigit() for ch in m.group())
        if digits >= 13:
            return "card-like digits"
        if digits >= 9:
            return "phone-like digits"
    if _LOCAL_PHONE.search(text):
        return "phone-like digits"
    return None


class SafetyFilter:
    """Blocklist (whole words or phrases, `word*` for word prefixes) plus the PII check."""

    def __init__(self, blocklist: Iterable[str] = (), pii: bool = True) -> None:
        self.pii = pii
        parts = []
        for raw in blocklist:
            entry = normalize_query(raw.rstrip("*"))
            if not entry:
                continue
            body = r"\s+".join(re.escape(w) for w in entry.split())
            parts.append(body + (r"\w*" if raw.strip().endswith("*") else ""))
        self._block = re.compile(r"(?<!\w)(?:" + "|".join(parts) + r")(?!\w)") if parts else None

    def reason(self, text: str) -> str | None:
        """Why `text` must never be suggested, or None when it may be."""
        norm = normalize_query(text)
        if self._block is not None and self._block.search(norm):
            return "blocklist"
        if self.pii:
            return contains_pii(text) or contains_pii(norm)
        return None

    def allows(self, text: str) -> bool:
        return self.reason(text) is None


# -- small caches -----------------------------------------------------------------------------------------
K = TypeVar("K")
V = TypeVar("V")


class TTLCache(Generic[K, V]):
    """Thread-safe LRU with a time-to-live, so stale store checks and completions age out."""

    def __init__(self, size: int, ttl_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.size = size
        self.ttl_s = ttl_s
        self._clock = clock
        self._data: OrderedDict[K, tuple[float, V]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: K) -> V | None:
        with self._lock:
            item = self._data.get(key)
            if item is None:
                return None
            if self._clock() - item[0] > self.ttl_s:
                del self._data[key]
                return None
            self._data.move_to_end(key)
            return item[1]

    def put(self, key: K, value: V) -> None:
        with self._lock:
            self._data[key] = (self._clock(), value)
            self._data.move_to_end(key)
            while len(self._data) > self.size:
                self._data.popitem(last=False)

    def __contains__(self, key: object) -> bool:
        return self.get(key) is not None  # type: ignore[arg-type]

    def __len__(self) -> int:
        return len(self._data)


# -- prefix index -----------------------------------------------------------------------------------------
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


# -- background work ------------------------------------------------------------------------------------
class _Workers:
    """Daemon threads over a LIFO queue: the newest keystroke is served first, and an exiting process never
    waits for LM work nobody needs any more (ThreadPoolExecutor joins its threads at exit)."""

    def __init__(self, n: int, name: str) -> None:
        self._q: queue.LifoQueue[tuple[Callable[[], Any], concurrent.futures.Future[Any]] | None] = queue.LifoQueue()
        self._threads = [threading.Thread(target=self._run, name=f"{name}-{i}", daemon=True) for i in range(n)]
        for t in self._threads:
            t.start()

    def _run(self) -> None:
        while True:
            item = self._q.get()
            if item is None:
                return
            fn, fut = item
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                fut.set_result(fn())
            except BaseException as exc:
                fut.set_exception(exc)

    def submit(self, fn: Callable[[], Any]) -> concurrent.futures.Future[Any]:
        fut: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self._q.put((fn, fut))
        return fut

    def shutdown(self, wait_s: float = 0.0) -> None:
        """Cancel queued jobs, stop the threads; wait up to `wait_s` for running jobs (a thread killed inside
        torch at interpreter exit aborts the process)."""
        while True:
            try:
                item = self._q.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                item[1].cancel()
        for _ in self._threads:
            self._q.put(None)
        end = time.monotonic() + wait_s
        for t in self._threads:
            if t is not threading.current_thread():
                t.join(max(0.0, end - time.monotonic()))


# -- API models ---------------------------------------------------------------------------------------------
class Suggestion(BaseModel):
    text: str = Field(description="The suggested query (normalised: lower case, single spaces).")
    source: Literal["log", "lm", "log+lm"] = Field(description="Past queries, the language model, or both.")
    score: float = Field(description="Blended score; suggestions are ordered by it.")


class SuggestResponse(BaseModel):
    query: str = Field(description="The prefix as sent.")
    suggestions: list[Suggestion]
    partial: bool = Field(description="True when the LM deadline (or load) left LM candidates out.")
    took_ms: float


class RelatedQuery(BaseModel):
    text: str
    source: Literal["session", "lm"] = Field(description="Co-occurs in sessions, or an LM rewrite with results.")
    score: float


class RelatedResponse(BaseModel):
    query: str
    related: list[RelatedQuery]


class SuggestConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(default=True, description="Serve /v1/suggest and /v1/related from the query log.")
    lm: LMCompleterConfig = Field(default_factory=LMCompleterConfig, description="LM completions and rewrites.")
    deadline_ms: float = Field(default=30.0, gt=0, le=10_000, description="Longest a request waits for the LM.")
    half_life_days: float = Field(default=7.0, gt=0, description="A past search counts half after this long.")
    min_result_count: int = Field(default=1, ge=0, description="Only searches with this many results are learnt.")
    blocklist: list[str] = Field(
        default_factory=lambda: list(DEFAULT_BLOCKLIST), description="Words/phrases never suggested (`word*`)."
    )
    blocklist_file: Path | None = Field(default=None, description="More blocklist entries, one per line.")
    pii_filter: bool = Field(default=True, description="Drop candidates with e-mails, phone or card-like numbers.")
    check_results: bool = Field(default=True, description="LM candidates must return a result from the store.")
    check_index: str | None = Field(default=None, description="Index the result check searches (default: search's).")
    min_term_coverage: float = Field(
        default=1.0,
        ge=0,
        le=1,
        description="Share of an LM candidate's words one of its top results must contain (0: any result will do).",
    )
    lm_min_chars: int = Field(default=2, ge=1, description="Shorter prefixes get log suggestions only.")
    results_cache_size: int = Field(default=50_000, ge=1, description="Cached store checks.")
    results_cache_ttl_s: float = Field(default=600.0, gt=0, description="Store checks are redone after this.")
    completion_cache_size: int = Field(default=50_000, ge=1, description="Cached LM candidate lists.")
    completion_cache_ttl_s: float = Field(default=3600.0, gt=0, description="LM candidates are redone after this.")
    workers: int = Field(default=4, ge=1, le=64, description="Background threads waiting on the LM.")
    max_pending: int = Field(default=32, ge=1, description="Queued LM jobs beyond this drop the oldest.")
    prefetch_top: int = Field(default=100, ge=0, description="Frequent prefixes completed ahead of requests.")
    prefetch_interval_s: float = Field(default=900.0, ge=0, description="Re-prefetch period; 0: at startup only.")
    log_weight: float = Field(default=1.0, ge=0, description="Weight of past-query evidence in the blend.")
    lm_weight: float = Field(default=0.5, ge=0, description="Weight of LM confidence in the blend.")
    session_window_s: float = Field(default=1800.0, gt=0, description="Queries this close in a session co-occur.")
    precompute_chars: int = Field(default=6, ge=1, le=32, description="Prefixes up to this long keep top lists.")


class Suggester:
    """Prefix index + session index + LM candidates behind caches, filters and a deadline."""

    def __init__(
        self,
        config: SuggestConfig | None = None,
        *,
        complete: CompleteFn | None = None,
        has_results: HasResultsFn | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = cfg = config or SuggestConfig()
        self._complete = complete if cfg.lm.enabled else None
        self._has_results = has_results if cfg.check_results else None
        self.clock = clock
        half_life = cfg.half_life_days * DAY_S
        self.prefixes = PrefixIndex(half_life, cfg.precompute_chars)
        self.sessions = SessionIndex(cfg.session_window_s, half_life)
        entries = list(cfg.blocklist)
        if cfg.blocklist_file is not None:
            entries += [ln.strip() for ln in cfg.blocklist_file.read_text().splitlines() if ln.strip()]
        self.safety = SafetyFilter(entries, cfg.pii_filter)
        self.lm_cache: TTLCache[tuple[str, str], list[tuple[str, float]]] = TTLCache(
            cfg.completion_cache_size, cfg.completion_cache_ttl_s
        )
        self.results_cache: TTLCache[str, bool] = TTLCache(cfg.results_cache_size, cfg.results_cache_ttl_s)
        self._inflight: OrderedDict[tuple[str, str], concurrent.futures.Future[list[tuple[str, float]]]] = OrderedDict()
        self._inflight_lock = threading.Lock()
        self._workers: _Workers | None = None
        self._prefetcher: threading.Thread | None = None
        self._stop = threading.Event()
        self.stats = {"lm_jobs": 0, "lm_errors": 0, "dropped_jobs": 0, "rejected": 0}
        self._durations: deque[float] = deque(maxlen=32)  # recent LM call times, to know when waiting is futile
        self._job_start: dict[tuple[str, str], float] = {}
        _LIVE.add(self)

    @property
    def lm_enabled(self) -> bool:
        return self._complete is not None

    # -- learning from the log ----------------------------------------------------------------------------
    def record(self, event: QueryEvent) -> bool:
        """Learn one logged search; False when it is not learnt (failed a filter, no results, not a search)."""
        if event.type != "search" or event.result_count < self.config.min_result_count:
            return False
        q = normalize_query(event.query)
        if not q or len(q) > MAX_PREFIX_CHARS or not self.safety.allows(q):
            self.stats["rejected"] += 1
            return False
        ts = event.ts.timestamp()
        self.prefixes.add(q, ts)
        if event.session_id:
            self.sessions.add(event.session_id, q, ts)
        return True

    def load(self, events: Iterable[QueryEvent]) -> int:
        """Replay a query log (at startup); returns how many searches were learnt."""
        return sum(self.record(ev) for ev in events)

    # -- LM candidates --------------------------------------------------------------------------------------
    def _passes(self, text: str) -> bool:
        if not self.safety.allows(text):
            return False
        if self._has_results is None:
            return True
        ok = self.results_cache.get(text)
        if ok is None:
            try:
                ok = bool(self._has_results(text))
            except Exception as exc:  # store down: drop the candidate now, ask again next time
                log.warning("result check failed for %r: %s", text, exc)
                return False
            self.results_cache.put(text, ok)
        return ok

    def lm_candidates(self, text: str, task: Task) -> list[tuple[str, float]]:
        """Generate, normalise, dedupe and filter LM candidates for one prefix/query (blocking), then cache."""
        assert self._complete is not None
        self.stats["lm_jobs"] += 1
        started = time.perf_counter()
        self._job_start[(task, text)] = started
        try:
            raw = self._complete(text, task)
        finally:
            self._job_start.pop((task, text), None)
        self._durations.append(time.perf_counter() - started)
        core = text.rstrip() if task == "complete" else normalize_query(text)
        best: dict[str, float] = {}
        for c in raw:
            t = normalize_query(c.text)
            if not t or len(t) > MAX_PREFIX_CHARS or t == core:
                continue
            if task == "complete" and not t.startswith(text):
                continue
            if t not in best or c.score > best[t]:
                best[t] = c.score
        out = [(t, s) for t, s in sorted(best.items(), key=lambda kv: (-kv[1], kv[0])) if self._passes(t)]
        self.lm_cache.put((task, text), out)
        return out

    def _ensure_workers(self) -> _Workers:
        if self._workers is None:
            with self._inflight_lock:
                if self._workers is None:
                    self._workers = _Workers(self.config.workers, "sift-suggest")
        return self._workers

    def schedule(self, text: str, task: Task) -> concurrent.futures.Future[list[tuple[str, float]]] | None:
        """The in-flight (or a new) background job for `text`; past `max_pending` the oldest queued job is
        dropped (a user who typed on no longer needs it)."""
        if self._complete is None:
            return None
        key = (task, text)
        workers = self._ensure_workers()
        evicted = []
        with self._inflight_lock:
            fut = self._inflight.get(key)
            if fut is not None:
                return fut
            while len(self._inflight) >= self.config.max_pending:
                evicted.append(self._inflight.popitem(last=False)[1])
            fut = workers.submit(lambda: self.lm_candidates(text, task))
            self._inflight[key] = fut
        for old in evicted:  # outside the lock: cancel() runs done-callbacks, which take it
            if old.cancel():
                self.stats["dropped_jobs"] += 1

        def _done(f: concurrent.futures.Future[Any], key: tuple[str, str] = key) -> None:
            with self._inflight_lock:
                if self._inflight.get(key) is f:
                    del self._inflight[key]
            if not f.cancelled() and f.exception() is not None:
                self.stats["lm_errors"] += 1
                log.warning("LM candidates for %r failed: %s", key, f.exception())

        fut.add_done_callback(_done)
        return fut

    def _extended(self, prefix: str) -> list[tuple[str, float]]:
        """Cached candidates of a shorter prefix that still match `prefix` (typing "protein fol" after
        "protein fo" keeps showing "protein folding ..." while the LM works on the new prefix)."""
        for cut in range(len(prefix) - 1, max(0, len(prefix) - 24), -1):
            hit = self.lm_cache.get(("complete", prefix[:cut]))
            if hit:
                ext = [(t, s) for t, s in hit if t.startswith(prefix) and t != prefix.rstrip()]
                if ext:
                    return ext
        return []

    def _could_finish(self, key: tuple[str, str], remaining: float) -> bool:
        """Whether the LM could plausibly answer within `remaining` seconds. When even the fastest recent call
        took longer (a CPU-bound LM), waiting out the deadline would only add latency: answer at once."""
        if len(self._durations) < 4:
            return True
        best = min(self._durations)
        started = self._job_start.get(key)
        need = best - (time.perf_counter() - started) if started is not None else best
        return need <= remaining

    async def _await_lm(self, text: str, task: Task, deadline: float) -> tuple[list[tuple[str, float]], bool]:
        """(candidates, partial): what the LM has for `text` by `deadline` (a perf_counter time)."""
        fut = self.schedule(text, task)
        if fut is None:
            return [], True
        remaining = deadline - time.perf_counter()
        if not fut.done() and (remaining <= 0 or not self._could_finish((task, text), remaining)):
            return [], True
        try:
            return await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(fut)), max(remaining, 0.0)), False
        except TimeoutError:
            return [], True
        except Exception:  # the LM failed; suggestions from the log still go out
            return [], True

    # -- serving -------------------------------------------------------------------------------------------------
    def _blend(self, log_c: Sequence[tuple[str, float]], lm_c: Sequence[tuple[str, float]], k: int) -> list[Suggestion]:
        cfg = self.config
        merged: dict[str, list[float]] = {}
        for t, count in log_c:
            merged.setdefault(t, [0.0, 0.0])[0] = count / (count + 1.0)  # 1 search ~ 0.5, many → 1
        for t, conf in lm_c:
            merged.setdefault(t, [0.0, 0.0])[1] = conf
        out = []
        for t, (lg, lm) in merged.items():
            source: Literal["log", "lm", "log+lm"] = "log+lm" if lg and lm else ("log" if lg else "lm")
            out.append(Suggestion(text=t, source=source, score=round(cfg.log_weight * lg + cfg.lm_weight * lm, 6)))
        out.sort(key=lambda s: (-s.score, s.text))
        return out[:k]

    async def suggest(self, q: str, k: int = 8, deadline_ms: float | None = None) -> SuggestResponse:
        t0 = time.perf_counter()
        deadline = t0 + (self.config.deadline_ms if deadline_ms is None else deadline_ms) / 1000
        prefix = normalize_prefix(q[:MAX_PREFIX_CHARS])
        if not prefix:
            return SuggestResponse(query=q, suggestions=[], partial=False, took_ms=_ms(t0))
        log_c = self.prefixes.top(prefix, k, self.clock())
        lm_c: list[tuple[str, float]] = []
        partial = False
        if self._complete is not None and len(prefix.strip()) >= self.config.lm_min_chars:
            exact = self.lm_cache.get(("complete", prefix))
            if exact is not None:
                lm_c = exact
            else:
                lm_c, partial = await self._await_lm(prefix, "complete", deadline)
                if partial:
                    lm_c = self._extended(prefix)  # a shorter prefix's candidates that still match
        return SuggestResponse(query=q, suggestions=self._blend(log_c, lm_c, k), partial=partial, took_ms=_ms(t0))

    async def related(self, q: str, k: int = 8, deadline_ms: float | None = None) -> RelatedResponse:
        t0 = time.perf_counter()
        deadline = t0 + (self.config.deadline_ms if deadline_ms is None else deadline_ms) / 1000
        query = normalize_query(q[:MAX_PREFIX_CHARS])
        if not query:
            return RelatedResponse(query=q, related=[])
        cfg = self.config
        scores: dict[str, tuple[float, Literal["session", "lm"]]] = {}
        for t, w in self.sessions.related(query, k, self.clock()):
            scores[t] = (cfg.log_weight * w / (w + 1.0), "session")
        if self._complete is not None:
            lm_c = self.lm_cache.get(("related", query))
            if lm_c is None:
                lm_c, _ = await self._await_lm(query, "related", deadline)
            for t, conf in lm_c:
                if t != query and t not in scores:
                    scores[t] = (cfg.lm_weight * conf, "lm")
        items = sorted(scores.items(), key=lambda kv: (-kv[1][0], kv[0]))[:k]
        return RelatedResponse(
            query=q, related=[RelatedQuery(text=t, source=src, score=round(s, 6)) for t, (s, src) in items]
        )

    def suggest_blocking(self, q: str, k: int = 8) -> SuggestResponse:
        """No deadline: waits for the LM (offline evaluation measures what a warm cache serves)."""
        prefix = normalize_prefix(q[:MAX_PREFIX_CHARS])
        t0 = time.perf_counter()
        if not prefix:
            return SuggestResponse(query=q, suggestions=[], partial=False, took_ms=0.0)
        lm_c: list[tuple[str, float]] = []
        if self._complete is not None and len(prefix.strip()) >= self.config.lm_min_chars:
            lm_c = self.lm_cache.get(("complete", prefix)) or self.lm_candidates(prefix, "complete")
        log_c = self.prefixes.top(prefix, k, self.clock())
        return SuggestResponse(query=q, suggestions=self._blend(log_c, lm_c, k), partial=False, took_ms=_ms(t0))

    # -- prefetch ---------------------------------------------------------------------------------------------
    def prefetch(self, prefixes: Iterable[str]) -> int:
        """Complete `prefixes` now unless cached (blocking); returns how many ran. Jobs go to the workers a
        chunk at a time, so the LM deployment can batch them and live requests still get a worker soon."""
        if self._complete is None:
            return 0
        todo = []
        for p in prefixes:
            p = normalize_prefix(p)
            if p and len(p.strip()) >= self.config.lm_min_chars and ("complete", p) not in self.lm_cache:
                todo.append(p)
        n = 0
        chunk = max(1, self.config.workers // 2)
        for i in range(0, len(todo), chunk):
            if self._stop.is_set():
                break
            futs = [f for p in todo[i : i + chunk] if (f := self.schedule(p, "complete")) is not None]
            for f in futs:
                try:
                    f.result()
                    n += 1
                except concurrent.futures.CancelledError:
                    pass
                except Exception as exc:
                    log.warning("prefetch failed: %s", exc)
        return n

    def start_prefetch(self) -> None:
        """Background thread: complete the most frequent prefixes now and every `prefetch_interval_s`."""
        if self._complete is None or self.config.prefetch_top == 0 or self._prefetcher is not None:
            return

        def run() -> None:
            while not self._stop.is_set():
                n = self.prefetch(self.prefixes.frequent_prefixes(self.config.prefetch_top))
                log.info("prefetched LM completions for %d prefixes", n)
                if self.config.prefetch_interval_s <= 0 or self._stop.wait(self.config.prefetch_interval_s):
                    return

        self._prefetcher = threading.Thread(target=run, name="sift-suggest-prefetch", daemon=True)
        self._prefetcher.start()

    def close(self, wait_s: float = 30.0) -> None:
        """Stop background work, waiting up to `wait_s` for an LM call in progress."""
        self._stop.set()
        end = time.monotonic() + wait_s
        if self._workers is not None:
            self._workers.shutdown(wait_s)
            self._workers = None
        if self._prefetcher is not None and self._prefetcher is not threading.current_thread():
            self._prefetcher.join(max(0.0, end - time.monotonic()))
            self._prefetcher = None
        _LIVE.discard(self)


_LIVE: weakref.WeakSet[Suggester] = weakref.WeakSet()


@atexit.register
def _close_live_suggesters() -> None:
    """Daemon threads still inside an LM call when the interpreter exits would abort it: finish them first."""
    for s in list(_LIVE):
        s.close(wait_s=60)


def _ms(t0: float) -> float:
    return round((time.perf_counter() - t0) * 1000, 3)


def _stem(term: str) -> str:
    """A crude, store-independent stem ("folding" → "fold", "cells" → "cell"): a prefix both forms share."""
    return term if len(term) <= 4 else term[: max(4, len(term) - 3)]


def store_has_results(store: Any, index: str, min_term_coverage: float = 0.0, depth: int = 3) -> HasResultsFn:
    """The store check: a BM25 search for the candidate. With `min_term_coverage` > 0, one of the top `depth`
    results must also contain that share of the candidate's words (BM25 is an OR of the words, so an
    invented "vitamin d and quantum yoga" would otherwise pass on "vitamin" alone)."""

    def check(text: str) -> bool:
        if min_term_coverage <= 0:
            return bool(store.bm25_search(index, text, 1, with_docs=False))
        hits = store.bm25_search(index, text, depth)
        if not hits:
            return False
        terms = query_terms(text)
        if not terms:
            return True
        need = math.ceil(min_term_coverage * len(terms) - 1e-9)
        patterns = [re.compile(r"(?<!\w)" + re.escape(_stem(t))) for t in terms]
        for h in hits:
            if h.doc is None:
                continue
            body = f"{h.doc.title} {h.doc.body}".lower()
            if sum(1 for p in patterns if p.search(body)) >= need:
                return True
        return False

    return check
