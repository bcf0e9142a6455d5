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


def query_tokens(query: str) -> list[str]:
    """Lower-cased word tokens without stop words, in order, repeats kept: a word said twice weighs twice in
    BM25 (as in Elasticsearch's `match` and bm25s), which is most of what a long, verbose query says."""
    return [tok for tok in _WORD.findall(query.lower()) if tok not in ENGLISH_STOPWORDS]


def query_terms(query: str) -> list[str]:
    """`query_tokens` without duplicates, first occurrence order (highlighting, suggestions)."""
    return list(dict.fromkeys(query_tokens(query)))


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


# Two or more word characters: the token pattern of bm25s and scikit-learn. Single characters are mostly noise
# in running text ("e.g." → e, g; possessive s; initials) and cost long queries more than they give.
_BM25_WORD = re.compile(r"\w\w+", re.UNICODE)


def bm25_terms(text: str) -> list[str]:
    """The terms both stores score with BM25, for documents and queries alike: words of two or more characters,
    lower-cased, without stop words, Snowball English stems, in order with repeats (term frequency counts)."""
    return [snowball_stem(tok) for tok in _BM25_WORD.findall(text.lower()) if tok not in ENGLISH_STOPWORDS]


def prefix_stem(term: str) -> str:
    """A crude, store-independent stem ("folding" → "fold", "cells" → "cell"): a prefix both forms share."""
    return term if len(term) <= 4 else term[: max(4, len(term) - 3)]
