"""Query-side text handling shared by the stores."""

from __future__ import annotations

import re

# Lucene's English stop set (Elasticsearch's `_english_`), so both stores drop the same words.
ENGLISH_STOPWORDS = frozenset(
    "a an and are as at be but by for if in into is it no not of on or such that the their then there "
    "these they this to was will with".split()
)
_WORD = re.compile(r"\w+", re.UNICODE)


def query_terms(query: str) -> list[str]:
    """Lower-cased word tokens without stop words, first occurrence order, no duplicates."""
    seen: dict[str, None] = {}
    for tok in _WORD.findall(query.lower()):
        if tok not in ENGLISH_STOPWORDS:
            seen.setdefault(tok, None)
    return list(seen)
