"""From the logs to click-model sessions and back out to judgments.

An impression (a search's query-log line: query, ids shown from absolute position offset + 1) joined with
the click events that name its query id is one `Session` of the click models. Only first pages count
(offset 0): a click model's rank r is the r-th result a user saw. Fitted relevance per (query, doc) becomes
BEIR-style graded qrels, so `sift eval --qrels` can score any run against what users preferred.

Logs written by the API know who sent each impression (`client`: a digest of API key and address). One caller's
repeated searches of a query count as one session (`one_per_client`), and flagged clicks (past a click cap) not
at all: one key at one address replaying searches and clicks moves a judgment as much as one user's click.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path

from pydantic import BaseModel, Field

from logs.clicklog import ClickRecord
from logs.querylog import QueryEvent
from search.text import normalize_query
from training.click_data import DEFAULT_DEPTH, Session
from training.click_models import ClickModel


def clicked_positions(clicks: Iterable[ClickRecord]) -> dict[str, set[int]]:
    """query_id → the positions clicked on that search response, from the unflagged click events."""
    clicked: dict[str, set[int]] = defaultdict(set)
    for c in clicks:
        if c.type == "click" and c.source == "search" and c.positions and not c.flagged:
            clicked[c.query_id].update(c.positions)
    return clicked


def one_per_client(impressions: Iterable[QueryEvent], clicked: Mapping[str, set[int]]) -> list[QueryEvent]:
    """The impressions with each caller's repeated searches of one query (same `client`, index and normalised
    text) reduced to one: its first clicked impression, else its first. Impressions without a `client`
    (in-process simulations, older logs) are all kept. Order: by each kept group's first impression."""
    out: list[QueryEvent] = []
    chosen: dict[tuple[str, str | None, str], int] = {}
    for imp in impressions:
        if imp.client is None:
            out.append(imp)
            continue
        key = (imp.client, imp.index, normalize_query(imp.query))
        j = chosen.get(key)
        if j is None:
            chosen[key] = len(out)
            out.append(imp)
        elif clicked.get(imp.query_id or "") and not clicked.get(out[j].query_id or ""):
            out[j] = imp
    return out


def sessions_from_logs(
    impressions: Iterable[QueryEvent],
    clicks: Iterable[ClickRecord],
    depth: int = DEFAULT_DEPTH,
    index: str | None = None,
) -> list[Session]:
    """One session per first-page search impression (of `index`, if given), clicks flagged by position; one
    caller's repeated impressions of a query count once (`one_per_client`), flagged clicks not at all."""
    clicked = clicked_positions(clicks)
    first_pages = [
        imp for imp in impressions if imp.type == "search" and not imp.offset and (index is None or imp.index == index)
    ]
    sessions = []
    for imp in one_per_client(first_pages, clicked):
        if not imp.query_id or not imp.shown:
            continue
        docs = tuple(imp.shown[:depth])
        flags = clicked.get(imp.query_id, set())
        sessions.append(
            Session(
                query_id=imp.query_id,
                query=normalize_query(imp.query),
                docs=docs,
                clicks=tuple(r + 1 in flags for r in range(len(docs))),
                timestamp=imp.ts.timestamp(),
                session_id=imp.session_id,
            )
        )
    return sessions


class JudgmentConfig(BaseModel):
    min_impressions: int = Field(default=3, ge=1, description="A (query, doc) shown fewer times is not judged.")
    thresholds: tuple[float, ...] = Field(
        default=(0.3, 0.6), description="Relevance at or above thresholds[g-1] gets grade g (below the first: 0)."
    )


def judgments(
    model: ClickModel, sessions: Iterable[Session], config: JudgmentConfig | None = None
) -> dict[str, dict[str, float]]:
    """query → doc → the model's relevance, for pairs shown at least `min_impressions` times."""
    cfg = config or JudgmentConfig()
    shown: dict[tuple[str, str], int] = defaultdict(int)
    for s in sessions:
        for d in s.docs:
            shown[(s.query, d)] += 1
    out: dict[str, dict[str, float]] = defaultdict(dict)
    for (q, d), n in shown.items():
        if n >= cfg.min_impressions:
            out[q][d] = float(model.relevance(q, d))
    return dict(out)


def grade(relevance: float, thresholds: tuple[float, ...]) -> int:
    return sum(relevance >= t for t in thresholds)


def query_ids(texts: Iterable[str], known: Mapping[str, str] | None = None) -> dict[str, str]:
    """A query id per normalised text: the dataset's id where its text matches, else a stable hash."""
    by_text = {normalize_query(t): qid for qid, t in (known or {}).items()}
    return {t: by_text.get(t) or "click-" + hashlib.sha1(t.encode()).hexdigest()[:12] for t in texts}


def write_judgments(
    scores: Mapping[str, Mapping[str, float]],
    out: Path,
    config: JudgmentConfig | None = None,
    known_queries: Mapping[str, str] | None = None,
) -> dict[str, Path]:
    """BEIR layout under `out`: queries.jsonl, qrels/clicks.tsv (graded; grade 0 left out, as BEIR does),
    and scores.tsv with the continuous relevance behind each grade."""
    cfg = config or JudgmentConfig()
    ids = query_ids(scores, known_queries)
    (out / "qrels").mkdir(parents=True, exist_ok=True)
    paths = {"queries": out / "queries.jsonl", "qrels": out / "qrels" / "clicks.tsv", "scores": out / "scores.tsv"}
    with open(paths["queries"], "w") as fq:
        for text in sorted(scores):
            fq.write(json.dumps({"_id": ids[text], "text": text}) + "\n")
    with open(paths["qrels"], "w") as fr, open(paths["scores"], "w") as fs:
        fr.write("query-id\tcorpus-id\tscore\n")
        fs.write("query-id\tcorpus-id\trelevance\n")
        for text in sorted(scores):
            for doc, rel in sorted(scores[text].items(), key=lambda kv: -kv[1]):
                fs.write(f"{ids[text]}\t{doc}\t{rel:.6f}\n")
                g = grade(rel, cfg.thresholds)
                if g > 0:
                    fr.write(f"{ids[text]}\t{doc}\t{g}\n")
    return paths


class Agreement(BaseModel):
    queries: int = Field(description="Judged queries that were also shown in the logs.")
    ndcg_clicks: float = Field(description="Mean nDCG@k of the shown documents ordered by click-model relevance.")
    ndcg_qrels: float = Field(description="Mean nDCG@k of the same documents ordered by the true qrels.")
    ratio: float = Field(description="ndcg_clicks / ndcg_qrels: 1.0 means the clicks ordered them as the qrels do.")


def agreement(
    scores: Mapping[str, Mapping[str, float]],
    qrels: Mapping[str, Mapping[str, int]],
    queries: Mapping[str, str],
    k: int = 10,
) -> Agreement:
    """How well click-derived relevance (by normalised query text) orders the shown documents, against the
    true judgments (by query id; `queries` maps ids to text): both orderings rank the same documents."""
    from training.metrics import per_query_metrics

    ids = {normalize_query(t): q for q, t in queries.items() if q in qrels}
    by_click: dict[str, dict[str, float]] = {}
    by_qrels: dict[str, dict[str, float]] = {}
    for text, docs in scores.items():
        qid = ids.get(text)
        if qid is None or not docs:
            continue
        by_click[qid] = dict(docs)
        by_qrels[qid] = {d: float(qrels[qid].get(d, 0)) for d in docs}
    if not by_click:
        raise ValueError("no judged query appears in the click log")
    judged = {q: qrels[q] for q in by_click}
    metric = f"ndcg@{k}"
    clicks = per_query_metrics(judged, by_click, [metric])[metric]
    ideal = per_query_metrics(judged, by_qrels, [metric])[metric]
    a, b = sum(clicks.values()) / len(clicks), sum(ideal.values()) / len(ideal)
    return Agreement(queries=len(by_click), ndcg_clicks=round(a, 4), ndcg_qrels=round(b, 4), ratio=round(a / b, 4))
