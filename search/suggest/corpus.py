"""Suggestions from the corpus itself, for a site with no query log yet (a cold start).

A new site's query log is empty and the LM's completions rarely pass the result check, so autocomplete would be
blank for days. The documents already say what can be found: their titles and their frequent phrases (n-grams
counted by document frequency). Every phrase kept holds at least one searchable word (two or more word
characters, not a stop word) and was read from a document, so searching it returns that document: a corpus
suggestion never finds nothing.

`CorpusIndex` answers a prefix from two sorted key lists (bisect, then the best of a bounded range):
- prefix: phrases starting with what was typed ("argp" → "argparse");
- infix: phrases with a later word starting with it ("parser" → "argparse parser"), ranked below prefix hits;
- a typo in the last word ("argpsre") is tried only when both miss: the edit-distance-1 variants of the typed
  word that start some vocabulary word (a few hundred bisects, on misses only).
Short prefixes (where the range is huge) keep exact top lists computed once at build time.
"""

from __future__ import annotations

import bisect
import heapq
import json
import math
import re
import threading
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from search.text import ENGLISH_STOPWORDS

FORMAT = 1
# words; dotted and snake names (os.path.join, snake_case) stay one; edge underscores go ("__hash__" → "hash":
# the stores' analyzers drop them, so the bare form is what finds the document)
_TOKEN = re.compile(r"[^\W_]+(?:[_.][^\W_]+)*", re.UNICODE)
_SEGMENT = re.compile(r"[\n\r,;:!?()\[\]{}<>\"“”=*#|`]+|\.(?:\s|$)")  # phrases never cross these
_SEARCHABLE = re.compile(r"\w\w+", re.UNICODE)
_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789_."
CorrectFn = Callable[[str], str | None]


class CorpusSuggestConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(default=True, description="Suggest titles and frequent phrases of the served index.")
    max_ngram: int = Field(default=3, ge=1, le=6, description="Longest phrase (words) counted in document text.")
    min_df: int = Field(default=3, ge=1, description="A body phrase must occur in this many documents.")
    max_phrases: int = Field(
        default=30_000, ge=100, description="Phrases kept (highest document frequency first; titles count too)."
    )
    max_title_words: int = Field(default=8, ge=1, description="Longer titles are not suggested whole.")
    body_chars: int = Field(
        default=4000, ge=0, description="Characters of each body read for phrases (the head says most; bounds build)."
    )
    max_docs: int = Field(default=200_000, ge=1, description="Documents read at most when the index is built.")
    weight: float = Field(default=0.4, ge=0, description="Weight of corpus evidence in the blend (log: 1).")
    infix: bool = Field(default=True, description="Match a later word of a phrase too, ranked below prefix hits.")
    typo: bool = Field(default=True, description="On a miss, try one edit in the last typed word.")
    precompute_chars: int = Field(default=3, ge=0, le=8, description="Prefixes up to this long keep top lists.")


def _searchable(words: list[str]) -> bool:
    return any(_SEARCHABLE.fullmatch(w) and w not in ENGLISH_STOPWORDS for w in words) or any("." in w for w in words)


def title_phrase(title: str, max_words: int) -> str | None:
    """A title as a query: lower case, up to a signature's "(" ("json.dumps(obj, ...)" → "json.dumps")."""
    head = title.split("(", 1)[0].lower()
    head = re.sub(r"^(?:class|exception|function|method|attribute|data)\s+", "", head.strip())
    words = _TOKEN.findall(head)
    if not words or len(words) > max_words or not _searchable(words):
        return None
    return " ".join(words)


def phrase_counts(docs: Iterable[tuple[str, str]], cfg: CorpusSuggestConfig) -> tuple[Counter[str], Counter[str], int]:
    """(body phrase document frequencies, title phrase counts, documents read) of (title, body) pairs."""
    df: Counter[str] = Counter()
    titles: Counter[str] = Counter()
    n = 0
    for title, body in docs:
        if n >= cfg.max_docs:
            break
        n += 1
        t = title_phrase(title, cfg.max_title_words)
        if t:
            titles[t] += 1
        seen: set[str] = set()
        for seg in _SEGMENT.split(body[: cfg.body_chars].lower()):
            words = _TOKEN.findall(seg)
            for i, w in enumerate(words):
                if w in ENGLISH_STOPWORDS:
                    continue
                for j in range(i + 1, min(len(words), i + cfg.max_ngram) + 1):
                    if words[j - 1] in ENGLISH_STOPWORDS or len(words[j - 1]) < 2:
                        continue  # no trailing stop word, nor the "t" of "doesn't"
                    seen.add(" ".join(words[i:j]))
        df.update(seen)
    return df, titles, n


def build_phrases(docs: Iterable[tuple[str, str]], cfg: CorpusSuggestConfig) -> dict[str, float]:
    """Phrase → score in (0, 1): document frequency on a log scale, a title's weight above its body counts."""
    df, titles, _ = phrase_counts(docs, cfg)
    weight: dict[str, float] = {}
    for p, c in df.items():
        if c >= cfg.min_df and len(p) <= 80 and _searchable(p.split(" ")):
            weight[p] = float(c)
    for p, c in titles.items():
        weight[p] = weight.get(p, 0.0) + 2.0 * c + float(cfg.min_df)  # a title names what a document is about
    best = heapq.nlargest(cfg.max_phrases, weight.items(), key=lambda kv: (kv[1], kv[0]))
    top = math.log1p(max((w for _, w in best), default=1.0))
    return {p: round(0.05 + 0.9 * math.log1p(w) / top, 6) for p, w in best}


class CorpusIndex:
    """Prefix and infix lookup over corpus phrases; immutable once built, so readers need no lock."""

    def __init__(self, phrases: dict[str, float], cfg: CorpusSuggestConfig | None = None, version: str = "") -> None:
        self.config = cfg = cfg or CorpusSuggestConfig()
        self.version = version
        self.phrases = phrases
        self._keys = sorted(phrases)
        self._scores = [phrases[k] for k in self._keys]
        infix = sorted(
            (k[m.start() :], i) for i, k in enumerate(self._keys) for m in re.finditer(r"(?<= )\S", k) if cfg.infix
        )
        self._infix_keys = [s for s, _ in infix]
        self._infix_ids = [i for _, i in infix]
        self._words = sorted({w for k in self._keys for w in k.split(" ")})
        infix_scores = [self._scores[i] for i in self._infix_ids]
        self._top = _top_lists(self._keys, self._scores, cfg.precompute_chars)
        self._infix_top = _top_lists(self._infix_keys, infix_scores, cfg.precompute_chars)
        self._infix_scores = infix_scores
        self._memo: OrderedDict[tuple[str, int], list[tuple[str, float]]] = OrderedDict()  # keystrokes repeat
        self._lock = threading.Lock()
        # the index vocabulary's prefix corrector (search/typo.py), tried before this index's own one-edit fix
        self.corrector: CorrectFn | None = None

    def __len__(self) -> int:
        return len(self._keys)

    @staticmethod
    def _range_top(keys: list[str], tops: dict[str, list[int]], scores: list[float], prefix: str, k: int) -> list[int]:
        """The k best rows of keys starting with `prefix`: a kept top list, else the (small) range scanned."""
        top = tops.get(prefix)
        if top is not None:
            return top[:k]
        lo = bisect.bisect_left(keys, prefix)
        hi = bisect.bisect_left(keys, prefix + "\U0010ffff", lo)
        return heapq.nlargest(k, range(lo, min(hi, lo + 4000)), key=scores.__getitem__)

    def _prefix_ids(self, prefix: str, k: int) -> list[int]:
        return self._range_top(self._keys, self._top, self._scores, prefix, k)

    def _lookup(self, prefix: str, k: int) -> list[tuple[str, float]]:
        out = {self._keys[i]: self._scores[i] for i in self._prefix_ids(prefix, k)}
        if self.config.infix and len(out) < k and len(prefix) >= 3:
            rows = self._range_top(self._infix_keys, self._infix_top, self._infix_scores, prefix, 4 * k)
            for r in rows:
                key = self._keys[self._infix_ids[r]]
                if key not in out and len(out) < k:
                    out[key] = 0.5 * self._scores[self._infix_ids[r]]  # a later word matched: below prefix hits
        return sorted(out.items(), key=lambda kv: (-kv[1], kv[0]))

    def top(self, prefix: str, k: int = 8, correct: CorrectFn | None = None) -> list[tuple[str, float]]:
        """Up to k (phrase, score) for a normalised prefix (a trailing space: the last word is complete): the
        prefix itself, else after the user's leading words, else (one edit in the last word) both again."""
        if not prefix.strip() or not self._keys or k <= 0:
            return []
        key = (prefix, k)
        if correct is None:
            with self._lock:
                hit = self._memo.get(key)
            if hit is not None:
                return hit
        hits = self._lookup(prefix, k)
        fixes: list[str] = []
        fixers = (correct,) if correct is not None else (self.corrector, self.correct)
        for fix in fixers if not hits and self.config.typo else ():
            fixed = fix(prefix) if fix is not None else None
            if fixed and fixed != prefix:
                fixes.append(fixed)
                hits = [(t, round(0.8 * s, 6)) for t, s in self._lookup(fixed, k)]
                if hits:
                    break
        if not hits:  # the user's own leading words, then a phrase: as typed, else as corrected
            hits = self._with_tails(prefix, k, 1.0)
            for fixed in fixes if not hits else ():
                hits = self._with_tails(fixed, k, 0.8)
                if hits:
                    break
        if correct is None:
            with self._lock:
                self._memo[key] = hits
                if len(self._memo) > 20_000:
                    self._memo.popitem(last=False)
        return hits

    def set_corrector(self, corrector: CorrectFn | None) -> None:
        """Attach the vocabulary's corrector (it arrives after the index serves): answers kept without it go."""
        with self._lock:
            self.corrector = corrector
            self._memo.clear()

    def _with_tails(self, prefix: str, k: int, factor: float) -> list[tuple[str, float]]:
        hits = self._lookup(prefix, k)
        if hits:
            return [(t, round(factor * s, 6)) for t, s in hits]
        words = prefix.split(" ")  # "how do i parse comm": the phrase may start after the user's own words
        for cut in range(1, min(4, len(words) - 1) + 1):
            head, rest = " ".join(words[:cut]), " ".join(words[cut:])
            if not rest.strip():
                break  # (a lone last letter may still start a word: "hash m" → "hash method", "hash module")
            tail = self._lookup(rest, k)
            if tail:  # BM25 ORs the words, so the phrase's words still find its documents
                return [(f"{head} {t}", round(0.6 * factor * s, 6)) for t, s in tail]
        return []

    def correct(self, prefix: str) -> str | None:
        """`prefix` with one edit in its last word (4+ characters) so that the word starts a known one: the variant
        that continues the typed phrase best, else the one starting the best phrase. None when no edit helps."""
        head, _, last = prefix.rpartition(" ")
        if len(last) < 4:
            return None
        best: tuple[bool, float, str] | None = None
        for v in _edits1(last):
            i = bisect.bisect_left(self._words, v)
            if i == len(self._words) or not self._words[i].startswith(v):
                continue
            cand = f"{head} {v}" if head else v
            ids = self._prefix_ids(cand, 1) if head else []
            whole = bool(ids)
            ids = ids or self._prefix_ids(v, 1) or self._infix_rows(v)
            score = self._scores[ids[0]] if ids else 0.0
            if best is None or (whole, score, cand) > best:
                best = (whole, score, cand)
        return best[2] if best else None

    def _infix_rows(self, word: str) -> list[int]:
        rows = self._range_top(self._infix_keys, self._infix_top, self._infix_scores, word, 1)
        return [self._infix_ids[r] for r in rows]

    # -- persistence: one small JSON file per index version ------------------------------------------------
    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"format": FORMAT, "version": self.version, "phrases": self.phrases}))
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path, cfg: CorpusSuggestConfig | None = None) -> CorpusIndex | None:
        """The saved index, or None when missing, unreadable or of another format (rebuilt then)."""
        try:
            raw = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(raw, dict) or raw.get("format") != FORMAT or not isinstance(raw.get("phrases"), dict):
            return None
        return cls({str(k): float(v) for k, v in raw["phrases"].items()}, cfg, str(raw.get("version", "")))


def _top_lists(keys: list[str], scores: list[float], chars: int, big: int = 48, k: int = 32) -> dict[str, list[int]]:
    """Exact top-k rows (best score first, then key order) of every prefix up to `chars` long, and of every longer
    prefix whose range holds more than `big` keys: a lookup then never scans more than `big` rows. Only ranges
    that were big one level up are split again, so the build is near-linear."""
    out: dict[str, list[int]] = {}
    segments = [(0, len(keys))]
    for length in range(1, 64):
        nxt = []
        for lo, hi in segments:
            i = lo
            while i < hi:
                p = keys[i][:length]
                if len(p) < length:  # this key is shorter: its prefixes were done at lower levels
                    i += 1
                    continue
                j = bisect.bisect_left(keys, p + "\U0010ffff", i, hi)
                if length <= chars or j - i > big:
                    out[p] = heapq.nlargest(k, range(i, j), key=lambda r: (scores[r], -r))
                    nxt.append((i, j))
                i = j
        if not nxt:
            break
        segments = nxt
    return out


def _edits1(word: str) -> set[str]:
    splits = [(word[:i], word[i:]) for i in range(len(word) + 1)]
    out = {a + b[1:] for a, b in splits if b}
    out |= {a + b[1] + b[0] + b[2:] for a, b in splits if len(b) > 1}
    out |= {a + c + b[1:] for a, b in splits if b for c in _ALPHABET}
    out |= {a + c + b for a, b in splits for c in _ALPHABET}
    out.discard(word)
    return out
