"""Hybrid retrieval over any IndexStore: BM25 and kNN run concurrently, then fuse."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Literal, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from ranking.fusion import linear, ranked, rrf
from search.documents import Document, Hit
from search.filters import Filter
from search.stores.base import IndexStore


class QueryEncoder(Protocol):
    def embed(self, texts: Sequence[str]) -> np.ndarray: ...


class RetrievalConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mode: Literal["bm25", "dense", "hybrid"] = Field(default="hybrid", description="Which retrievers run.")
    fusion: Literal["rrf", "linear"] = Field(default="rrf", description="How hybrid lists are combined.")
    rrf_k: int = Field(default=60, ge=1, description="RRF rank constant.")
    alpha: float = Field(default=0.5, ge=0.0, le=1.0, description="Weight of dense scores in linear fusion.")
    depth: int = Field(default=100, ge=1, le=1000, description="Hits fetched from each retriever.")


class Retrieved(BaseModel):
    """A fused result with the evidence of each stage, for explanations."""

    id: str
    doc: Document | None
    score: float
    bm25_rank: int | None = None
    bm25_score: float | None = None
    dense_rank: int | None = None
    dense_score: float | None = None


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
    ) -> list[Retrieved]:
        """Top `k` after `offset`; `vector` is the query embedding when the caller encoded it already.

        The retrievers return ids and scores only; the documents of the `k` results are then read in one call
        (`with_docs=False` skips that, for callers that need ranks alone, like offline evaluation)."""
        cfg = config or self.config
        depth = max(cfg.depth, offset + k)
        mode = cfg.mode
        if mode != "bm25" and self.encoder is None and vector is None:
            raise ValueError(f"retrieval mode {mode!r} needs a query encoder or a query vector")
        lex_f = (
            self._pool.submit(self.store.bm25_search, index, query, depth, filters, with_docs=False)
            if mode != "dense"
            else None
        )
        dense: list[Hit] = []
        if mode != "bm25":
            if vector is None:
                assert self.encoder is not None
                vector = self.encoder.embed([query])[0]
            dense = self.store.knn_search(index, [float(x) for x in vector], depth, filters, with_docs=False)
        lexical = lex_f.result() if lex_f is not None else []
        if mode == "bm25":
            scores = {h.id: h.score for h in lexical}
        elif mode == "dense":
            scores = {h.id: h.score for h in dense}
        elif cfg.fusion == "rrf":
            scores = rrf([lexical, dense], k=cfg.rrf_k)
        else:
            scores = linear(lexical, dense, alpha=cfg.alpha)
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
                )
            )
        return out

    def close(self) -> None:
        self._pool.shutdown(wait=False)
