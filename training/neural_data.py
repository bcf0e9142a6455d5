"""Click logs → training examples and evaluation sets for the neural models (bi-encoder, cross-encoder reranker).

A click is a (query, document) positive. Its hard negatives are the documents shown *above* it and skipped
(Joachims' skip-above: the user saw them first and chose the click instead), then the page's other unclicked
documents; a document clicked for the query in any session is never its negative. Texts come from the store
(title + body, as the service hands them to the reranker), so the models learn on what they will score.

Train queries are split by a seeded hash of the query text (as `training/ltr.py` assigns its folds), so a query
is held out or not whatever else the log holds, and later logs keep the same held-out queries. They form the
evaluation set of training-time metrics and of the promotion gate: each query's shown candidates in served order,
graded by a click model's relevance (PBM by default). A BEIR folder can stand in for benchmarks: each judged
query's BM25 candidates from the store, graded by the qrels.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from logs.querylog import QueryEvent
from search.stores.base import IndexStore
from training.click_data import Session
from training.click_models import ClickModel, DBNModel, PBMModel
from training.ltr import FUSED_RANK, ndcg_at, served_features

if TYPE_CHECKING:
    from models.cross_encoder import CrossEncoderConfig, CrossEncoderModel

TextFetch = Callable[[Sequence[str]], dict[str, str]]
Embed = Callable[[list[str]], np.ndarray]
PairScore = Callable[[list[tuple[str, str]]], np.ndarray]


class NeuralDataConfig(BaseModel):
    """How click logs become examples and the held-out evaluation set."""

    model_config = ConfigDict(extra="forbid")

    holdout: float = Field(
        default=0.2, gt=0.0, lt=0.9, description="Share of train queries held out (seeded hash of the query text)."
    )
    split_seed: int = Field(
        default=0, description="Seeds the held-out split: versions compared by the gate should share it."
    )
    negatives: int = Field(default=3, ge=1, le=50, description="Hard negatives kept per (query, clicked document).")
    min_clicks: int = Field(default=1, ge=1, description="A (query, document) needs this many clicks to be a positive.")
    min_relevance: float = Field(
        default=0.3,
        ge=0.0,
        le=1.0,
        description="A clicked (query, document) is a positive only if the click model's relevance reaches this (0: "
        "every click): one stray click among many impressions is noise, and a bi-encoder pulled towards it learns it.",
    )
    max_chars: int = Field(default=2000, ge=64, description="Document text (title + body) is cut to this length.")
    click_model: Literal["pbm", "dbn"] = Field(default="pbm", description="Labels the held-out evaluation set.")
    grades: int = Field(default=5, ge=2, le=31, description="Relevance in [0, 1] is cut into this many grades.")


@dataclass(frozen=True)
class Example:
    """One clicked (query, document) with its hard negatives, best first."""

    query: str
    positive: str
    negatives: tuple[str, ...]
    skip_above: int = 0  # how many of `negatives` were shown above the click and skipped


@dataclass(frozen=True)
class EvalQuery:
    query: str
    candidates: tuple[str, ...]  # in served order
    labels: Mapping[str, float]  # graded relevance per candidate


@dataclass
class EvalSet:
    """Queries with candidates to re-order; `texts` holds every candidate's text."""

    source: str
    queries: list[EvalQuery]
    texts: dict[str, str] = field(default_factory=dict)


@dataclass
class NeuralData:
    examples: list[Example]
    heldout: EvalSet
    texts: dict[str, str]
    data_hash: str
    config: NeuralDataConfig
    stats: dict[str, int]


def is_held_out(query: str, holdout: float, seed: int) -> bool:
    """Whether a (normalized) query is held out: a seeded hash, stable across runs and growing logs."""
    digest = hashlib.sha256(f"{seed}\x1f{query}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < holdout


def click_examples(
    sessions: Iterable[Session], cfg: NeuralDataConfig, relevance: Callable[[str, str], float] | None = None
) -> list[Example]:
    """Positives and hard negatives from the sessions, one example per clicked (query, document), sorted; with
    `relevance` (a fitted click model's), clicked pairs below `cfg.min_relevance` are no positives (nor negatives)."""
    clicks: Counter[tuple[str, str]] = Counter()
    above: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
    unclicked: dict[str, Counter[str]] = defaultdict(Counter)
    for s in sessions:
        for r, (doc, hit) in enumerate(zip(s.docs, s.clicks, strict=True)):
            if not hit:
                unclicked[s.query][doc] += 1
                continue
            clicks[(s.query, doc)] += 1
            above[(s.query, doc)].update(s.docs[a] for a in range(r) if not s.clicks[a])
    ever_clicked: dict[str, set[str]] = defaultdict(set)
    for q, d in clicks:
        ever_clicked[q].add(d)
    out = []
    for (q, pos), n in sorted(clicks.items()):
        if n < cfg.min_clicks or (relevance is not None and relevance(q, pos) < cfg.min_relevance):
            continue
        skipped = [d for d in _by_count(above[(q, pos)]) if d not in ever_clicked[q]]
        rest = [d for d in _by_count(unclicked[q]) if d not in ever_clicked[q] and d not in skipped]
        negatives = tuple((skipped + rest)[: cfg.negatives])
        out.append(Example(q, pos, negatives, min(len(skipped), len(negatives))))
    return out


def _by_count(counts: Counter[str]) -> list[str]:
    return [d for d, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]


Fused = Mapping[tuple[str, str], float]


def fused_ranks(impressions: Iterable[QueryEvent]) -> dict[tuple[str, str], float]:
    """(normalized query, doc) → the fused rank logged with its features: the order serving would give without
    the stage being evaluated, before exploration shuffled the page."""
    out: dict[tuple[str, str], float] = {}
    for k, row in served_features(impressions).items():
        rank = row[FUSED_RANK]
        if rank is not None:
            out[k] = float(rank)
    return out


def served_orders(sessions: Iterable[Session], fused: Fused | None = None) -> dict[str, tuple[str, ...]]:
    """Per query, every document shown for it: by its logged fused rank when impressions carried features
    (exploration shuffles pages, so shown ranks would make a near-random baseline), else by mean shown rank."""
    ranks: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
    for s in sessions:
        for r, d in enumerate(s.docs):
            ranks[s.query][d].append(r)

    def key(q: str, d: str, shown: list[int]) -> tuple[float, float, str]:
        logged = fused.get((q, d)) if fused else None
        return (logged if logged is not None else math.inf, float(np.mean(shown)), d)

    return {q: tuple(sorted(docs, key=lambda d: key(q, d, docs[d]))) for q, docs in ranks.items()}


def fit_click_model(sessions: Sequence[Session], kind: str) -> ClickModel:
    model: ClickModel = PBMModel() if kind == "pbm" else DBNModel()
    model.fit(list(sessions))
    return model


def click_eval_set(
    sessions: Sequence[Session], model: ClickModel, cfg: NeuralDataConfig, fused: Fused | None = None
) -> EvalSet:
    """The held-out queries' shown candidates in served order (`served_orders`), graded by the click model's
    relevance. Queries whose candidates all grade 0 are left out: no order can score there."""
    held = [s for s in sessions if is_held_out(s.query, cfg.holdout, cfg.split_seed)]
    queries = []
    for q, cands in sorted(served_orders(held, fused).items()):
        labels = {d: float(min(cfg.grades - 1, int(model.relevance(q, d) * cfg.grades))) for d in cands}
        if any(labels.values()):
            queries.append(EvalQuery(q, cands, labels))
    return EvalSet(f"clicks: held-out train queries ({cfg.click_model} grades)", queries)


def beir_eval_set(root: Path, split: str, store: IndexStore, index: str, depth: int = 20) -> EvalSet:
    """Judged queries of a BEIR split, each with the store's BM25 top `depth` as candidates (BM25 order is the
    served order) graded by the qrels; for benchmarks on held-back judgments instead of clicks."""
    from training.beir import load_beir
    from training.metrics import fit_query

    data = load_beir(root, split)
    queries = []
    for qid, text in sorted(data.queries.items()):
        hits = store.bm25_search(index, fit_query(text), depth, with_docs=False)
        cands = tuple(h.id for h in hits)
        labels = {d: float(data.qrels[qid].get(d, 0)) for d in cands}
        if any(labels.values()):
            queries.append(EvalQuery(text, cands, labels))
    return EvalSet(f"beir: {data.name}/{split} (BM25 top {depth})", queries)


def store_texts(store: IndexStore, index: str, max_chars: int, title_line: bool = False) -> TextFetch:
    """Document texts as the service hands them to the reranker (title, newline, body), cut to `max_chars`;
    `title_line`: the title always on its own first line (even when empty), so the two can be split apart again."""

    def text(title: str, body: str) -> str:
        return f"{' '.join(title.split())}\n{body}" if title_line else f"{title}\n{body}".strip()

    def fetch(ids: Sequence[str]) -> dict[str, str]:
        out: dict[str, str] = {}
        uniq = sorted(set(ids))
        for i in range(0, len(uniq), 500):
            for doc_id, doc in store.get_many(index, uniq[i : i + 500]).items():
                out[doc_id] = text(doc.title, doc.body)[:max_chars]
        return out

    return fetch


def with_texts(evalset: EvalSet, fetch: TextFetch) -> EvalSet:
    """The set with its candidates' texts; candidates the store no longer has are dropped."""
    texts = fetch([d for q in evalset.queries for d in q.candidates])
    queries = []
    for q in evalset.queries:
        cands = tuple(d for d in q.candidates if d in texts)
        if any(q.labels[d] for d in cands):
            queries.append(EvalQuery(q.query, cands, {d: q.labels[d] for d in cands}))
    return EvalSet(evalset.source, queries, {d: texts[d] for q in queries for d in q.candidates})


def data_hash(examples: Sequence[Example], texts: Mapping[str, str]) -> str:
    """sha256 of the examples and of every text they use: same clicks and documents, same hash."""
    h = hashlib.sha256()
    for e in examples:
        h.update(json.dumps([e.query, e.positive, list(e.negatives)]).encode())
        for d in (e.positive, *e.negatives):
            h.update(hashlib.sha256(texts[d].encode()).digest())
    return h.hexdigest()


def build_neural_data(
    sessions: Sequence[Session], fetch: TextFetch, cfg: NeuralDataConfig, fused: Fused | None = None
) -> NeuralData:
    """Examples from the train side of the split, the evaluation set from the held-out side; examples whose
    clicked document has no text are dropped, and so are negatives without one."""
    train = [s for s in sessions if not is_held_out(s.query, cfg.holdout, cfg.split_seed)]
    model = fit_click_model(sessions, cfg.click_model)
    raw = click_examples(train, cfg, model.relevance)
    if not raw:
        raise ValueError(
            f"no clicked (query, document) with click-model relevance >= {cfg.min_relevance} among {len(train)} "
            "train-side sessions: nothing to learn"
        )
    heldout = click_eval_set(sessions, model, cfg, fused)
    texts = fetch([d for e in raw for d in (e.positive, *e.negatives)])
    examples = [
        Example(e.query, e.positive, tuple(n for n in e.negatives if n in texts), e.skip_above)
        for e in raw
        if e.positive in texts
    ]
    if not examples:
        raise ValueError("none of the clicked documents is in the store (wrong --index?)")
    heldout = with_texts(heldout, fetch)
    stats = {
        "sessions": len(sessions),
        "examples": len(examples),
        "train_queries": len({e.query for e in examples}),
        "heldout_queries": len(heldout.queries),
        "with_skip_above": sum(e.skip_above > 0 for e in examples),
        "missing_docs": len(raw) - len(examples),
    }
    used = {d: texts[d] for e in examples for d in (e.positive, *e.negatives)}
    return NeuralData(examples, heldout, used, data_hash(examples, used), cfg, stats)


def shuffled(examples: Sequence[Example], seed: int) -> list[Example]:
    """The same pages with the click moved at random: one of each example's negatives becomes its positive and
    the clicked document takes its place (no negative: another query's click). A deliberately worse training set,
    to check that the promotion gate refuses what it yields."""
    rng = np.random.default_rng(seed)
    pool = [e.positive for e in examples]
    out = []
    for e in examples:
        if e.negatives:
            k = int(rng.integers(len(e.negatives)))
            negatives = (*e.negatives[:k], e.positive, *e.negatives[k + 1 :])
            out.append(Example(e.query, e.negatives[k], negatives, 0))
        else:
            out.append(Example(e.query, pool[int(rng.integers(len(pool)))], (), 0))
    return out


# -- scoring an evaluation set ------------------------------------------------------------------------------
def mean_ndcg(evalset: EvalSet, scores: Sequence[np.ndarray], k: int = 10) -> float:
    """Mean nDCG@k of each query's candidates ordered by its scores (ties keep the served order)."""
    vals = [
        ndcg_at(np.array([q.labels[d] for d in q.candidates]), np.asarray(s, dtype=np.float64), k)
        for q, s in zip(evalset.queries, scores, strict=True)
    ]
    vals = [v for v in vals if not math.isnan(v)]
    if not vals:
        raise ValueError(f"the evaluation set ({evalset.source}) has no query with a relevant candidate")
    return float(np.mean(vals))


def served_ndcg(evalset: EvalSet) -> float:
    return mean_ndcg(evalset, [-np.arange(len(q.candidates), dtype=np.float64) for q in evalset.queries])


def embedding_ndcg(evalset: EvalSet, embed: Embed) -> float:
    """Candidates re-ordered by cosine similarity to the query (`embed` returns unit vectors)."""
    docs = sorted({d for q in evalset.queries for d in q.candidates})
    row = {d: i for i, d in enumerate(docs)}
    dvec = embed([evalset.texts[d] for d in docs])
    qvec = embed([q.query for q in evalset.queries])
    scores = [dvec[[row[d] for d in q.candidates]] @ qv for q, qv in zip(evalset.queries, qvec, strict=True)]
    return mean_ndcg(evalset, scores)


def pair_ndcg(evalset: EvalSet, score: PairScore) -> float:
    """Candidates re-ordered by a (query, text) scorer, all pairs in one call so the model batches them."""
    pairs = [(q.query, evalset.texts[d]) for q in evalset.queries for d in q.candidates]
    flat = np.asarray(score(pairs), dtype=np.float64).reshape(len(pairs), -1)[:, 0]
    out, at = [], 0
    for q in evalset.queries:
        out.append(flat[at : at + len(q.candidates)])
        at += len(q.candidates)
    return mean_ndcg(evalset, out)


def evaluate_encoder(evalset: EvalSet, model: Path | str | None, default: str) -> float:
    """Mean nDCG@10 of an encoder folder (None: `default`, the configured embedder) re-ordering the candidates."""
    from models.embedder import EmbedderConfig, SentenceTransformerEmbedder

    emb = SentenceTransformerEmbedder(EmbedderConfig(model=str(model) if model is not None else default))
    return embedding_ndcg(evalset, emb.embed)


def served_cross_encoder(model: Path | str, serve: CrossEncoderConfig | None = None) -> CrossEncoderModel:
    """A cross-encoder folder loaded as the app serves it (`serve`: the app's reranker settings, default the
    served defaults: token window, int8 on CPU), so figures measured here are the ones users get."""
    from models.cross_encoder import CrossEncoderModel
    from ranking.rerank import RerankerConfig

    return CrossEncoderModel((serve or RerankerConfig()).model_copy(update={"model": str(model), "batch_size": 32}))


def evaluate_reranker(evalset: EvalSet, model: Path | str | None, serve: CrossEncoderConfig | None = None) -> float:
    """Mean nDCG@10 of a cross-encoder folder's order, served as `serve` says (None: the served order, i.e. no
    reranker)."""
    if model is None:
        return served_ndcg(evalset)
    return pair_ndcg(evalset, served_cross_encoder(model, serve).predict)


def describe(evalset: EvalSet) -> dict[str, Any]:
    return {"source": evalset.source, "queries": len(evalset.queries), "candidates": len(evalset.texts)}
