"""Scoring of returned rankings with ranx (trec_eval's definitions: nDCG with linear gains, MRR, recall).

Per-query values, their means and per-query differences against a baseline; shared by `sift eval`,
`sift eval-suggest` and the bench report so a number means the same thing wherever it is printed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from pydantic import BaseModel, Field

from search.service import MAX_QUERY_CHARS
from training.beir import relevant_only

METRICS: tuple[str, ...] = ("ndcg@10", "mrr@10", "recall@100")
METRIC_LABELS = {"ndcg@10": "nDCG@10", "mrr@10": "MRR@10", "recall@100": "Recall@100"}


def fit_query(text: str, limit: int = MAX_QUERY_CHARS) -> str:
    """The API takes at most `limit` characters: longer queries are cut at a word boundary (and counted)."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text[:limit]
    space = cut.rfind(" ")
    return cut[:space] if space > limit // 2 else cut


def ranking_to_run(ranked_ids: Sequence[str]) -> dict[str, float]:
    """Scores that reproduce the service's order exactly (ranx sorts by score; ties would reorder)."""
    n = len(ranked_ids)
    return {d: float(n - i) for i, d in enumerate(ranked_ids)}


def per_query_metrics(
    qrels: Mapping[str, Mapping[str, int]],
    run: Mapping[str, Mapping[str, float]],
    metrics: Sequence[str] = METRICS,
) -> dict[str, dict[str, float]]:
    """metric → query id → value, for every judged query (a query missing from the run scores 0)."""
    from ranx import Qrels, Run, evaluate

    rel = relevant_only(qrels)
    if not rel:
        raise ValueError("no query has a relevant document (grade > 0)")
    r = Run({q: dict(docs) for q, docs in run.items() if q in rel and docs})
    q = Qrels({k: dict(v) for k, v in rel.items()})
    evaluate(q, r, list(metrics), return_mean=False, make_comparable=True, threads=1)
    return {m: {qid: float(r.scores[m].get(qid, 0.0)) for qid in rel} for m in metrics}


def mean_metrics(per_query: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    return {m: float(np.mean(list(v.values()))) if v else 0.0 for m, v in per_query.items()}


def per_query_deltas(system: Mapping[str, float], baseline: Mapping[str, float]) -> dict[str, float]:
    """system − baseline per query, over the queries both have."""
    return {q: system[q] - baseline[q] for q in system if q in baseline}


class DeltaSummary(BaseModel):
    mean: float
    wins: int = Field(description="Queries where the system beats the baseline by more than 1e-9.")
    losses: int
    ties: int


def summarize_deltas(deltas: Mapping[str, float], eps: float = 1e-9) -> DeltaSummary:
    vals = list(deltas.values())
    return DeltaSummary(
        mean=float(np.mean(vals)) if vals else 0.0,
        wins=sum(v > eps for v in vals),
        losses=sum(v < -eps for v in vals),
        ties=sum(abs(v) <= eps for v in vals),
    )
