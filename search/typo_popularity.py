"""Query-log popularity for typo tolerance (`search.typo.Corrector.weight`'s `popularity` hook): a vocabulary
word that users search often wins a tie or near-tie over a rarer one ("celll": "cell" over "cells").

Privacy: the same rules the suggester applies to the log. Only searches with results count, never a query the
PII scrubber touched (`search.pii.was_scrubbed`), and a word counts only once `min_sessions` distinct issuers
searched it (`search.suggest.indices.IssuerCounter`): a word one person typed (a name) never weighs a
correction. Bounded: at most `max_words` words are tracked, and a word's bonus is capped at `max_bonus`
(document-frequency units), so the log reorders near-ties and never outweighs the corpus.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

from search.pii import was_scrubbed
from search.suggest.indices import IssuerCounter
from search.suggest.logged import LoggedSearch
from search.vocabulary import vocabulary_words


class QueryWordPopularity:
    """Counts the words of logged searches; `__call__(word)` is the bonus `Corrector.weight` adds."""

    def __init__(
        self, min_sessions: int = 3, index: str | None = None, max_words: int = 100_000, max_bonus: float = 10.0
    ) -> None:
        self.issuers = IssuerCounter(min_sessions, index)
        self.index = index
        self.max_words = max_words
        self.max_bonus = max_bonus
        self._counts: dict[str, int] = {}
        self._lock = threading.Lock()

    def record(self, event: LoggedSearch) -> bool:
        """Learn one logged search's words; False when it does not count."""
        if event.type != "search" or event.result_count < 1 or was_scrubbed(event.query):
            return False
        if self.index is not None and event.index not in (None, self.index):
            return False
        words = vocabulary_words(event.query)
        with self._lock:
            for w in words:
                self.issuers.add(w, event.issuer, event.index)
                if w in self._counts or len(self._counts) < self.max_words:
                    self._counts[w] = self._counts.get(w, 0) + 1
        return bool(words)

    def load(self, events: Iterable[LoggedSearch]) -> int:
        return sum(self.record(ev) for ev in events)

    def __call__(self, word: str) -> float:
        n = self._counts.get(word, 0)
        if n == 0 or not self.issuers.shown(word):
            return 0.0
        return min(float(n), self.max_bonus)
