"""Synonym sets per index, and what they do to a query's BM25 side.

The model is Algolia's and Typesense's: a multi-way set (`{"type": "synonym", "synonyms": ["tv", "television"]}`)
makes each of its terms stand for all the others; a one-way set (`{"type": "oneway", "input": "smartphone",
"synonyms": ["iphone", "android phone"]}`) adds its synonyms to a query that says the input, never the reverse.

Every term is analysed by `search.text.bm25_terms`, exactly as documents and queries are for BM25, so "running
shoes" in a set matches the query "run shoe" and the document "shoes for runners" in both stores. A query term
sequence that contains a set's input (a multi-word input: its words adjacent, in order) gains a clause per
synonym: a one-word synonym is one more BM25 term; a multi-word one matches documents that hold it as a phrase
(its stems adjacent) and scores as the sum of its words' BM25. The query's own terms are scored as before; the
clauses add to them (a `bool` `should`), each times `SYNONYM_WEIGHT`. The dense side needs none.

Storage is per index alias (`SynonymStore`: `search.stores.embedded_synonyms`, `search.stores.es_synonyms`), so
sets survive restarts and every reindex; `CachedSynonyms` keeps what a search reads for a short TTL.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Literal, Protocol, runtime_checkable

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from search.documents import Hit
from search.filters import Filter
from search.text import bm25_terms

log = logging.getLogger("sift.synonyms")

MAX_SETS = 1000  # synonym sets per index
MAX_TERMS = 32  # terms per set (a one-way set's input included)
MAX_TERM_CHARS = 100  # characters per term
MAX_TERM_WORDS = 6  # BM25 words per term (stop words and single letters do not count)
MAX_CLAUSES = 64  # synonym clauses one query may gain (a query that says many inputs at once)
SYNONYM_WEIGHT = 1.0  # a synonym clause's weight against the query's own terms


def _check_text(text: str) -> str:
    """Printable UTF-8 only: a lone surrogate or a control character could be stored but never read back."""
    if not text.isprintable():
        raise ValueError("synonym sets hold printable text only (no control characters)")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("synonym sets hold valid UTF-8 text only") from None
    return text


def _check_term(term: str) -> str:
    """A term, stripped, that BM25 can search for; a ValueError (a 422 through pydantic) says why not."""
    t = term.strip()
    if not t:
        raise ValueError("a synonym term must not be empty")
    if len(t) > MAX_TERM_CHARS:
        raise ValueError(f"a synonym term is longer than {MAX_TERM_CHARS} characters")
    _check_text(t)
    words = bm25_terms(t)
    if not words:
        raise ValueError("a synonym term has no searchable word (only stop words or single characters)")
    if len(words) > MAX_TERM_WORDS:
        raise ValueError(f"a synonym term has {len(words)} words; at most {MAX_TERM_WORDS}")
    return t


# Each term checked on its own, so a refusal's `loc` names the term (`sets.0.synonym.synonyms.2`); messages never
# quote the text (errors echo no input, serving/errors.py).
Term = Annotated[str, AfterValidator(_check_term)]


class MultiWaySynonym(BaseModel):
    """Each term stands for every other (`tv`, `television`, `telly`)."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["synonym"] = Field(description="`synonym`: multi-way.")
    id: str | None = Field(default=None, max_length=100, description="Optional name of the set, for its owner.")
    synonyms: list[Term] = Field(
        min_length=2, max_length=MAX_TERMS, description=f"2 to {MAX_TERMS} terms (words or phrases)."
    )

    @field_validator("id")
    @classmethod
    def _id(cls, v: str | None) -> str | None:
        return _check_text(v) if v is not None else None

    @field_validator("synonyms")
    @classmethod
    def _terms(cls, v: list[str]) -> list[str]:
        if len({tuple(bm25_terms(t)) for t in v}) < 2:
            raise ValueError("a multi-way set needs at least two terms that differ after stemming")
        return v


class OneWaySynonym(BaseModel):
    """A query saying `input` also searches `synonyms`; a query saying a synonym does not search `input`."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["oneway"] = Field(description="`oneway`: input → synonyms only.")
    id: str | None = Field(default=None, max_length=100, description="Optional name of the set, for its owner.")
    input: Term = Field(description="The word or phrase that triggers the set.")
    synonyms: list[Term] = Field(
        min_length=1, max_length=MAX_TERMS - 1, description=f"1 to {MAX_TERMS - 1} terms added to the query."
    )

    @field_validator("id")
    @classmethod
    def _id(cls, v: str | None) -> str | None:
        return _check_text(v) if v is not None else None


SynonymRule = Annotated[MultiWaySynonym | OneWaySynonym, Field(discriminator="type")]


class SynonymSets(BaseModel):
    """All the synonym sets of one index (what PUT replaces and GET returns)."""

    model_config = ConfigDict(extra="forbid")

    sets: list[SynonymRule] = Field(
        default_factory=list, max_length=MAX_SETS, description=f"At most {MAX_SETS} sets per index."
    )

    @model_validator(mode="before")
    @classmethod
    def _bare_list(cls, data: object) -> object:
        """A bare list of sets (the indexing YAML's `synonyms: [...]`) is the same as `{"sets": [...]}`."""
        return {"sets": data} if isinstance(data, list) else data

    @model_validator(mode="after")
    def _unique_ids(self) -> SynonymSets:
        ids = [s.id for s in self.sets if s.id is not None]
        if len(ids) != len(set(ids)):
            raise ValueError("set ids must be unique within an index")
        return self


class StoredSynonyms(SynonymSets):
    """An index's sets as stored, with a counter that grows on every change (what caches compare)."""

    index: str = Field(description="The index (alias) the sets belong to.")
    version: int = Field(ge=0, description="Grows by one on every change; 0: never set.")
    updated: str | None = Field(default=None, description="When they last changed (ISO 8601, UTC).")


class SynonymStore(Protocol):
    """Where an index's sets live (keyed by the alias name, so a reindex keeps them)."""

    def get(self, index: str) -> StoredSynonyms:
        """The index's sets (version 0 and none when never set)."""
        ...

    def put(self, index: str, sets: SynonymSets) -> StoredSynonyms:
        """Replace the index's sets atomically (an empty list clears them); the stored result."""
        ...

    def delete(self, index: str) -> bool:
        """Remove the index's sets; whether there were any."""
        ...


# -- expansion ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SynonymClause:
    """One synonym a query gained: the term as the set spells it, its BM25 words, its weight."""

    term: str
    stems: tuple[str, ...]
    weight: float = SYNONYM_WEIGHT


@dataclass(frozen=True)
class SynonymQuery:
    """A BM25 query with synonyms: the query's own terms (repeats kept, as `bm25_search` scores them) and the
    clauses it gained. Stores answer it with `bm25_synonym_search`."""

    terms: tuple[str, ...]
    clauses: tuple[SynonymClause, ...]


@runtime_checkable
class SynonymSearchStore(Protocol):
    """A store that answers BM25 with synonym clauses (both stores do; test doubles may not)."""

    def bm25_synonym_search(
        self, target: str, query: SynonymQuery, k: int, filters: Sequence[Filter] = ()
    ) -> list[Hit]:
        """Top `k` (ids and scores) by the query's own BM25 plus each clause's, times its weight; a document
        matches through any of them (a multi-word clause: only where its words are adjacent)."""
        ...


@dataclass(frozen=True)
class _Rule:
    inputs: tuple[tuple[str, ...], ...]
    outputs: tuple[tuple[str, tuple[str, ...]], ...]  # (term, stems)


class CompiledSynonyms:
    """An index's sets analysed once per version: each set as (inputs → outputs) in stemmed form. A multi-way
    set is one rule per term (that term in, the others out)."""

    def __init__(self, sets: SynonymSets) -> None:
        rules: list[_Rule] = []
        for s in sets.sets:
            if isinstance(s, MultiWaySynonym):
                terms = [(t, tuple(bm25_terms(t))) for t in s.synonyms]
                for i, (_, stems) in enumerate(terms):
                    rules.append(_Rule((stems,), tuple(x for j, x in enumerate(terms) if j != i)))
            else:
                outs = tuple((t, tuple(bm25_terms(t))) for t in s.synonyms)
                rules.append(_Rule((tuple(bm25_terms(s.input)),), outs))
        self.rules = rules
        # rules by the first word of each input: a query checks only the rules its own words can trigger, so
        # 1,000 sets cost a search a few dictionary lookups (rule order is kept: clauses come out in set order)
        self._by_first: dict[str, list[int]] = {}
        for i, rule in enumerate(rules):
            for first in {inp[0] for inp in rule.inputs}:
                self._by_first.setdefault(first, []).append(i)

    def expand(self, query: str) -> SynonymQuery | None:
        """The query with the clauses its words trigger, or None when no set applies (plain BM25 then)."""
        terms = tuple(bm25_terms(query))
        if not terms or not self.rules:
            return None
        seen: set[tuple[str, ...]] = set()
        clauses: list[SynonymClause] = []
        candidates = sorted({i for t in set(terms) for i in self._by_first.get(t, ())})
        for rule in (self.rules[i] for i in candidates):
            if not any(contains(terms, inp) for inp in rule.inputs):
                continue
            for term, stems in rule.outputs:
                if stems in seen or contains(terms, stems):  # the query says it already: nothing to add
                    continue
                seen.add(stems)
                clauses.append(SynonymClause(term, stems))
                if len(clauses) >= MAX_CLAUSES:
                    return SynonymQuery(terms, tuple(clauses))
        return SynonymQuery(terms, tuple(clauses)) if clauses else None


def contains(seq: Sequence[str], part: Sequence[str]) -> bool:
    """Whether `part` occurs in `seq` as adjacent items, in order (a phrase in a term sequence)."""
    n = len(part)
    if n == 0 or n > len(seq):
        return False
    if n == 1:
        return part[0] in seq
    first = part[0]
    return any(seq[i] == first and tuple(seq[i : i + n]) == tuple(part) for i in range(len(seq) - n + 1))


def expand(query: str, sets: SynonymSets) -> SynonymQuery | None:
    """`CompiledSynonyms(sets).expand(query)`: for one-off use; searches use a cached compilation."""
    return CompiledSynonyms(sets).expand(query)


def matched_synonyms(doc_terms: Sequence[str], query: SynonymQuery | None) -> list[str] | None:
    """The synonyms (as the sets spell them) a document holds (`doc_terms`: its `bm25_terms`); None when it
    holds none, so an explanation says `synonyms` only where a result matched through one."""
    if query is None:
        return None
    found = [c.term for c in query.clauses if contains(doc_terms, c.stems)]
    return found or None


class CachedSynonyms:
    """What searches read: each index's compiled sets, re-read from the `SynonymStore` after `ttl_s` (several
    replicas see a change within that), and at once after a change made through this object."""

    def __init__(self, store: SynonymStore, ttl_s: float = 2.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.ttl_s = ttl_s
        self._clock = clock
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[float, int, CompiledSynonyms | None]] = {}

    def compiled(self, index: str) -> CompiledSynonyms | None:
        """The index's compiled sets (None: it has none); a store that fails leaves the last known ones."""
        now = self._clock()
        with self._lock:
            hit = self._cache.get(index)
        if hit is not None and now - hit[0] < self.ttl_s:
            return hit[2]
        try:
            stored = self.store.get(index)
        except Exception as exc:  # the sets unreadable: search without them (or the last known) rather than fail
            log.warning("reading the synonyms of %s failed (%s: %s)", index, type(exc).__name__, exc)
            return hit[2] if hit is not None else None
        if hit is not None and hit[1] == stored.version:
            compiled = hit[2]
        else:
            compiled = CompiledSynonyms(stored) if stored.sets else None
        with self._lock:
            self._cache[index] = (now, stored.version, compiled)
        return compiled

    def expand(self, index: str, query: str) -> SynonymQuery | None:
        compiled = self.compiled(index)
        return compiled.expand(query) if compiled is not None else None

    def get(self, index: str) -> StoredSynonyms:
        return self.store.get(index)

    def put(self, index: str, sets: SynonymSets) -> StoredSynonyms:
        out = self.store.put(index, sets)
        self.invalidate(index)
        return out

    def delete(self, index: str) -> bool:
        out = self.store.delete(index)
        self.invalidate(index)
        return out

    def invalidate(self, index: str) -> None:
        with self._lock:
            self._cache.pop(index, None)
