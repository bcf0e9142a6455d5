"""The search use case: request → retrieval (BM25 + kNN, fused) → rerank (with a deadline) → response.

Plain async class: the HTTP ingress, the CLI and offline evaluation all call `SearchService.search`, so
what is measured offline is what is served. Model calls are injected as async callables; in Ray Serve
they are deployment handles, elsewhere local models run in a thread.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from ranking.exploration import ExplorationConfig, explore_page
from ranking.features import feature_matrix
from ranking.interleaving import team_draft
from ranking.ltr import LTROutcome, LTRRanker
from ranking.rerank import RerankStage, apply_rerank
from search.breaker import StoreBreaker
from search.facets import FacetCollector, facet_collector, facet_fields
from search.highlight import highlight_page
from search.messages import (
    MAX_LIMIT,
    MAX_QUERY_CHARS,
    Explanation,
    RequestError,
    SearchRequest,
    SearchResponse,
    SearchResult,
)
from search.retrieval import HybridRetriever, RetrievalConfig, Retrieved
from search.stores.base import IndexStore
from search.text import query_terms
from search.typo import TypoTolerance

__all__ = [  # the wire models live in search/messages.py; callers import them from here too
    "MAX_LIMIT",
    "MAX_QUERY_CHARS",
    "Explanation",
    "RequestError",
    "SearchConfig",
    "SearchRequest",
    "SearchResponse",
    "SearchResult",
    "SearchService",
]

log = logging.getLogger("sift.search")

EncodeFn = Callable[[str], Awaitable[Sequence[float]]]
StageTimer = Callable[[str, float], None]


class SearchConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    default_index: str = Field(default="docs", description="Index searched when a request names none.")
    retrieval: RetrievalConfig = Field(default_factory=RetrievalConfig)
    snippet_chars: int = Field(default=200, ge=40, le=2000, description="Characters per highlight fragment.")
    fail_fast_s: float = Field(
        default=0.0,
        ge=0,
        le=60,
        description="After a search finds the store unreachable or overloaded, later searches answer 503 at once "
        "(before encoding) for this long, one probe at a time going through, until the store answers "
        "(search/breaker.py). 0 (default): off; on, an outage costs no encoder time but searches in the first "
        "`fail_fast_s` after the store is back may still fail.",
    )
    exploration: ExplorationConfig = Field(
        default_factory=ExplorationConfig, description="Shuffle the top of some first pages (click-model data)."
    )
    log_features: bool = Field(
        default=True, description="Compute the shown results' ranking features for the impression log."
    )


class SearchService:
    def __init__(
        self,
        store: IndexStore,
        encode: EncodeFn | None,
        rerank: RerankStage | None,
        config: SearchConfig | None = None,
        timer: StageTimer | None = None,
        ltr: LTRRanker | None = None,
        encoder_version: str | None = None,
    ) -> None:
        self.store = store
        self.encode = encode
        self.rerank = rerank
        self.ltr = ltr  # may be swapped while serving (hot reload): a search reads it once
        self.encoder_version = encoder_version
        self.config = config or SearchConfig()
        self.retriever = HybridRetriever(store, None, self.config.retrieval)
        self.typos = TypoTolerance(store, self.config.retrieval.typo)
        self.breaker = StoreBreaker(self.config.fail_fast_s) if self.config.fail_fast_s > 0 else None
        self._timer = timer

    def _time(self, stage: str, started: float) -> None:
        if self._timer is not None:
            self._timer(stage, time.perf_counter() - started)

    def _validate(self, req: SearchRequest, index: str) -> None:
        if not req.filters:
            return
        schema = self.store.schema(index)
        for i, f in enumerate(req.filters):
            try:
                schema.field_type(f.field)
            except KeyError as exc:
                raise RequestError(f"filters.{i}.field", str(exc.args[0])) from exc

    async def _encode(
        self, query: str, cfg: RetrievalConfig, stages: list[str]
    ) -> tuple[RetrievalConfig, np.ndarray | None, str | None]:
        """The query vector; when the encoder raises, BM25 only and why: a search answers without dense."""
        if cfg.mode == "bm25":
            return cfg, None, None
        assert self.encode is not None
        t = time.perf_counter()
        try:
            vector = np.asarray(await self.encode(query), dtype=np.float32)
        except Exception as exc:  # a failed replica or model; never the query in the log line
            log.warning("the query encoder failed (%s: %s); BM25 only", type(exc).__name__, exc)
            return cfg.model_copy(update={"mode": "bm25"}), None, f"query encoder failed ({type(exc).__name__})"
        self._time("encode", t)
        stages.append("encode")
        return cfg, vector, None

    async def _retrieve(
        self, index: str, req: SearchRequest, window: int, cfg: RetrievalConfig, vector: np.ndarray | None,
        facets: FacetCollector | None = None,
    ) -> list[Retrieved]:  # fmt: skip
        """The fused window, in a worker thread; the breaker (when on) learns there whether the store answered,
        even when the search was cancelled at its deadline first."""
        args = (index, req.query, window, req.filters, 0, cfg, vector, True, facets)
        b, run = self.breaker, self.retriever.run
        return await asyncio.to_thread(lambda: b.guard(lambda: run(*args)) if b else run(*args))

    async def search(self, req: SearchRequest, lighter: bool = False) -> SearchResponse:
        """`lighter`: the server is under load (serving/admission.py), so a hybrid search runs as BM25 alone and
        skips the rerank, each with a note: a slightly worse answer now rather than a 503."""
        t0 = time.perf_counter()
        if self.breaker is not None:
            self.breaker.check()  # before the encoder: a search that cannot reach the store costs nothing
        index = req.index or self.config.default_index
        cfg = self.config.retrieval.model_copy(
            update={k: v for k, v in {"mode": req.mode, "fusion": req.fusion}.items() if v is not None}
        )
        if cfg.mode != "bm25" and self.encode is None:
            cfg = cfg.model_copy(update={"mode": "bm25"})
        if req.filters:  # reads the index's schema (I/O for some stores); most searches have no filters
            await asyncio.to_thread(self._validate, req, index)
        asks = req.facets or req.count  # the schema's checks (FacetError: a 422) cost a thread hop: only when asked
        facets = await asyncio.to_thread(facet_collector, self.store, index, req) if asks else None
        fix = await self.typos.acorrect(index, req.query, req.typo_tolerance, cfg.typo)
        asked, req = req, req.model_copy(update={"query": fix.searched})  # encoder, BM25, rerank: the corrected
        stages: list[str] = []
        light_note = None
        if lighter and cfg.mode == "hybrid":
            cfg, light_note = (
                cfg.model_copy(update={"mode": "bm25"}),
                "dense retrieval skipped: the server is under load",
            )
        cfg, vector, retrieval_note = await self._encode(req.query, cfg, stages)
        retrieval_note = retrieval_note or light_note
        t = time.perf_counter()
        ltr = self.ltr
        versions = {"embedder": self.encoder_version} if vector is not None and self.encoder_version else {}
        versions["retrieval"] = cfg.mode if cfg.mode != "hybrid" else f"hybrid-{cfg.fusion}"  # what ran: logs
        want_rerank = req.rerank and self.rerank is not None and not lighter
        window = max(req.offset + req.limit, self.rerank.top_n if self.rerank is not None and want_rerank else 0)
        window = max(window, ltr.config.top_n if ltr is not None else 0)
        fused = await self._retrieve(index, req, window, cfg, vector, facets)
        self._time("retrieve", t)
        stages.extend(_retrieval_stages(cfg, fused))

        rerank_scores, note = await self._rerank(req, fused, stages, versions, lighter)
        ordered = apply_rerank(fused, rerank_scores)
        key = f"{req.session_id}\x1f{req.query}" if req.session_id else None
        fused_rank = {r.id: i for i, r in enumerate(fused, start=1)}  # the rank features see, as in training
        ordered, learnt, teams = self._learnt_order(ltr, req, fused_rank, ordered, rerank_scores, stages, key, lighter)
        if learnt is not None and ltr is not None:
            versions["ranker"] = ltr.version
        explored, swapped = False, None
        if req.offset == 0 and self.config.exploration.rate > 0 and teams is None:
            ordered, explored, swapped = explore_page(ordered, self.config.exploration, key)
            if explored:
                stages.append("explore")
        page = ordered[req.offset : req.offset + req.limit]
        results = await self._results(req, page, rerank_scores, stages, learnt)
        features = None
        if self.config.log_features:
            features = self._page_features(ltr, req, fused_rank, page, rerank_scores, learnt)
        return SearchResponse(
            request_id=uuid.uuid4().hex,
            query=asked.query,
            index=index,
            offset=req.offset,
            limit=req.limit,
            results=results,
            stages=stages,
            reranked=bool(rerank_scores),
            rerank_note=note,
            retrieval_note=retrieval_note,
            took_ms=round((time.perf_counter() - t0) * 1000, 2),
            explored=explored,
            swapped=swapped,
            features=features,
            teams=teams,
            model_versions=versions,
            corrected_query=fix.corrected_query,
            did_you_mean=fix.did_you_mean,
            **facet_fields(facets, req),
        )

    async def _results(
        self,
        req: SearchRequest,
        page: list[Retrieved],
        rerank_scores: dict[str, float],
        stages: list[str],
        learnt: LTROutcome | None,
    ) -> list[SearchResult]:
        """The shown page with its highlights (CPU work: in a worker thread, never on the event loop)."""
        hls: list[dict[str, list[str]]] = [{} for _ in page]
        if req.highlight and page:
            hls = await asyncio.to_thread(highlight_page, req.query, [r.doc for r in page], self.config.snippet_chars)
        return [
            self._result(req, r, rerank_scores.get(r.id), stages, learnt, hl) for r, hl in zip(page, hls, strict=True)
        ]

    async def _rerank(
        self, req: SearchRequest, fused: list[Retrieved], stages: list[str], versions: dict[str, str], lighter: bool
    ) -> tuple[dict[str, float], str | None]:
        """The cross-encoder's scores of the window's head, or none and why (`rerank_note`)."""
        if not req.rerank:
            return {}, "reranking not requested"
        if self.rerank is None:
            return {}, "no reranker configured"
        if lighter:
            return {}, "reranking skipped: the server is under load"
        if not fused:
            return {}, None
        head = fused[: self.rerank.top_n]
        t = time.perf_counter()
        outcome = await self.rerank.run(req.query, head, [_rerank_text(r) for r in head])
        if outcome.scores:
            stages.append("rerank")
            if outcome.version:
                versions["reranker"] = outcome.version
        self._time("rerank", t)
        return outcome.scores, outcome.note

    def _learnt_order(
        self,
        ltr: LTRRanker | None,
        req: SearchRequest,
        fused_rank: dict[str, int],
        ordered: list[Retrieved],
        rerank: dict[str, float],
        stages: list[str],
        key: str | None,
        lighter: bool = False,
    ) -> tuple[list[Retrieved], LTROutcome | None, list[str] | None]:
        """The learnt ranker's order of the head (or, interleaving, the head team-drafted from the order without
        it, team a, and with it, team b); the ranker's outcome; the page's teams when interleaved. A lighter
        search is not interleaved: its arm a is not the one the comparison is about."""
        if ltr is None or not ordered or not ltr.applies(req.query, stages):  # unfamiliar: fused order kept
            return ordered, None, None
        t = time.perf_counter()
        head = ordered[: ltr.config.top_n]
        ranks = [fused_rank.get(r.id, len(fused_rank) + 1) for r in head]
        learnt = ltr.rank(query_terms(req.query), head, {r.id: r.doc for r in head}, rerank, ranks)
        by_id = {r.id: r for r in head}
        teams = None
        if ltr.config.interleave and req.offset == 0 and not lighter:
            mixed, all_teams = team_draft([r.id for r in head], learnt.order, len(head), key)
            out = [by_id[d] for d in mixed] + ordered[len(head) :]
            teams = all_teams[: req.limit]
            stages.append("interleave")
        else:
            out = [by_id[d] for d in learnt.order] + ordered[len(head) :]
        stages.append("ltr")
        self._time("ltr", t)
        return out, learnt, teams

    def _page_features(
        self,
        ltr: LTRRanker | None,
        req: SearchRequest,
        fused_rank: dict[str, int],
        page: Sequence[Retrieved],
        rerank: dict[str, float],
        learnt: LTROutcome | None,
    ) -> dict[str, list[float | None]]:
        """The shown results' features, ranked as the fused list ranked them (what a learnt ranker sees); rows
        the learnt stage already computed are reused."""
        known = learnt.features if learnt is not None else {}
        rest = [r for r in page if r.id not in known]
        priors = ltr.priors if ltr is not None else None
        rows = dict(known)
        if rest:
            x = feature_matrix(
                query_terms(req.query), rest, {r.id: r.doc for r in rest}, priors=priors, rerank=rerank,
                ranks=[fused_rank.get(r.id, len(fused_rank) + 1) for r in rest],
            )  # fmt: skip
            rows.update({r.id: row for r, row in zip(rest, x, strict=True)})
        return {r.id: [None if np.isnan(v) else round(float(v), 6) for v in rows[r.id]] for r in page}

    def _result(
        self,
        req: SearchRequest,
        r: Retrieved,
        rerank: float | None,
        stages: list[str],
        learnt: LTROutcome | None,
        hl: dict[str, list[str]],
    ) -> SearchResult:
        doc = r.doc
        ltr = learnt.scores.get(r.id) if learnt is not None else None
        return SearchResult(
            id=r.id,
            title=doc.title if doc else "",
            url=doc.url if doc else None,
            score=ltr if ltr is not None else rerank if rerank is not None else r.score,
            highlights=hl,
            fields=dict(doc.fields) if doc else {},
            explanation=Explanation(
                bm25_rank=r.bm25_rank,
                bm25_score=r.bm25_score,
                dense_rank=r.dense_rank,
                dense_score=r.dense_score,
                fused_score=r.score,
                expansion_terms=r.expansion,
                synonyms=r.synonyms,
                rerank_score=rerank,
                ltr_score=ltr,
                contributions=learnt.contributions.get(r.id) if learnt is not None else None,
                # The stages that scored this result: a result below the reranked (or learnt) head was not.
                stages=[
                    s
                    for s in stages
                    if s != "encode" and (s != "rerank" or rerank is not None) and (s != "ltr" or ltr is not None)
                ],
            ),
        )


def _retrieval_stages(cfg: RetrievalConfig, fused: Sequence[Retrieved]) -> list[str]:
    """The retrieval stages that ran, feedback included (`rm3` after `bm25`, `dense-prf` after `dense`)."""
    ran = set(fused[0].feedback) if fused else set()
    lex = ["bm25", *(["rm3"] if "rm3" in ran else [])]
    den = ["dense", *(["dense-prf"] if "dense-prf" in ran else [])]
    return {"bm25": lex, "dense": den, "hybrid": [*lex, *den, f"fusion:{cfg.fusion}"]}[cfg.mode]


def _rerank_text(r: Retrieved) -> str:
    if r.doc is None:
        return ""
    return f"{r.doc.title}\n{r.doc.body}".strip()
