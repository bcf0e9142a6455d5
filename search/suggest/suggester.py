"""Query suggestions (autocomplete) and related searches: past queries blended with causal-LM candidates.

Three sources, three risks. The prefix index of past queries is fast and trustworthy but only knows
prefixes seen before. The LM completes unseen prefixes but is slow and can invent queries that find
nothing or say something harmful. So:

- the prefix index lives in memory and answers in microseconds (`search.suggest.indices`);
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
import concurrent.futures
import logging
import threading
import time
import weakref
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal

from search.pii import was_scrubbed
from search.suggest.cache import TTLCache
from search.suggest.corpus import CorpusIndex
from search.suggest.indices import IssuerCounter, PrefixIndex, SessionIndex
from search.suggest.lm_completer import Task
from search.suggest.logged import LoggedSearch
from search.suggest.precomputed import PrecomputedCompletions
from search.suggest.safety import SafetyFilter
from search.suggest.schemas import (
    DAY_S,
    MAX_PREFIX_CHARS,
    CompleteFn,
    HasResultsFn,
    RelatedQuery,
    RelatedResponse,
    Source,
    SuggestConfig,
    Suggestion,
    SuggestResponse,
)
from search.suggest.workers import Workers
from search.text import normalize_prefix, normalize_query, query_terms

log = logging.getLogger("sift.suggest")


class Suggester:
    """Prefix index + session index + LM candidates behind caches, filters and a deadline."""

    def __init__(
        self,
        config: SuggestConfig | None = None,
        *,
        complete: CompleteFn | None = None,
        has_results: HasResultsFn | None = None,
        clock: Callable[[], float] = time.time,
        index: str | None = None,
    ) -> None:
        """`index`: the index suggestions are served for; with `min_sessions` > 1 only its searches count."""
        self.config = cfg = config or SuggestConfig()
        self._complete = complete if cfg.lm.enabled else None
        self._has_results = has_results if cfg.check_results else None
        self.clock = clock
        half_life = cfg.half_life_days * DAY_S
        self.prefixes = PrefixIndex(half_life, cfg.precompute_chars)
        self.sessions = SessionIndex(cfg.session_window_s, half_life)
        self.issuers = IssuerCounter(cfg.min_sessions, index)
        entries = list(cfg.blocklist)
        if cfg.blocklist_file is not None:
            entries += [ln.strip() for ln in cfg.blocklist_file.read_text().splitlines() if ln.strip()]
        self.safety = SafetyFilter(entries, cfg.pii_filter)
        self.lm_cache: TTLCache[tuple[str, str], list[tuple[str, float]]] = TTLCache(
            cfg.completion_cache_size, cfg.completion_cache_ttl_s
        )
        self.results_cache: TTLCache[tuple[str, str, bool], bool] = TTLCache(
            cfg.results_cache_size, cfg.results_cache_ttl_s
        )
        self._inflight: OrderedDict[tuple[str, str], concurrent.futures.Future[list[tuple[str, float]]]] = OrderedDict()
        self._inflight_lock = threading.Lock()
        self._workers: Workers | None = None
        self._prefetcher: threading.Thread | None = None
        self._stop = threading.Event()
        self.stats = {"lm_jobs": 0, "lm_errors": 0, "dropped_jobs": 0, "rejected": 0}
        self._durations: deque[float] = deque(maxlen=32)  # recent LM call times, to know when waiting is futile
        self._job_start: dict[tuple[str, str], float] = {}
        # Of the served index version, swapped whole when it changes (readers take no lock): titles and frequent
        # phrases (`search.suggest.corpus`), LM completions computed ahead of time (`search.suggest.precomputed`).
        self.corpus: CorpusIndex | None = None
        self.precomputed: PrecomputedCompletions | None = None
        _LIVE.add(self)

    # -- learning from the log ----------------------------------------------------------------------------
    def record(self, event: LoggedSearch) -> bool:
        """Learn one logged search; False when it is not learnt (failed a filter, no results, not a search)."""
        if event.type != "search" or event.result_count < self.config.min_result_count:
            return False
        q = normalize_query(event.query)
        scrubbed = was_scrubbed(event.query)  # had PII: no use, and no right, to suggest it
        if not q or len(q) > MAX_PREFIX_CHARS or scrubbed or not self.safety.allows(q):
            self.stats["rejected"] += 1
            return False
        ts = event.ts.timestamp()
        self.issuers.add(q, event.issuer, event.index)  # the server-known client where there is one
        self.prefixes.add(q, ts)
        if event.session_id:
            self.sessions.add(event.session_id, q, ts)
        return True

    def load(self, events: Iterable[LoggedSearch]) -> int:
        """Replay a query log (at startup); returns how many searches were learnt."""
        return sum(self.record(ev) for ev in events)

    # -- LM candidates --------------------------------------------------------------------------------------
    def _store_ok(self, text: str, given: str, task: Task) -> bool:
        """The (cached) result check of `text` typed as `given`; the safety filter is applied once per LM line,
        by `_checked`. The check sees what was typed when it counts only the added words or guards a completion
        against drift; otherwise one answer per candidate serves every typing."""
        if self._has_results is None:
            return True
        completes = task == "complete" and self.config.lm_min_shared_results > 0
        typed = given if self.config.term_coverage_of == "added" or completes else ""
        key = (text, typed, completes)
        ok = self.results_cache.get(key)
        if ok is None:
            try:
                ok = bool(self._has_results(text, typed, completes))
            except Exception as exc:  # store down: drop the candidate now, ask again next time
                log.warning("a suggestion's result check failed (%s); dropped for now", type(exc).__name__)
                return False
            self.results_cache.put(key, ok)
        return ok

    def lm_candidates(self, text: str, task: Task, complete: CompleteFn | None = None) -> list[tuple[str, float]]:
        """Generate, normalise, dedupe and filter LM candidates for one prefix/query (blocking), then cache.
        `complete`: another source of raw lines (the precompute job's batch output) instead of the online LM."""
        complete = complete or self._complete
        assert complete is not None
        self.stats["lm_jobs"] += 1
        started = time.perf_counter()
        self._job_start[(task, text)] = started
        try:
            raw = complete(text, task)
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
        kept: dict[str, float] = {}
        for t, s in sorted(best.items(), key=lambda kv: (-kv[1], kv[0])):
            shown = self._checked(t, core, task)
            if shown is not None and shown not in kept:
                kept[shown] = s
        out = list(kept.items())
        self.lm_cache.put((task, text), out)
        return out

    def _checked(self, text: str, core: str, task: Task) -> str | None:
        """`text`, or its longest word-boundary cut that passes the result check. A long LM line ("... in quantum
        yoga") often fails on one invented word while its head is a good query; the cut keeps more than what was
        typed (a completion), never ends in a stop word, and is None when nothing passes or the text is blocked."""
        floor = len(core) if task == "complete" else 0
        if not self.safety.allows(text):  # a cut at word boundaries of an allowed line holds no blocked word or PII
            return None
        words = text.split(" ")
        for n in range(len(words), max(0, len(words) - self.config.lm_backoff_words - 1), -1):
            cut = " ".join(words[:n])
            if len(cut) <= floor or cut == core:
                return None
            if n < len(words) and not query_terms(words[n - 1]):
                continue  # "vitamin d and": a trailing stop word is no query
            if self._store_ok(cut, core, task):
                return cut
        return None

    def _ensure_workers(self) -> Workers:
        if self._workers is None:
            with self._inflight_lock:
                if self._workers is None:
                    self._workers = Workers(self.config.workers, "sift-suggest")
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
                # never the prefix itself: warning lines hold no query text
                task, text = key
                log.warning("LM %s candidates for a %d-character text failed (%s)", task, len(text),
                            type(f.exception()).__name__)  # fmt: skip

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
    def _blend(
        self,
        log_c: Sequence[tuple[str, float]],
        lm_c: Sequence[tuple[str, float]],
        k: int,
        corpus_c: Sequence[tuple[str, float]] = (),
    ) -> list[Suggestion]:
        """One list: past searches first (1 search ~ 0.5, many → 1), then LM confidence and corpus phrase scores
        at their weights; a text from several sources adds them up."""
        cfg = self.config
        merged: dict[str, list[float]] = {}
        for t, count in log_c:
            merged.setdefault(t, [0.0, 0.0, 0.0])[0] = count / (count + 1.0)
        for t, conf in lm_c:
            merged.setdefault(t, [0.0, 0.0, 0.0])[1] = conf
        for t, w in corpus_c:
            merged.setdefault(t, [0.0, 0.0, 0.0])[2] = w
        out = []
        for t, (lg, lm, co) in merged.items():
            source: Source = "+".join(n for n, v in (("log", lg), ("lm", lm), ("corpus", co)) if v) or "log"  # type: ignore[assignment]
            score = cfg.log_weight * lg + cfg.lm_weight * lm + cfg.corpus.weight * co
            out.append(Suggestion(text=t, source=source, score=round(score, 6)))
        out.sort(key=lambda s: (-s.score, s.text))
        return out[:k]

    async def suggest(self, q: str, k: int = 8, deadline_ms: float | None = None) -> SuggestResponse:
        t0 = time.perf_counter()
        deadline = t0 + (self.config.deadline_ms if deadline_ms is None else deadline_ms) / 1000
        prefix = normalize_prefix(q[:MAX_PREFIX_CHARS])
        if not prefix:
            return SuggestResponse(query=q, suggestions=[], partial=False, took_ms=_ms(t0))
        log_c = self._shown(self.prefixes.top(prefix, self._wider(k), self.clock()), k)
        corpus_c = self.corpus_top(prefix, k)
        lm_c: list[tuple[str, float]] = []
        partial = False
        ahead = self.precomputed_for(prefix)
        if ahead is not None:
            lm_c = ahead
        elif self._complete is not None and len(prefix.strip()) >= self.config.lm_min_chars:
            exact = self.lm_cache.get(("complete", prefix))
            if exact is not None:
                lm_c = exact
            else:
                lm_c, partial = await self._await_lm(prefix, "complete", deadline)
                if partial:
                    lm_c = self._extended(prefix)  # a shorter prefix's candidates that still match
        blended = self._blend(log_c, lm_c, k, corpus_c)
        return SuggestResponse(query=q, suggestions=blended, partial=partial, took_ms=_ms(t0))

    def corpus_top(self, prefix: str, k: int) -> list[tuple[str, float]]:
        """The served index's titles and phrases for `prefix` (none before its corpus index is loaded)."""
        corpus = self.corpus
        return corpus.top(prefix, k) if corpus is not None and self.config.corpus.enabled else []

    def precomputed_for(self, prefix: str) -> list[tuple[str, float]] | None:
        """LM candidates computed ahead of time for `prefix`, or a shorter prefix's that still match; None: ask
        the online LM (when there is one)."""
        table = self.precomputed if self.config.precomputed_lm else None
        if table is None or len(prefix.strip()) < self.config.lm_min_chars:
            return None
        exact = table.get(prefix)
        if exact is not None:
            return exact
        ext = table.extended(prefix)
        return ext if ext or self._complete is None else None

    async def related(self, q: str, k: int = 8, deadline_ms: float | None = None) -> RelatedResponse:
        t0 = time.perf_counter()
        deadline = t0 + (self.config.deadline_ms if deadline_ms is None else deadline_ms) / 1000
        query = normalize_query(q[:MAX_PREFIX_CHARS])
        if not query:
            return RelatedResponse(query=q, related=[])
        cfg = self.config
        scores: dict[str, tuple[float, Literal["session", "lm"]]] = {}
        for t, w in self._shown(self.sessions.related(query, self._wider(k), self.clock()), k):
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

    def _wider(self, k: int) -> int:
        """Candidates to ask the indices for: more than k when some may not be shown yet."""
        return k if self.config.min_sessions <= 1 else max(4 * k, self.prefixes.top_n)

    def _shown(self, candidates: list[tuple[str, float]], k: int) -> list[tuple[str, float]]:
        return [c for c in candidates if self.issuers.shown(c[0])][:k]

    def suggest_blocking(self, q: str, k: int = 8) -> SuggestResponse:
        """No deadline: waits for the LM (offline evaluation measures what a warm cache serves)."""
        prefix = normalize_prefix(q[:MAX_PREFIX_CHARS])
        t0 = time.perf_counter()
        if not prefix:
            return SuggestResponse(query=q, suggestions=[], partial=False, took_ms=0.0)
        lm_c = self.precomputed_for(prefix) or []
        if not lm_c and self._complete is not None and len(prefix.strip()) >= self.config.lm_min_chars:
            lm_c = self.lm_cache.get(("complete", prefix)) or self.lm_candidates(prefix, "complete")
        log_c = self._shown(self.prefixes.top(prefix, self._wider(k), self.clock()), k)
        blended = self._blend(log_c, lm_c, k, self.corpus_top(prefix, k))
        return SuggestResponse(query=q, suggestions=blended, partial=False, took_ms=_ms(t0))

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
