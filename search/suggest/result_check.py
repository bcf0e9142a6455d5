"""The store check an LM suggestion must pass before it is shown: it has to find something, the words the LM
added must be in what it finds, and (with `min_shared`) what it finds must overlap what the user's own words find.

BM25 is an OR of the words, so an invented "vitamin d and quantum yoga" would pass a bare hit test on "vitamin"
alone; the coverage test catches that. The shared-results test is a drift guard: an LM line may finish a claim
fluently and still search for something else (measured on validation, `bench/lm_train.py --validate`, the tuned
LM's lines searched worse than the bare prefix on average; those that keep some of the prefix's results did not
lose as much).
"""

from __future__ import annotations

import math
import re
from typing import Any

from search.suggest.cache import TTLCache
from search.suggest.schemas import CoverageOf, HasResultsFn
from search.text import prefix_stem, query_terms


def store_has_results(
    store: Any,
    index: str,
    min_term_coverage: float = 0.0,
    depth: int = 3,
    coverage_of: CoverageOf = "added",
    min_shared: int = 0,
    shared_depth: int = 10,
    typed_cache_ttl_s: float = 600.0,
) -> HasResultsFn:
    """The check for `Suggester(has_results=...)`. With `min_term_coverage` > 0, one of the top `depth` results
    must contain that share of the candidate's words; `coverage_of="added"` counts only the words not in `given`
    (what the user typed): a claim the user words their own way ("... biomaterials lack inductive pr") is not the
    LM's invention, the completed "properties" is. With `min_shared` > 0, a candidate that `completes` what was
    typed must keep, among its top `shared_depth` results, at least `min_shared` of the typed text's top
    `shared_depth` (all of them when it finds fewer)."""
    typed_ids: TTLCache[str, frozenset[str]] = TTLCache(4096, typed_cache_ttl_s)

    def drifts(hits: list[Any], given: str) -> bool:
        """Fewer than `min_shared` of the typed text's results among the candidate's (all of them when the typed
        text finds fewer: a small index, a rare word)."""
        ids = typed_ids.get(given)
        if ids is None:
            ids = frozenset(h.id for h in store.bm25_search(index, given, shared_depth, with_docs=False))
            typed_ids.put(given, ids)
        return sum(1 for h in hits[:shared_depth] if h.id in ids) < min(min_shared, len(ids))

    def check(text: str, given: str = "", completes: bool = False) -> bool:
        guard = min_shared > 0 and completes and bool(given.strip())
        if min_term_coverage <= 0 and not guard:
            return bool(store.bm25_search(index, text, 1, with_docs=False))
        hits = store.bm25_search(index, text, max(depth, shared_depth if guard else 0), with_docs=min_term_coverage > 0)
        if not hits or (guard and drifts(hits, given)):
            return False
        if min_term_coverage <= 0:
            return True
        terms = query_terms(text)
        if coverage_of == "added":
            typed = set(query_terms(given))
            terms = [t for t in terms if t not in typed]
        if not terms:
            return True
        need = math.ceil(min_term_coverage * len(terms) - 1e-9)
        patterns = [re.compile(r"(?<!\w)" + re.escape(prefix_stem(t))) for t in terms]
        for h in hits[:depth]:
            if h.doc is None:
                continue
            body = f"{h.doc.title} {h.doc.body}".lower()
            if sum(1 for p in patterns if p.search(body)) >= need:
                return True
        return False

    return check
