"""Hybrid retrieval over any IndexStore: BM25 and kNN run concurrently, then fuse."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Literal, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from ranking.fusion import linear, ranked, rrf
from search.documents import Document, Hit, bm25_text
from search.facets import FacetCollector, dense_facets, lexical_with_facets
from search.feedback import (
    DenseFeedbackStore,
    DensePRFConfig,
    LexicalFeedbackStore,
    RM3Config,
    expansion_terms,
    rm3_weights,
    rocchio,
)
from search.filters import Filter
from search.stores.base import IndexStore
from search.stores.synonym_stores import bm25_with_synonyms, synonyms_for
from search.synonyms import SynonymQuery, matched_synonyms
from search.text import bm25_terms
from search.typo import TypoConfig


class QueryEncoder(Protocol):
    def embed(self, texts: Sequence[str]) -> np.ndarray: ...


class RetrievalConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mode: Literal["bm25", "dense", "hybrid"] = Field(default="hybrid", description="Which retrievers run.")
    fusion: Literal["rrf", "linear"] = Field(
        default="linear",
        description="How hybrid lists are combined (linear: above RRF on SciFact's train queries, .731 vs .717).",
    )
    rrf_k: int = Field(default=60, ge=1, description="RRF rank constant.")
    alpha: float = Field(default=0.5, ge=0.0, le=1.0, description="Weight of dense scores in linear fusion.")
    depth: int = Field(default=100, ge=1, le=1000, description="Hits fetched from each retriever.")
    normalization: Literal["minmax", "zscore"] = Field(
        default="zscore",
        description="Linear fusion's per-query score scaling: min-max to [0, 1], or z-score (mean 0, sd 1: one "
        "outlying top score does not squash the rest of its list).",
    )
    feedback_from: Literal["own", "fused"] = Field(
        default="own",
        description="Where pseudo-relevance feedback takes its documents: each retriever's own top (`own`), or "
        "the fused first pass (`fused`, hybrid only: both retrievers run twice, the first fusion being the "
        "better judge of what is relevant).",
    )
    rm3: RM3Config = Field(default_factory=RM3Config, description="RM3 pseudo-relevance feedback on the BM25 side.")
    dense_prf: DensePRFConfig = Field(
        default_factory=DensePRFConfig, description="Rocchio pseudo-relevance feedback on the query vector."
    )
    typo: TypoConfig = Field(
        default_factory=TypoConfig, description="Typo tolerance: query words corrected first (search/typo.py)."
    )


class Retrieved(BaseModel):
    """A fused result with the evidence of each stage, for explanations."""

    id: str
    doc: Document | None
    score: float
    bm25_rank: int | None = None
    bm25_score: float | None = None
    dense_rank: int | None = None
    dense_score: float | None = None
    feedback: list[str] = Field(default_factory=list, description="Feedback stages that ran: rm3, dense-prf.")
    expansion: list[str] | None = Field(default=None, description="The terms RM3 added to the query.")
    synonyms: list[str] | None = Field(default=None, description="Synonyms the query gained that this document holds.")


class HybridRetriever:
    """Plain class (usable without Ray): the API, the CLI and offline evaluation all call this."""

    def __init__(
        self,
        store: IndexStore,
        encoder: QueryEncoder | None,
        config: RetrievalConfig | None = None,
        threads: int = 32,
    ) -> None:
        self.store = store
        self.encoder = encoder
        self.config = config or RetrievalConfig()
        self.synonyms = synonyms_for(store)  # the index's synonym sets (search/synonyms.py); None: store has none
        # BM25 runs here while the caller's thread runs kNN. Each concurrent search holds one of these threads
        # for its BM25 request, so the pool must be as wide as the callers (the ingress's pool): with two, every
        # search of a replica queued its BM25 call behind a slow node's.
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="sift-retrieve")

    def run(
        self,
        index: str,
        query: str,
        k: int = 10,
        filters: Sequence[Filter] = (),
        offset: int = 0,
        config: RetrievalConfig | None = None,
        vector: Sequence[float] | np.ndarray | None = None,
        with_docs: bool = True,
        facets: FacetCollector | None = None,
    ) -> list[Retrieved]:
        """Top `k` after `offset`; `vector` is the query embedding when the caller encoded it already.

        The retrievers return ids and scores only; the documents of the `k` results are then read in one call
        (`with_docs=False` skips that, for callers that need ranks alone, like offline evaluation). `facets`: counts of
        the result set go there (search/facets.py)."""
        cfg = config or self.config
        depth = max(cfg.depth, offset + k)
        mode = cfg.mode
        if mode != "bm25" and self.encoder is None and vector is None:
            raise ValueError(f"retrieval mode {mode!r} needs a query encoder or a query vector")
        if mode != "bm25" and vector is None:
            assert self.encoder is not None
            vector = self.encoder.embed([query])[0]
        qvec = np.asarray(vector, dtype=np.float32) if vector is not None else None
        syn = self.synonyms.expand(index, query) if self.synonyms is not None and mode != "dense" else None
        if mode == "hybrid" and cfg.feedback_from == "fused" and (cfg.rm3.enabled or cfg.dense_prf.enabled):
            lexical, dense, expansion, moved = self._fused_feedback(
                index, query, qvec, depth, filters, cfg, syn, facets
            )
        else:
            rm3 = cfg.rm3 if mode != "dense" else None
            lex_f = (
                self._pool.submit(self._lexical, index, query, depth, filters, rm3, None, syn, facets)
                if mode != "dense"
                else None
            )
            dense, moved = self._dense(index, qvec, depth, filters, cfg.dense_prf) if qvec is not None else ([], False)
            lexical, expansion = lex_f.result() if lex_f is not None else ([], None)
        if facets is not None and mode == "dense":
            dense_facets(self.store, index, dense, filters, facets)
        feedback = (["rm3"] if expansion is not None else []) + (["dense-prf"] if moved else [])
        scores = self._fuse(lexical, dense, cfg)
        lex_by = {h.id: (r, h) for r, h in enumerate(lexical, start=1)}
        den_by = {h.id: (r, h) for r, h in enumerate(dense, start=1)}
        page = ranked(scores)[offset : offset + k]
        docs = self.store.get_many(index, [doc_id for doc_id, _ in page]) if with_docs and page else {}
        out = []
        for doc_id, score in page:
            lr, lh = lex_by.get(doc_id, (None, None))
            dr, dh = den_by.get(doc_id, (None, None))
            out.append(
                Retrieved(
                    id=doc_id,
                    doc=docs.get(doc_id),
                    score=score,
                    bm25_rank=lr,
                    bm25_score=lh.score if lh else None,
                    dense_rank=dr,
                    dense_score=dh.score if dh else None,
                    feedback=feedback,
                    expansion=expansion,
                    synonyms=_synonyms_in(docs.get(doc_id), syn),
                )
            )
        return out

    @staticmethod
    def _fuse(lexical: list[Hit], dense: list[Hit], cfg: RetrievalConfig) -> dict[str, float]:
        if cfg.mode == "bm25":
            return {h.id: h.score for h in lexical}
        if cfg.mode == "dense":
            return {h.id: h.score for h in dense}
        if cfg.fusion == "rrf":
            return rrf([lexical, dense], k=cfg.rrf_k)
        return linear(lexical, dense, alpha=cfg.alpha, normalization=cfg.normalization)

    def _lexical(
        self,
        index: str,
        query: str,
        depth: int,
        filters: Sequence[Filter],
        rm3: RM3Config | None,
        feedback: Sequence[Hit] | None = None,
        syn: SynonymQuery | None = None,
        facets: FacetCollector | None = None,
    ) -> tuple[list[Hit], list[str] | None]:
        """BM25, then (RM3 on, a store that can) the expanded query's BM25 instead; the added terms, or None when
        RM3 did not run. `feedback`: the documents to expand from (else BM25's own top)."""
        if feedback is None and facets is not None:  # the same BM25, and the counts of what it matches
            first = lexical_with_facets(self.store, index, query, depth, filters, syn, facets)
        else:
            first = bm25_with_synonyms(self.store, index, query, depth, filters, syn) if feedback is None else []
        top = list(feedback if feedback is not None else first)
        if rm3 is None or not rm3.enabled or not top or not isinstance(self.store, LexicalFeedbackStore):
            return (first if feedback is None else []), None
        top = top[: rm3.fb_docs]
        stats = self.store.term_stats(index, [h.id for h in top])
        if not stats.docs:
            return first, None
        terms = bm25_terms(query)
        pairs = [(stats.docs[h.id], h.score) for h in top if h.id in stats.docs]
        weights = rm3_weights(terms, pairs, rm3, stats.df, stats.n_docs)
        expanded = self.store.bm25_weighted_search(index, weights, depth, filters)
        return expanded, expansion_terms(weights, terms, rm3.fb_terms)

    def _dense(
        self,
        index: str,
        vector: np.ndarray,
        depth: int,
        filters: Sequence[Filter],
        prf: DensePRFConfig,
        feedback: Sequence[Hit] | None = None,
    ) -> tuple[list[Hit], bool]:
        """kNN, then (feedback on, a store that can) kNN again from the Rocchio-moved vector; whether it moved.
        `feedback`: the documents to move towards (else kNN's own top)."""
        first = (
            self.store.knn_search(index, [float(x) for x in vector], depth, filters, with_docs=False)
            if feedback is None
            else []
        )
        top = list(feedback if feedback is not None else first)
        if not prf.enabled or not top or not isinstance(self.store, DenseFeedbackStore):
            return first, False
        vecs = self.store.doc_vectors(index, [h.id for h in top[: prf.fb_docs]])
        if not vecs:
            return first, False
        moved = rocchio(vector, list(vecs.values()), prf)
        return self.store.knn_search(index, [float(x) for x in moved], depth, filters, with_docs=False), True

    def _fused_feedback(
        self,
        index: str,
        query: str,
        vector: np.ndarray | None,
        depth: int,
        filters: Sequence[Filter],
        cfg: RetrievalConfig,
        syn: SynonymQuery | None = None,
        facets: FacetCollector | None = None,
    ) -> tuple[list[Hit], list[Hit], list[str] | None, bool]:
        """Feedback from the fused first pass (`feedback_from: fused`): both lists, fused; its top documents
        expand both queries; both run again. A side whose feedback is off (or cannot run) keeps its first list."""
        assert vector is not None
        lex_f = self._pool.submit(self._lexical, index, query, depth, filters, None, None, syn, facets)
        dense0, _ = self._dense(index, vector, depth, filters, cfg.dense_prf.model_copy(update={"enabled": False}))
        lexical0, _ = lex_f.result()
        top = [Hit(id=d, score=s) for d, s in ranked(self._fuse(lexical0, dense0, cfg))]
        if not top:
            return lexical0, dense0, None, False
        lex2_f = self._pool.submit(self._lexical, index, query, depth, filters, cfg.rm3, top)
        dense, moved = self._dense(index, vector, depth, filters, cfg.dense_prf, top)
        lexical, expansion = lex2_f.result()
        return (lexical if expansion is not None else lexical0), (dense if moved else dense0), expansion, moved

    def close(self) -> None:
        self._pool.shutdown(wait=False)


def _synonyms_in(doc: Document | None, syn: SynonymQuery | None) -> list[str] | None:
    """The synonyms the query gained that `doc` holds (its BM25 terms), for its explanation."""
    if doc is None or syn is None:
        return None
    return matched_synonyms(bm25_terms(bm25_text(doc)), syn)
