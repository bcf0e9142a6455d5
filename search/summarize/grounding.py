"""Sentences, citations and the grounding check that keeps a small LM's summary honest.

A 135M-parameter model writes fluent text that is often not in its sources. Every generated sentence is
therefore compared with the sentences of the results it cites (embedding similarity by default, a
cross-encoder or NLI model by config), and numbers it states must occur in those results: a sentence
that fails is dropped or flagged, one without a citation gets its best-supporting source or is dropped.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import Stemmer
from pydantic import BaseModel, ConfigDict, Field

from models.cross_encoder import CrossEncoderConfig, CrossEncoderModel
from models.embedder import Embedder
from search.text import ENGLISH_STOPWORDS

# Words whose trailing period does not end a sentence.
_ABBREVIATIONS = frozenset(
    "al e.g eg i.e ie etc fig figs vs cf approx ca dr mr mrs ms prof no nos vol et resp ref refs eq eqs sec "
    "st jr sr inc ltd co corp dept est min max mg ml kg km".split()
)
_BOUNDARY = re.compile(r"(?<=[.!?])[\"')\]]*\s+|\n+")
_LAST_WORD = re.compile(r"([A-Za-z][A-Za-z.]*)\.$")
_CITATION = re.compile(
    r"\[\s*(?:(?:sources?|docs?|documents?|results?|refs?)\s*)?(\d+(?:\s*(?:,|;|-|–|and)\s*\d+)*)\s*\]", re.IGNORECASE
)
_ONLY_CITATIONS = re.compile(r"^(?:\s*" + _CITATION.pattern + r")+[.!?]*\s*$", re.IGNORECASE)
_CITED_AFTER_END = re.compile(r"([.!?])((?:[ \t]*" + _CITATION.pattern + r")+)[.!?]?", re.IGNORECASE)
_ENUMERATOR = re.compile(r"^(?:\(?\d{1,2}[.)]|[-*•–])\s+")
_NUMBER = re.compile(r"(?<![\w.])\d+(?:[.,]\d+)*")
_SPACE_BEFORE_PUNCT = re.compile(r"\s+([.,;:!?])")
_WORD = re.compile(r"[^\W\d_]{3,}", re.UNICODE)
_stemmer = Stemmer.Stemmer("english")
_stem_lock = threading.Lock()  # PyStemmer objects are not thread-safe


def split_sentences(text: str, max_chars: int = 600) -> list[str]:
    """Rule-based splitter: ends at . ! ? or newlines, not after common abbreviations, initials or decimals."""
    out: list[str] = []
    start = 0
    for m in _BOUNDARY.finditer(text):
        end = m.start()
        piece = text[start:end]
        if not m.group().startswith("\n") and not _is_boundary(piece, text[m.end() : m.end() + 1]):
            continue
        _add(out, piece, max_chars)
        start = m.end()
    _add(out, text[start:], max_chars)
    return out


def _is_boundary(piece: str, next_char: str) -> bool:
    if next_char and next_char.islower():
        return False
    if re.fullmatch(r"\s*\(?\d{1,2}[.)]", piece):  # a list enumerator, "1. First point"
        return False
    w = _LAST_WORD.search(piece.rstrip("\"')]"))
    if w is None:
        return True
    word = w.group(1)
    return not (word.lower().rstrip(".") in _ABBREVIATIONS or (len(word) == 1 and word.isupper()))


def _add(out: list[str], piece: str, max_chars: int) -> None:
    piece = " ".join(piece.split())
    if not piece:
        return
    while len(piece) > max_chars:  # run-on text (tables, lists): cut at a word boundary
        cut = piece.rfind(" ", 0, max_chars)
        cut = cut if cut > max_chars // 2 else max_chars
        out.append(piece[:cut].strip())
        piece = piece[cut:].strip()
    if piece:
        out.append(piece)


@dataclass
class ParsedSentence:
    """A generated sentence with the citation markers taken out."""

    text: str
    citations: list[int] = field(default_factory=list)
    invalid_citations: list[int] = field(default_factory=list)


def _expand(group: str) -> list[int]:
    nums: list[int] = []
    for part in re.split(r"\s*(?:,|;|and)\s*", group):
        rng = re.split(r"\s*[-–]\s*", part)
        if len(rng) == 2 and rng[0].isdigit() and rng[1].isdigit() and 0 < int(rng[1]) - int(rng[0]) < 20:
            nums.extend(range(int(rng[0]), int(rng[1]) + 1))
        elif part.strip().isdigit():
            nums.append(int(part))
    return nums


def _citations_in(text: str) -> list[int]:
    seen: dict[int, None] = {}
    for m in _CITATION.finditer(text):
        for n in _expand(m.group(1)):
            seen.setdefault(n, None)
    return list(seen)


def parse_citations(text: str, n_sources: int | None = None, *, complete: bool = True) -> list[ParsedSentence]:
    """Split generated text into sentences and pull out their [n] citations.

    Handles `claim [1].`, `claim. [1]` (same line), `[1][2]`, `[1, 3]`, `[1-3]`, `[Source 2]`, and list
    lines that start with their citation (`[2] claim`) or an enumerator (`1. claim`). A citation outside
    1..n_sources is kept apart as invalid. With complete=False (generation was cut off) a trailing
    fragment without end punctuation or citation is left out.
    """
    text = _CITED_AFTER_END.sub(lambda m: f"{m.group(2)}{m.group(1)}", text)  # "claim. [1]" → "claim [1]."
    pieces = split_sentences(text)
    out: list[ParsedSentence] = []
    for piece in pieces:
        cites = _citations_in(piece)
        if _ONLY_CITATIONS.match(piece):
            if out:  # "claim.\n[1]": the citation belongs to the sentence before it
                out[-1].citations.extend(n for n in cites if n not in out[-1].citations)
            continue
        clean = _SPACE_BEFORE_PUNCT.sub(r"\1", _CITATION.sub("", piece))
        clean = _ENUMERATOR.sub("", " ".join(clean.split()).strip())
        if not any(c.isalnum() for c in clean):
            continue
        out.append(ParsedSentence(text=clean, citations=cites))
    if not complete and out and pieces and not pieces[-1].rstrip().endswith((".", "!", "?", "]")):
        out.pop()
    if n_sources is not None:
        for s in out:
            s.invalid_citations = [n for n in s.citations if not 1 <= n <= n_sources]
            s.citations = [n for n in s.citations if 1 <= n <= n_sources]
    return out


def numbers_in(text: str) -> set[str]:
    """Numbers a sentence states, normalised (1,000 → 1000), for the invented-number check."""
    return {m.group().replace(",", "") for m in _NUMBER.finditer(text)}


def content_terms(text: str) -> list[str]:
    """Stemmed words of 3+ letters without stop words: what lexical coverage counts."""
    words = [w for w in _WORD.findall(text.lower()) if w not in ENGLISH_STOPWORDS]
    with _stem_lock:
        return list(_stemmer.stemWords(words))


def coverage(sentence_terms: Sequence[str], source_terms: set[str]) -> float:
    """Share of a sentence's content words that occur in the sources (1.0 for a sentence without any)."""
    if not sentence_terms:
        return 1.0
    return sum(1 for t in sentence_terms if t in source_terms) / len(sentence_terms)


class GroundingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    method: Literal["embedding", "cross_encoder"] = Field(
        default="embedding",
        description="embedding: cosine similarity with the summarizer's embedder; cross_encoder: a CrossEncoder "
        "or NLI model scores (source sentence, summary sentence) pairs.",
    )
    threshold: float = Field(
        default=0.7,
        description="A sentence is supported when its best score against a cited source reaches this "
        "(cosine for embedding; probability for cross_encoder).",
    )
    cross_encoder: str | None = Field(default=None, description="HF id or local path, for method cross_encoder.")
    entailment_index: int | None = Field(
        default=None,
        description="For NLI models with several labels, the column of 'entailment'; None for one-logit models.",
    )
    device: str | None = Field(default=None, description="Torch device of the cross-encoder; None uses the resolver.")
    min_coverage: float = Field(
        default=0.75,
        ge=0.0,
        le=1.0,
        description="Share of a sentence's content words that must occur in the cited results: similarity alone "
        "lets a copied clause carry an invented one.",
    )
    check_numbers: bool = Field(
        default=True, description="Numbers in a sentence must appear in the cited results (catches invented figures)."
    )
    unsupported: Literal["drop", "flag"] = Field(
        default="drop", description="drop unsupported sentences, or keep them flagged supported: false."
    )
    min_chars: int = Field(default=12, ge=0, description="Shorter generated sentences are discarded as fragments.")


class GroundingSource(BaseModel):
    """The text one cited result offers as evidence: its sentences and their vectors."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    n: int = Field(description="Citation number, 1-based.")
    sentences: list[str]
    vectors: Any = Field(default=None, description="float32 (len(sentences), dims), L2-normalised; embedding method.")
    numbers: set[str] = Field(default_factory=set, description="Numbers anywhere in the result.")
    terms: set[str] = Field(default_factory=set, description="Content terms anywhere in the result (content_terms).")

    @classmethod
    def from_text(cls, n: int, text: str, sentences: list[str], vectors: Any = None) -> GroundingSource:
        return cls(n=n, sentences=sentences, vectors=vectors, numbers=numbers_in(text), terms=set(content_terms(text)))


class CheckedSentence(BaseModel):
    text: str
    citations: list[int]
    supported: bool
    support: float
    coverage: float = 1.0
    citation_added: bool = False
    note: str | None = None


class GroundingChecker:
    """Scores each generated sentence against the results it cites; light init, models load in warm_up()."""

    def __init__(self, config: GroundingConfig, embedder: Embedder | None) -> None:
        if config.method == "embedding" and embedder is None:
            raise ValueError("grounding method 'embedding' needs an embedder")
        if config.method == "cross_encoder" and not config.cross_encoder:
            raise ValueError("grounding method 'cross_encoder' needs grounding.cross_encoder")
        self.config = config
        self.embedder = embedder
        self._ce: CrossEncoderModel | None = None
        if config.method == "cross_encoder":  # predict()'s default batch and the model's own token window
            ce = CrossEncoderConfig(model=config.cross_encoder, device=config.device, batch_size=32, max_length=None)
            self._ce = CrossEncoderModel(ce)

    def warm_up(self) -> None:
        if self.config.method == "embedding":
            assert self.embedder is not None
            self.embedder.warm_up()
            return
        assert self._ce is not None
        self._ce.warm_up()

    def check(self, sentences: Sequence[ParsedSentence], sources: Sequence[GroundingSource]) -> list[CheckedSentence]:
        """One verdict per sentence (fragments shorter than min_chars left out), in order."""
        sents = [s for s in sentences if len(s.text) >= self.config.min_chars]
        if not sents or not sources:
            return [
                CheckedSentence(text=s.text, citations=s.citations, supported=False, support=0.0, note="no sources")
                for s in sents
            ]
        by_n = {s.n: s for s in sources}
        scores = self._scores([s.text for s in sents], sources)  # (len(sents), len(sources)) best score per source
        out: list[CheckedSentence] = []
        for i, s in enumerate(sents):
            cited = [n for n in s.citations if n in by_n]
            terms = content_terms(s.text)
            added = not cited
            if cited:
                cols = [j for j, src in enumerate(sources) if src.n in cited]
                support = float(scores[i, cols].max())
            else:  # no usable citation: attribute to the source that supports it best
                j = max(range(len(sources)), key=lambda j: (scores[i, j], coverage(terms, sources[j].terms)))
                support = float(scores[i, j])
                cited = [sources[j].n]
            cov = coverage(terms, set().union(*(by_n[n].terms for n in cited)))
            notes = []
            if support < self.config.threshold:
                notes.append(f"similarity {support:.2f} below {self.config.threshold}")
            if cov < self.config.min_coverage:
                notes.append(f"only {cov:.0%} of its words occur in the cited results")
            if self.config.check_numbers:
                missing = sorted(numbers_in(s.text) - set().union(*(by_n[n].numbers for n in cited)))
                if missing:
                    notes.append(f"numbers not in the cited results: {', '.join(missing)}")
            supported = not notes
            if added:
                notes.append("citation added by the grounding check")
            out.append(
                CheckedSentence(
                    text=s.text,
                    citations=cited,
                    supported=supported,
                    support=round(support, 4),
                    coverage=round(cov, 4),
                    citation_added=added,
                    note="; ".join(notes) or None,
                )
            )
        return out

    def _scores(self, texts: list[str], sources: Sequence[GroundingSource]) -> np.ndarray:
        if self.config.method == "embedding":
            assert self.embedder is not None
            q = self.embedder.embed(texts)
            out = np.full((len(texts), len(sources)), -1.0, dtype=np.float32)
            for j, src in enumerate(sources):
                if not src.sentences:
                    continue
                vecs = np.asarray(src.vectors if src.vectors is not None else [], dtype=np.float32)
                if vecs.shape[0] != len(src.sentences):
                    raise ValueError(f"source {src.n} has {len(src.sentences)} sentences but {vecs.shape[0]} vectors")
                out[:, j] = (q @ vecs.T).max(axis=1)
            return out
        self.warm_up()
        pairs: list[tuple[str, str]] = []
        spans: list[tuple[int, int, int]] = []  # (text index, source index, pair count)
        for i, t in enumerate(texts):
            for j, src in enumerate(sources):
                spans.append((i, j, len(src.sentences)))
                pairs.extend((ss, t) for ss in src.sentences)
        assert self._ce is not None
        raw = np.asarray(self._ce.predict(pairs), dtype=np.float32)
        probs = self._probabilities(raw.reshape(len(pairs), -1))
        out = np.zeros((len(texts), len(sources)), dtype=np.float32)
        k = 0
        for i, j, n in spans:
            out[i, j] = float(probs[k : k + n].max()) if n else 0.0
            k += n
        return out

    def _probabilities(self, logits: np.ndarray) -> np.ndarray:
        if logits.shape[1] == 1:
            return np.asarray([1 / (1 + math.exp(-float(x))) for x in logits[:, 0]], dtype=np.float32)
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        p = e / e.sum(axis=1, keepdims=True)
        idx = self.config.entailment_index if self.config.entailment_index is not None else p.shape[1] - 1
        return np.asarray(p[:, idx], dtype=np.float32)
