"""Typo tolerance: query words outside the index's vocabulary, corrected to the likeliest word within reach.

A query word is left alone when it is short (below `one_typo_from` letters), holds a digit or an underscore
(numbers, codes, identifiers), is a stop word, is in the vocabulary (`search.vocabulary`), or shares its
Snowball stem with a vocabulary word ("runs" when only "running" is indexed: BM25 matches it already). Any other
word is replaced by the vocabulary word within the allowed edit distance (1 from `one_typo_from` letters, 2 from
`two_typos_from`; optimal string alignment, so a swap of two neighbours is one typo, as in Algolia and Typesense)
with the smallest distance, then the largest weight (`Corrector.weight`: document frequency, plus a hook for
query-log popularity), then alphabetically. The case of the word as typed is kept ("Pyhton" → "Python").

The correction is applied before retrieval, so BM25 and the dense encoder both see the corrected query
(`corrected_query` in the response). A word that is in the vocabulary but rare (document frequency at most
`rare_df`) next to a far more frequent neighbour (`rare_ratio` times) is only suggested (`did_you_mean`): a typo
that also occurs in a document or two. With tolerance off for a request, nothing is applied and the correction is
offered as `did_you_mean`.

Cost: the vocabulary is stored with the index version at build time and read once (one request), then held in
memory (`CachedVocabulary`); a version without one is read from its documents in the background, the searches
meanwhile going uncorrected; each word's
correction is computed once per version (rapidfuzz's OSA over the vocabulary words of nearby length, about a
millisecond for 40,000 words) and remembered, so a repeated query costs a few dict lookups.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import re
import threading
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, Field, model_validator
from rapidfuzz import process
from rapidfuzz.distance import OSA

from search.text import ENGLISH_STOPWORDS, snowball_stem
from search.vocabulary import CachedVocabulary, Vocabulary, vocabulary_source

log = logging.getLogger("sift.typo")

_TOKEN = re.compile(r"\w+", re.UNICODE)
_MAX_CACHED = 100_000  # remembered corrections per corrector (cleared when full)

Popularity = Callable[[str], float]


class TypoConfig(BaseModel):
    """How far a query word may be corrected (`search.retrieval.RetrievalConfig.typo`)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(
        default=True, description="Correct query words by default (a request's `typo_tolerance` overrides)."
    )
    one_typo_from: int = Field(
        default=5, ge=1, le=100, description="Words of this many letters or more may have 1 typo."
    )
    two_typos_from: int = Field(
        default=9, ge=1, le=100, description="Words of this many letters or more may have 2 typos."
    )
    rare_df: int = Field(
        default=1,
        ge=0,
        description="An indexed word in at most this many documents may be a typo too: only suggested (did_you_mean).",
    )
    rare_ratio: float = Field(
        default=20.0, ge=1.0, description="...when a neighbour within reach is in this many times more documents."
    )
    recheck_s: float = Field(
        default=30.0,
        ge=0.0,
        description="How often a search checks whether the index version changed (its vocabulary is then read again).",
    )

    scan_wait_s: float = Field(
        default=0.0,
        ge=0.0,
        le=60.0,
        description="How long a search may wait for a vocabulary read from the documents (a version built without "
        "a stored vocabulary, or updated since) before it goes uncorrected; the read goes on in the background.",
    )

    @model_validator(mode="after")
    def _ordered(self) -> TypoConfig:
        if self.two_typos_from < self.one_typo_from:
            raise ValueError("two_typos_from must be at least one_typo_from")
        return self


@dataclass(frozen=True)
class Correction:
    """What typo tolerance made of a query: `searched` is what retrieval should use."""

    query: str
    searched: str
    corrected_query: str | None = None  # set when words were corrected and applied
    did_you_mean: str | None = None  # set when a correction is only offered
    changes: list[tuple[str, str]] = field(default_factory=list)  # (word as typed, replacement), applied or not


class VocabIndex:
    """One vocabulary's lookup structures: its stems, its words by length, its words sorted (prefixes)."""

    def __init__(self, vocab: Vocabulary) -> None:
        self.vocab = vocab
        self.stems = frozenset(snowball_stem(w) for w in vocab.df)
        by_len: dict[int, list[str]] = defaultdict(list)
        for w in vocab.df:
            by_len[len(w)].append(w)
        self.by_len = {n: sorted(ws) for n, ws in by_len.items()}
        self.sorted = sorted(vocab.df)
        self._prefixes: dict[int, dict[str, int]] = {}
        self._lock = threading.Lock()

    def known(self, word: str) -> bool:
        return word in self.vocab.df or snowball_stem(word) in self.stems

    def has_prefix(self, prefix: str) -> bool:
        i = bisect.bisect_left(self.sorted, prefix)
        return i < len(self.sorted) and self.sorted[i].startswith(prefix)

    def prefixes(self, n: int) -> dict[str, int]:
        """Every vocabulary word's first `n` letters (words of `n` or more), with the summed document frequency."""
        with self._lock:
            table = self._prefixes.get(n)
            if table is None:
                acc: dict[str, int] = defaultdict(int)
                for w, df in self.vocab.df.items():
                    if len(w) >= n:
                        acc[w[:n]] += df
                table = self._prefixes[n] = dict(acc)
            return table


class Corrector:
    """Corrections against one vocabulary under one config; remembers each word's answer."""

    def __init__(self, index: VocabIndex, config: TypoConfig, popularity: Popularity | None = None) -> None:
        self.index = index
        self.config = config
        self.popularity = popularity
        self._words: dict[str, tuple[str | None, bool]] = {}  # word → (replacement or None, applied)

    def allowed(self, word: str) -> int:
        """Typos allowed in a word of this length."""
        n = len(word)
        return 2 if n >= self.config.two_typos_from else 1 if n >= self.config.one_typo_from else 0

    def weight(self, word: str) -> float:
        """How likely a candidate is meant: its document frequency. The hook for query-log frequency: a
        `popularity(word)` (how often users searched, or clicked results for, the word) is added to it."""
        w = float(self.index.vocab.df.get(word, 0))
        return w + self.popularity(word) if self.popularity is not None else w

    def _candidates(self, word: str, k: int) -> list[tuple[int, float, str]]:
        out: list[tuple[int, float, str]] = []
        for n in range(max(2, len(word) - k), len(word) + k + 1):
            choices = self.index.by_len.get(n)
            if not choices:
                continue
            for cand, dist, _ in process.extract(word, choices, scorer=OSA.distance, score_cutoff=k, limit=None):
                if cand != word:
                    out.append((int(dist), -self.weight(cand), cand))
        return sorted(out)

    def _eligible(self, word: str) -> bool:
        return self.allowed(word) > 0 and word.isalpha() and word not in ENGLISH_STOPWORDS

    def correct_word(self, word: str) -> tuple[str | None, bool]:
        """(replacement, applied) for a lower-cased word: (None, _) keeps it; applied False: a suggestion only."""
        hit = self._words.get(word)
        if hit is not None:
            return hit
        out: tuple[str | None, bool] = (None, False)
        if self._eligible(word):
            k = self.allowed(word)
            df = self.index.vocab.df.get(word, 0)
            if df > 0:
                if df <= self.config.rare_df:
                    best = self._candidates(word, k)
                    if best and -best[0][1] >= self.config.rare_ratio * df:
                        out = (best[0][2], False)
            elif not self.index.known(word):
                best = self._candidates(word, k)
                if best:
                    out = (best[0][2], True)
        if len(self._words) >= _MAX_CACHED:
            self._words.clear()
        self._words[word] = out
        return out

    def correct(self, query: str, apply: bool = True) -> Correction:
        """The query with its misspelt words corrected in place (everything else as typed). `apply` False: the
        search uses the query as typed and the corrections are offered as `did_you_mean`."""
        applied: list[str] = []
        offered: list[str] = []
        changes: list[tuple[str, str]] = []
        last = 0
        for m in _TOKEN.finditer(query):
            typed = m.group()
            repl, sure = self.correct_word(typed.lower())
            between = query[last : m.start()]
            last = m.end()
            if repl is None:
                applied += [between, typed]
                offered += [between, typed]
                continue
            repl = _same_case(typed, repl)
            changes.append((typed, repl))
            applied += [between, repl if sure and apply else typed]
            offered += [between, repl]
        applied.append(query[last:])
        offered.append(query[last:])
        searched, suggestion = "".join(applied), "".join(offered)
        return Correction(
            query=query,
            searched=searched,
            corrected_query=searched if searched != query else None,
            did_you_mean=suggestion if suggestion != searched else None,
            changes=changes,
        )

    def correct_prefix(self, prefix: str, limit: int = 3) -> list[str]:
        """Corrected forms of a typed prefix (autocomplete), best first, at most `limit`; [] when nothing in it
        needs correcting.

        The prefix's complete words (all but the last, or all when it ends in a space) are corrected as query
        words are. Its last, partial word is left alone when some vocabulary word starts with it, or when it is
        short, a number or a code; otherwise it is replaced by the vocabulary prefixes (the first n letters of
        vocabulary words, n within the allowed typos of its length) nearest to it, the ones starting the most
        documents first: "how to recie" → ["how to recei", ...]. Case is folded: suggestions are lower-case, as
        `search.text.normalize_prefix` makes them. Each string is a prefix to complete as the typed one would be.
        """
        text = prefix.lower()
        words = [(m.start(), m.end()) for m in _TOKEN.finditer(text)]
        if not words or limit <= 0:
            return []
        partial = words[-1] if not text[-1:].isspace() and words[-1][1] == len(text) else None
        head = text[: partial[0]] if partial is not None else text
        fixed = self.correct(head).searched
        tails = self._prefix_tails(text[partial[0] :]) if partial is not None else []
        if not tails:
            return [fixed + (text[partial[0] :] if partial else "")] if fixed != head else []
        return [fixed + t for t in tails[:limit]]

    def _prefix_tails(self, part: str) -> list[str]:
        k = self.allowed(part)
        if not self._eligible(part) or self.index.has_prefix(part):
            return []
        found: dict[str, tuple[int, int, float]] = {}
        for n in range(max(2, len(part) - k), len(part) + k + 1):
            table = self.index.prefixes(n)
            if not table:
                continue
            for cand, dist, _ in process.extract(part, list(table), scorer=OSA.distance, score_cutoff=k, limit=None):
                key = (int(dist), abs(n - len(part)), -float(table[cand]))
                if cand not in found or key < found[cand]:
                    found[cand] = key
        return [c for c, _ in sorted(found.items(), key=lambda kv: (kv[1], kv[0]))]


def _same_case(typed: str, word: str) -> str:
    if typed.isupper() and len(typed) > 1:
        return word.upper()
    if typed[:1].isupper():
        return word[:1].upper() + word[1:]
    return word


class TypoTolerance:
    """Typo tolerance over a store: the vocabulary of each index in memory, a corrector per version and config.

    `correct` never raises for a store fault: a search without correction is better than no search (the
    retrieval that follows reports the fault itself)."""

    def __init__(self, store: object, config: TypoConfig | None = None, popularity: Popularity | None = None) -> None:
        self.config = config or TypoConfig()
        self.popularity = popularity
        source = vocabulary_source(store)
        self.vocabularies = (
            CachedVocabulary(source, self.config.recheck_s, wait_s=self.config.scan_wait_s)
            if source is not None
            else None
        )
        self._indexes: dict[str, VocabIndex] = {}  # alias → structures of the vocabulary it held
        self._correctors: dict[tuple[str, str], Corrector] = {}  # (version, config) → corrector
        self._lock = threading.Lock()

    def corrector(self, index: str, config: TypoConfig | None = None) -> Corrector | None:
        """The corrector for the index's current vocabulary (None: the store has no vocabulary, or it is still
        being read in the background)."""
        if self.vocabularies is None:
            return None
        cfg = config or self.config
        vocab = self.vocabularies.get(index)
        if vocab is None:
            return None
        with self._lock:
            vi = self._indexes.get(index)
            if vi is None or vi.vocab is not vocab:
                vi = self._indexes[index] = VocabIndex(vocab)
                self._correctors = {k: c for k, c in self._correctors.items() if c.index.vocab.version != vocab.version}
            key = (vocab.version + repr(vocab.stamp), cfg.model_dump_json())
            c = self._correctors.get(key)
            if c is None or c.index is not vi:
                c = self._correctors[key] = Corrector(vi, cfg, self.popularity)
            return c

    def correct(
        self, index: str, query: str, enabled: bool | None = None, config: TypoConfig | None = None
    ) -> Correction:
        """The query as retrieval should search it. `enabled`: the request's switch (None: the config's)."""
        cfg = config or self.config
        on = cfg.enabled if enabled is None else enabled
        try:
            corrector = self.corrector(index, cfg)
        except Exception as exc:  # the store's fault: reported by the retrieval that follows
            log.warning(
                "typo tolerance skipped: the vocabulary of %r could not be read (%s)", index, type(exc).__name__
            )
            corrector = None
        if corrector is None:
            return Correction(query=query, searched=query)
        return corrector.correct(query, apply=on)

    async def acorrect(
        self, index: str, query: str, enabled: bool | None = None, config: TypoConfig | None = None
    ) -> Correction:
        """`correct` off the event loop (a version's first search reads its vocabulary); nothing to do without a
        vocabulary."""
        if self.vocabularies is None:
            return Correction(query=query, searched=query)
        return await asyncio.to_thread(self.correct, index, query, enabled, config)

    def correct_prefix(self, index: str, prefix: str, limit: int = 3) -> list[str]:
        """`Corrector.correct_prefix` on the index's vocabulary ([] when it cannot be read): for suggestions."""
        try:
            corrector = self.corrector(index)
        except Exception as exc:
            log.warning(
                "prefix correction skipped: the vocabulary of %r could not be read (%s)", index, type(exc).__name__
            )
            return []
        return corrector.correct_prefix(prefix, limit) if corrector is not None else []
