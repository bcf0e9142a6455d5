"""The reference first stage: plain BM25 (bm25s) over a BEIR collection, computed in-process beside the stores.

A learnt ranker re-orders the candidates the first stage returns; it cannot bring back what that stage missed. So
each store's BM25 is held against a plain, widely used one: bm25s with k1 1.2, b 0.75 and Lucene's IDF, its
English stop words, Snowball English stems (PyStemmer) and one field of title + " " + body, read straight from
corpus.jsonl (no cleaning, no store, no service). `sift eval` runs it as the system `bm25-reference` on the same
query text as every other system.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ranking.fusion import linear, ranked, rrf
from search.documents import Hit


class ReferenceBM25Config(BaseModel):
    """The reference BM25's parameters (the defaults are the reference; change them only to study it)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    k1: float = Field(default=1.2, gt=0, description="Term-frequency saturation.")
    b: float = Field(default=0.75, ge=0, le=1, description="Document-length normalisation.")
    method: Literal["lucene", "robertson", "atire", "bm25l", "bm25+"] = Field(
        default="lucene", description="bm25s's BM25 variant (lucene: Lucene's IDF, as Elasticsearch)."
    )
    stopwords: str = Field(default="en", description="bm25s stop-word list.")
    stemmer: str | None = Field(default="english", description="PyStemmer (Snowball) language; None: no stemming.")


def read_corpus(root: Path) -> tuple[list[str], list[str]]:
    """corpus.jsonl of a BEIR folder: the ids and, for each, title + " " + text."""
    ids: list[str] = []
    texts: list[str] = []
    with open(root / "corpus.jsonl", encoding="utf-8") as f:
        for line in f:
            if line.strip():
                rec = json.loads(line)
                ids.append(str(rec["_id"]))
                texts.append(f"{rec.get('title') or ''} {rec.get('text') or ''}")
    return ids, texts


class ReferenceBM25:
    """bm25s over one collection, built once; `search` ranks many queries at once."""

    def __init__(self, ids: Sequence[str], texts: Sequence[str], config: ReferenceBM25Config | None = None) -> None:
        import bm25s

        if not ids:
            raise ValueError("the reference BM25 needs at least one document")
        self.config = config or ReferenceBM25Config()
        self.ids = list(ids)
        self._stemmer = self._make_stemmer()
        self._retriever = bm25s.BM25(k1=self.config.k1, b=self.config.b, method=self.config.method)
        self._retriever.index(self._tokenize(texts), show_progress=False)

    @classmethod
    def from_beir(cls, root: Path, config: ReferenceBM25Config | None = None) -> ReferenceBM25:
        ids, texts = read_corpus(root)
        return cls(ids, texts, config)

    def _make_stemmer(self) -> Any:
        if self.config.stemmer is None:
            return None
        import Stemmer

        return Stemmer.Stemmer(self.config.stemmer)

    def _tokenize(self, texts: Sequence[str]) -> Any:
        import bm25s

        return bm25s.tokenize(list(texts), stopwords=self.config.stopwords, stemmer=self._stemmer, show_progress=False)

    def search(self, queries: Mapping[str, str], k: int = 100) -> dict[str, list[str]]:
        """query id → ids of the top `k` documents with a positive score, best first."""
        return {qid: [h.id for h in hits] for qid, hits in self.search_scored(queries, k).items()}

    def search_scored(self, queries: Mapping[str, str], k: int = 100) -> dict[str, list[Hit]]:
        """query id → the top `k` documents with a positive score and their BM25 scores, best first."""
        if not queries:
            return {}
        qids = list(queries)
        docs, scores = self._retriever.retrieve(
            self._tokenize([queries[q] for q in qids]), k=min(k, len(self.ids)), show_progress=False
        )
        return {
            qid: [Hit(id=self.ids[int(d)], score=float(s)) for d, s in zip(docs[i], scores[i], strict=True) if s > 0]
            for i, qid in enumerate(qids)
        }


def baseline_fuse(
    lexical: Sequence[Hit], dense: Sequence[Hit], fusion: Literal["rrf", "linear"], k: int = 100
) -> list[str]:
    """The plain hybrid anyone writes in an afternoon, Sift's yardstick: bm25s's list and the dense list fused
    by RRF (k=60) or per-query min-max linear (alpha 0.5), top `k` ids."""
    scores = rrf([lexical, dense], k=60) if fusion == "rrf" else linear(lexical, dense, alpha=0.5)
    return [doc_id for doc_id, _ in ranked(scores)[:k]]
