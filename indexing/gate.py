"""The quality gate before an alias swap: nDCG@10 of the new version against the live one, same queries.

A build can be complete and still bad (a broken encoder, a wrong field map). After the count check, the gate
runs a judgment set's queries against the new version and the live version with the same retrieval mode and
refuses the swap when the new version's nDCG@10 falls more than `max_drop` below the live one's. The judgment
set is BEIR-style: a queries.jsonl and a qrels TSV, from a dataset or from `sift clicks judgments`.

indexing/ may not import training/, so nDCG@10 is computed here, with ranx's definition (linear gain).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from indexing.errors import IndexingError
from models.embedder import Embedder, EmbedderConfig, SentenceTransformerEmbedder
from search.retrieval import HybridRetriever, RetrievalConfig
from search.stores.base import IndexStore, StoreError

K = 10


class GateConfig(BaseModel):
    """Where the judgments are and how much worse than the live version a new one may be."""

    model_config = ConfigDict(extra="forbid")

    qrels: Path = Field(description="Qrels TSV: query-id, corpus-id, grade (a header line is skipped).")
    queries: Path = Field(description="Queries JSONL with `_id` (or `id`) and `text`.")
    max_drop: float = Field(default=0.01, ge=0.0, le=1.0, description="Largest nDCG@10 drop allowed vs live.")
    mode: Literal["bm25", "dense", "hybrid"] = Field(default="hybrid", description="Retrieval mode of both runs.")
    live_model: str | None = Field(
        default=None,
        description="Encoder the live version was built with, for its query vectors; None: the build's own.",
    )
    max_queries: int | None = Field(default=None, ge=1, description="Judge only the first N queries (by id).")


class GateResult(BaseModel):
    """Both figures and the verdict."""

    metric: str = "ndcg@10"
    mode: str
    queries: int
    new: float
    live: float | None
    max_drop: float
    passed: bool
    new_version: str
    live_version: str | None


class GateRefused(IndexingError):
    """The new version scored too far below the live one; the alias stays and the new version is kept."""

    def __init__(self, result: GateResult) -> None:
        self.result = result
        super().__init__(
            f"quality gate refused {result.new_version}: nDCG@10 new {result.new:.4f} vs live {result.live:.4f} "
            f"(allowed drop {result.max_drop}, {result.queries} queries, {result.mode}); the alias stays on "
            f"{result.live_version} and {result.new_version} is kept for inspection"
        )


class Evaluator(Protocol):
    """Scores one version (a concrete version name); `live` says which side of the comparison it is."""

    def __call__(self, version: str, *, live: bool) -> float: ...


def load_judgments(gate: GateConfig) -> tuple[dict[str, str], dict[str, dict[str, int]]]:
    """Queries with at least one positive judgment, and their qrels."""
    if not gate.qrels.is_file() or not gate.queries.is_file():
        raise IndexingError(f"gate judgments not found: {gate.qrels} / {gate.queries}")
    qrels: dict[str, dict[str, int]] = {}
    for n, line in enumerate(gate.qrels.read_text(encoding="utf-8").splitlines()):
        parts = line.strip().split("\t") if "\t" in line else line.split()
        if len(parts) < 3:
            continue
        qid, did, grade = parts[0], parts[-2], parts[-1]  # BEIR: 3 columns; TREC: qid 0 did grade
        try:
            g = int(float(grade))
        except ValueError:
            if n == 0:
                continue  # the header
            raise IndexingError(f"{gate.qrels}:{n + 1}: grade {grade!r} is not a number") from None
        qrels.setdefault(qid, {})[did] = g
    queries: dict[str, str] = {}
    for line in gate.queries.read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            queries[str(row.get("_id", row.get("id")))] = str(row["text"])
    judged = sorted(q for q, rels in qrels.items() if q in queries and any(g > 0 for g in rels.values()))
    judged = judged[: gate.max_queries] if gate.max_queries else judged
    if not judged:
        raise IndexingError(f"no query of {gate.queries} has a positive judgment in {gate.qrels}")
    return {q: queries[q] for q in judged}, {q: qrels[q] for q in judged}


def ndcg_at_10(run: dict[str, list[str]], qrels: dict[str, dict[str, int]]) -> float:
    """Mean nDCG@10 over the judged queries (a query without results scores 0)."""
    scores = []
    for qid, rels in qrels.items():
        dcg = sum(rels.get(d, 0) / math.log2(i + 2) for i, d in enumerate(run.get(qid, [])[:K]))
        ideal = sorted((g for g in rels.values() if g > 0), reverse=True)[:K]
        idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
        scores.append(dcg / idcg if idcg > 0 else 0.0)
    return float(np.mean(scores)) if scores else 0.0


class JudgmentEvaluator:
    """Runs the judgment queries through `HybridRetriever` (what the API serves) on one version."""

    def __init__(
        self, store: IndexStore, gate: GateConfig, encoder: Embedder | None, live_encoder: Embedder | None = None
    ) -> None:
        self.store = store
        self.gate = gate
        self.encoder = encoder
        self.live_encoder = live_encoder
        self.queries, self.qrels = load_judgments(gate)

    def _encoder(self, live: bool) -> Embedder | None:
        if live and self.gate.live_model:
            if self.live_encoder is None:
                cfg = EmbedderConfig(model=self.gate.live_model)
                if self.encoder is not None and isinstance(getattr(self.encoder, "config", None), EmbedderConfig):
                    cfg = self.encoder.config.model_copy(update={"model": self.gate.live_model})  # type: ignore[attr-defined]
                self.live_encoder = SentenceTransformerEmbedder(cfg)
            return self.live_encoder
        return self.encoder

    def __call__(self, version: str, *, live: bool) -> float:
        qids = list(self.queries)
        texts = [self.queries[q] for q in qids]
        vectors: Sequence[np.ndarray | None] = [None] * len(qids)
        if self.gate.mode != "bm25":
            encoder = self._encoder(live)
            if encoder is None:
                raise IndexingError(f"the gate's {self.gate.mode!r} mode needs a query encoder")
            vectors = list(encoder.embed(texts))
        retriever = HybridRetriever(self.store, None, RetrievalConfig(mode=self.gate.mode))
        try:
            run = {
                qid: [r.id for r in retriever.run(version, text, K, vector=vec, with_docs=False)]
                for qid, text, vec in zip(qids, texts, vectors, strict=True)
            }
        except (StoreError, ValueError) as exc:
            side = "live" if live else "new"
            hint = " (a different encoder? set the gate's live_model)" if live and "dims" in str(exc) else ""
            raise IndexingError(f"gate could not search the {side} version {version}: {exc}{hint}") from exc
        finally:
            retriever.close()
        return ndcg_at_10(run, self.qrels)


def run_gate(
    gate: GateConfig, evaluator: Evaluator, new_version: str, live_version: str | None, queries: int
) -> GateResult:
    """Score both versions; a first build (nothing live) passes on its own figure."""
    new = evaluator(new_version, live=False)
    live = evaluator(live_version, live=True) if live_version is not None else None
    passed = live is None or new >= live - gate.max_drop
    return GateResult(
        mode=gate.mode,
        queries=queries,
        new=round(new, 6),
        live=None if live is None else round(live, 6),
        max_drop=gate.max_drop,
        passed=passed,
        new_version=new_version,
        live_version=live_version,
    )
