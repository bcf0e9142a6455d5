"""Figures that hold: test queries split by whether the training log has a near-twin of them, per-query
wins/ties/losses against a baseline, and the evaluation split a promotion may read.

Why: in SciFact 132 of the 300 test queries have a near-twin in train and 129 of those share a relevant document
with it; a ranker that remembers which documents were clicked gains on those and nothing elsewhere (+.0526 on
the twins, -.0007 on the others, +.0227 on all). A mean over all test queries hides that, so `sift eval` reports
each system on all queries, on the twins and on the rest.

The twin rule: a test query is a **twin** when the word-set Jaccard similarity of its words (lower-cased
`\\w+` tokens, stop words kept) with any one query of the training log is at least 0.5
(|A ∩ B| / |A ∪ B| >= 0.5).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path

from pydantic import BaseModel, Field

from ranking.familiar import TWIN_JACCARD, jaccard, words  # the twin rule's tokenizer: the served rule's too

TIE = 1e-9
VALIDATION_SPLITS = ("validation", "dev")


def twin_queries(
    queries: Mapping[str, str], training: Iterable[str], threshold: float = TWIN_JACCARD
) -> dict[str, str]:
    """query id → its nearest training-log query, for the `queries` that have one with Jaccard >= `threshold`."""
    train = sorted({w for w in (words(t) for t in training) if w})
    postings: dict[str, list[int]] = defaultdict(list)
    for i, ws in enumerate(train):
        for w in ws:
            postings[w].append(i)
    out: dict[str, str] = {}
    for qid, text in queries.items():
        mine = words(text)
        best, best_i = 0.0, -1
        for i in {i for w in mine for i in postings.get(w, ())}:  # a twin shares at least one word
            j = jaccard(mine, train[i])
            if j > best or (j == best and best_i >= 0 and i < best_i):
                best, best_i = j, i
        if best_i >= 0 and best >= threshold:
            out[qid] = " ".join(sorted(train[best_i]))
    return out


class Slice(BaseModel):
    """One system on one set of queries against the baseline."""

    queries: int
    ndcg10: float = Field(description="Mean nDCG@10 of the system on these queries.")
    baseline_ndcg10: float = Field(description="The baseline's on the same queries.")
    delta: float
    wins: int = Field(description="Queries where the system's nDCG@10 is above the baseline's.")
    ties: int
    losses: int


class TwinReport(BaseModel):
    baseline: str
    rule: str = Field(default=f"twin: word-set Jaccard >= {TWIN_JACCARD} with any training-log query")
    training_source: str = Field(description="Where the training-log queries came from.")
    training_queries: int
    twins: int
    no_twins: int
    systems: dict[str, dict[str, Slice]] = Field(description="system → all / twin / no-twin → its slice.")


def _slice(system: Mapping[str, float], base: Mapping[str, float], qids: list[str]) -> Slice:
    s = [system.get(q, 0.0) for q in qids]
    b = [base.get(q, 0.0) for q in qids]
    d = [x - y for x, y in zip(s, b, strict=True)]
    mean = lambda v: sum(v) / len(v) if v else math.nan  # noqa: E731
    return Slice(
        queries=len(qids), ndcg10=round(mean(s), 4), baseline_ndcg10=round(mean(b), 4), delta=round(mean(d), 4),
        wins=sum(x > TIE for x in d), ties=sum(abs(x) <= TIE for x in d), losses=sum(x < -TIE for x in d),
    )  # fmt: skip


def twin_report(
    per_query: Mapping[str, Mapping[str, float]],
    baseline: str,
    queries: Mapping[str, str],
    training: list[str],
    source: str,
) -> TwinReport:
    """Every system of `per_query` (name → query id → nDCG@10) on all, twin and no-twin queries, against
    `baseline` (one of them)."""
    if baseline not in per_query:
        raise ValueError(f"baseline {baseline!r} was not evaluated (systems: {', '.join(per_query)})")
    base = per_query[baseline]
    qids = sorted(base)
    twins = twin_queries({q: queries[q] for q in qids if q in queries}, training)
    parts = {"all": qids, "twin": [q for q in qids if q in twins], "no-twin": [q for q in qids if q not in twins]}
    systems = {name: {k: _slice(pq, base, ids) for k, ids in parts.items()} for name, pq in per_query.items()}
    return TwinReport(
        baseline=baseline, training_source=source, training_queries=len(set(training)), twins=len(parts["twin"]),
        no_twins=len(parts["no-twin"]), systems=systems,
    )  # fmt: skip


def markdown(report: TwinReport) -> str:
    head = [f"| system | queries | nDCG@10 | Δ vs {report.baseline} | wins / ties / losses |", "|---|---|---|---|---|"]
    rows = []
    for name, parts in report.systems.items():
        for part, s in parts.items():
            rows.append(f"| {name} ({part}) | {s.queries} | {s.ndcg10:.4f} | {s.delta:+.4f} | {s.wins} / {s.ties} / "
                        f"{s.losses} |")  # fmt: skip
    note = (
        f"\n{report.rule} ({report.training_queries} distinct training queries from {report.training_source}): "
        f"{report.twins} twin, {report.no_twins} no-twin test queries"
    )
    return "\n".join(head + rows) + note


def promotion_split(dataset: Path, split: str, allow_test: bool) -> str:
    """The qrels split `sift models promote --dataset` scores on: `validation` (the default) is
    qrels/validation.tsv or qrels/dev.tsv; `test` only with `allow_test` (a test split chooses nothing)."""
    if split == "test" and not allow_test:
        raise ValueError(
            "--split test: a promotion is a choice, and nothing is chosen on a test split; score on a validation "
            "split (the default) or train, or pass --allow-test to do it anyway"
        )
    if split != "validation" or not (dataset / "qrels").is_dir():
        return split  # a folder without qrels/ fails where it is read, saying so
    for name in VALIDATION_SPLITS:
        if (dataset / "qrels" / f"{name}.tsv").is_file():
            return name
    have = sorted(p.stem for p in (dataset / "qrels").glob("*.tsv"))
    raise ValueError(
        f"{dataset} has no validation split (qrels/validation.tsv or qrels/dev.tsv; it has "
        f"{', '.join(have) or 'none'}): name one with --split "
        "(train, if the candidate did not learn from its judged queries' clicks)"
    )
