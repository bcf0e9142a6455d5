"""Ranking features for impressions that were logged without them (imported click logs), by replaying each
logged query against the current index with the code the server uses.

Why replay: the ranker learns from the features of what users were shown (`QueryEvent.features`, logged by
`SearchService` when `search.log_features` is on). An imported impression (UBI, plain JSONL) has none. For each
distinct (index, query, retrieval mode) the replay runs `HybridRetriever.run` as the service does (same config,
same query encoder, the mode the impression's `versions` name), reranks the head when the service has a
reranker, and computes `ranking.features.feature_matrix` for the shown documents, ranked by their place in
the fused list, as `SearchService._page_features` does. A Sift impression replayed against the index that
served it gets the features it was served with (`age_days` measured at the impression's time).

A shown document Sift does not retrieve for the query now (another engine showed it, or the index changed) is
still a row: its text features (title/body coverage, length, age) come from the document itself; BM25 and
dense score and rank are NaN (what serving gives a document a retriever did not return), its fused score 0
(below every retrieved one) and its fused rank one past the fused list (the service's own value for a document
outside it), its rerank score NaN (serving reranks only the fused head). A document no longer in the index has
NaN text features too. `click_prior` is left NaN: training computes it from the clicks (leave-one-query-out).
Not replayed: the request's filters (not logged), a pipeline configured differently since, the reranker's
deadline; see docs/guides/learning-from-clicks.md for what this costs.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from datetime import datetime

import numpy as np
from pydantic import BaseModel, Field
from tqdm import tqdm

from logs.querylog import QueryEvent
from ranking.features import feature_matrix
from search.documents import Document
from search.retrieval import RetrievalConfig, Retrieved
from search.service import SearchService
from search.text import query_terms

Features = dict[str, list[float | None]]


class ReplayReport(BaseModel):
    impressions: int = Field(description="Impressions given replayed features.")
    queries: int = Field(description="Distinct (index, query, mode) retrieved: the replay's unit of cost.")
    rows: int = Field(description="Shown (impression, document) rows computed.")
    not_retrieved: int = Field(description="Rows of documents the current index does not retrieve for the query.")
    missing_docs: int = Field(description="Rows of documents no longer in the index (text features NaN).")
    seconds: float


def needs_replay(impressions: Sequence[QueryEvent]) -> list[QueryEvent]:
    """Search impressions that showed something and carry no features."""
    return [e for e in impressions if e.type == "search" and e.shown and not e.features]


def _mode(base: RetrievalConfig, imp: QueryEvent, can_encode: bool) -> RetrievalConfig:
    """The retrieval the impression names (`versions.retrieval`: bm25, dense, hybrid-rrf, hybrid-linear), else
    the service's; BM25 when no encoder is configured (as the service does)."""
    served = (imp.versions or {}).get("retrieval")
    update: dict[str, str] = {}
    if served in ("bm25", "dense"):
        update["mode"] = served
    elif served in ("hybrid-rrf", "hybrid-linear"):
        update = {"mode": "hybrid", "fusion": served.split("-", 1)[1]}
    cfg = base.model_copy(update=update)
    return cfg if can_encode or cfg.mode == "bm25" else cfg.model_copy(update={"mode": "bm25"})


class _Retrieval:
    """One replayed retrieval: the fused list (ids and evidence) and the reranker's scores of its head."""

    def __init__(self, fused: list[Retrieved], rerank: dict[str, float]) -> None:
        self.fused = fused
        self.rank = {r.id: i for i, r in enumerate(fused, start=1)}
        self.rerank = rerank


class FeatureReplay:
    """Replays impressions against one service; retrievals and documents are cached across impressions."""

    def __init__(self, service: SearchService, default_index: str) -> None:
        self.service = service
        self.default_index = default_index
        self._retrievals: dict[tuple[str, str, str, str, int], _Retrieval] = {}
        self._docs: dict[tuple[str, str], Document | None] = {}
        self.rows = 0
        self.not_retrieved = 0
        self.missing_docs = 0

    async def _retrieve(self, index: str, imp: QueryEvent) -> _Retrieval:
        svc = self.service
        cfg = _mode(svc.config.retrieval, imp, svc.encode is not None)
        shown_until = (imp.offset or 0) + len(imp.shown or ())
        # k as the service asks for its window: never past the retrievers' depth unless the page was deeper, so
        # the lists (and min-max normalisation) are the ones that were fused when it served
        k = max(cfg.depth, shown_until)
        key = (index, imp.query, cfg.mode, cfg.fusion, k)
        if key in self._retrievals:
            return self._retrievals[key]
        vector = None
        if cfg.mode != "bm25":
            assert svc.encode is not None
            vector = np.asarray(await svc.encode(imp.query), dtype=np.float32)
        fused = svc.retriever.run(index, imp.query, k, (), 0, cfg, vector, with_docs=False)
        rerank: dict[str, float] = {}
        stages = (imp.versions or {}).get("stages", "rerank")
        if svc.rerank is not None and "rerank" in stages and fused:
            head = fused[: svc.rerank.top_n]
            docs = self._documents(index, [r.id for r in head])
            texts = [f"{d.title}\n{d.body}".strip() if d else "" for d in (docs[r.id] for r in head)]
            rerank = (await svc.rerank.run(imp.query, head, texts)).scores
        self._retrievals[key] = _Retrieval(fused, rerank)
        return self._retrievals[key]

    def _documents(self, index: str, ids: Sequence[str]) -> dict[str, Document | None]:
        missing = [d for d in dict.fromkeys(ids) if (index, d) not in self._docs]
        if missing:
            found = self.service.store.get_many(index, missing)
            for d in missing:
                self._docs[(index, d)] = found.get(d)
        return {d: self._docs[(index, d)] for d in ids}

    async def features(self, imp: QueryEvent) -> Features:
        """The features of the impression's shown documents, by id (None where NaN), as the service logs them."""
        index = imp.index or self.default_index
        got = await self._retrieve(index, imp)
        shown = list(dict.fromkeys(imp.shown or ()))
        by_id = {r.id: r for r in got.fused if r.id in set(shown)}
        outside = len(got.fused) + 1
        cands = [by_id.get(d) or Retrieved(id=d, doc=None, score=0.0) for d in shown]
        self.rows += len(shown)
        self.not_retrieved += sum(d not in by_id for d in shown)
        docs = self._documents(index, shown)
        self.missing_docs += sum(docs[d] is None for d in shown)
        ranks = [got.rank.get(d, outside) for d in shown]
        now: datetime = imp.ts
        x = feature_matrix(query_terms(imp.query), cands, docs, rerank=got.rerank, ranks=ranks, now=now)
        return {d: [None if np.isnan(v) else round(float(v), 6) for v in row] for d, row in zip(shown, x, strict=True)}


def replay_features(
    impressions: Sequence[QueryEvent], service: SearchService, default_index: str, progress: bool = True
) -> tuple[list[QueryEvent], ReplayReport]:
    """The impressions in order, each search impression without features given replayed ones (the others
    unchanged). Cost: one retrieval (and rerank) per distinct (index, query, mode), plus a feature row per shown
    document; the query encoder runs once per distinct query."""
    todo = {id(e) for e in needs_replay(impressions)}
    replay = FeatureReplay(service, default_index)
    t0 = time.perf_counter()

    async def run() -> list[QueryEvent]:
        out = []
        bar = tqdm(total=len(todo), unit="impression", disable=not progress, desc="replaying features")
        for e in impressions:
            if id(e) in todo:
                e = e.model_copy(update={"features": await replay.features(e)})
                bar.update(1)
            out.append(e)
        bar.close()
        return out

    out = asyncio.run(run())
    report = ReplayReport(
        impressions=len(todo), queries=len(replay._retrievals), rows=replay.rows,
        not_retrieved=replay.not_retrieved, missing_docs=replay.missing_docs,
        seconds=round(time.perf_counter() - t0, 3),
    )  # fmt: skip
    return out, report
