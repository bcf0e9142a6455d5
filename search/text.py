"""Query text utilities shared by the stores, highlighting and suggestions: tokens, normal forms, stems."""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

import Stemmer

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


# -- normal forms (suggestions: the query log's keys and the prefixes typed) --------------------------------
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


# -- stems ------------------------------------------------------------------------------------------------
# Two on purpose, with different results: `snowball_stem` is compared for equality (highlighting), while
# `prefix_stem` is searched as a word prefix. A Snowball stem is not always a prefix of its word ("study" →
# "studi"), so it cannot serve as the prefix, and the crude cut is too coarse to compare for equality.
_stemmer = Stemmer.Stemmer("english")


@lru_cache(maxsize=65536)
def snowball_stem(word: str) -> str:
    """The lower-cased word's English Snowball stem ("running" → "run"), close to what the index's analyzer keeps."""
    return str(_stemmer.stemWord(word.lower()))


def prefix_stem(term: str) -> str:
    """A crude, store-independent stem ("folding" → "fold", "cells" → "cell"): a prefix both forms share."""
    return term if len(term) <= 4 else term[: max(4, len(term) - 3)]
