"""Which queries a learnt ranker has evidence for: the word sets of its training log's queries.

Why: a ranker learnt from clicks gains on queries with a near-twin in its training log and loses on the others
(docs/notes/gate-grid.md: +.046 on twins, -.062 on the rest at exploration 0.1), because its per-document click
evidence only transfers to near-twins. So, as Algolia's Dynamic Re-Ranking does, a query without click history
keeps the engine's own order. "Familiar" is the issue's own twin rule (training/gate_report.py's, defined
here): word-set
Jaccard >= 0.5 with one training query, the same tokenizer reused, chosen before looking at any test figure.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence

TWIN_JACCARD = 0.5
MAX_SETS = 100_000
_WORD = re.compile(r"\w+", re.UNICODE)


def words(text: str) -> frozenset[str]:
    """The word set the twin rule compares: lower-cased `\\w+` tokens, stop words kept. Defined here, below
    training/, so serving and `training.gate_report` (which re-exports it) use the one tokenizer."""
    return frozenset(_WORD.findall(text.lower()))


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    return len(a & b) / len(a | b) if a or b else 0.0


def familiar_sets(queries: Iterable[str], limit: int = MAX_SETS) -> list[list[str]]:
    """The distinct word sets of `queries` (the ones a ranker learnt from), most frequent first, at most `limit`;
    each set sorted, so the saved list is stable for the same log."""
    counts = Counter(words(q) for q in queries)
    counts.pop(frozenset(), None)
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], sorted(kv[0])))
    return [sorted(ws) for ws, _ in ranked[:limit]]


class FamiliarIndex:
    """Word → the saved sets holding it: a lookup reads only sets that share a word with the query."""

    def __init__(self, sets: Sequence[Sequence[str]]) -> None:
        self.sets = [frozenset(s) for s in sets]
        self._postings: dict[str, list[int]] = defaultdict(list)
        for i, ws in enumerate(self.sets):
            for w in ws:
                self._postings[w].append(i)

    def __len__(self) -> int:
        return len(self.sets)

    def best(self, query: str) -> float:
        """The highest word-set Jaccard of `query` with any saved set (0 when none shares a word)."""
        mine = words(query)
        if not mine:
            return 0.0
        # Shared-word counts from the postings give each Jaccard as c / (|A| + |B| - c), no set operations.
        shared: Counter[int] = Counter(i for w in mine for i in self._postings.get(w, ()))
        n = len(mine)
        return max((c / (n + len(self.sets[i]) - c) for i, c in shared.items()), default=0.0)

    def familiar(self, query: str, threshold: float = TWIN_JACCARD) -> bool:
        return self.best(query) >= threshold
