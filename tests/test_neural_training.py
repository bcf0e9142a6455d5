"""Neural models from clicks: examples and hard negatives, the held-out evaluation set, a tiny encoder and a tiny
cross-encoder trained for a few steps into the registry, and the gate refusing a model trained on shuffled labels."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from models.registry import Registry
from training.click_data import Session
from training.click_users import SimulatedUser, UserConfig
from training.neural import EncoderTrainConfig, RerankerTrainConfig, Trained, train_encoder, train_reranker
from training.neural_data import (
    NeuralData,
    NeuralDataConfig,
    build_neural_data,
    click_examples,
    data_hash,
    evaluate_encoder,
    evaluate_reranker,
    is_held_out,
    served_ndcg,
    shuffled,
)

# Single tokens of the tiny models' WordPiece vocabulary (trained on this interpreter's docs).
WORDS = (
    "class function module object value string number method attribute exception statement expression variable "
    "operator argument return default instance type list name file code block loop import print error index key "
    "dictionary integer float tuple set sequence iterator generator lambda scope global local frame format encoding "
    "character byte mapping section example result program system line data output call source target length order "
    "level"
).split()
MARK = "keyword"


def synthetic_clicks(n_queries: int, sessions: int, seed: int) -> tuple[list[Session], dict[str, str]]:
    """Two-word queries over 24 words; the one relevant document of ten holds the two words' counterparts in
    another 24 (a fixed mapping no untrained model knows) and a marker word, the others two other counterparts.
    Pages are shuffled and a PBM user clicks, so the served order says nothing and clicks say what is relevant."""
    rng = np.random.default_rng(seed)
    pairs: set[tuple[int, int]] = set()
    while len(pairs) < n_queries:
        a, b = sorted(int(i) for i in rng.choice(24, 2, replace=False))
        pairs.add((a, b))
    texts: dict[str, str] = {}
    queries = []
    for qi, (a, b) in enumerate(sorted(pairs)):
        queries.append(f"{WORDS[a]} {WORDS[b]}")
        for j in range(10):
            others = [k for k in range(24) if k not in (a, b)]
            picked = [a, b] if j == 0 else [int(k) for k in rng.choice(others, 2, replace=False)]
            words = [WORDS[24 + k] for k in picked] + [WORDS[int(k)] for k in rng.integers(48, len(WORDS), 4)]
            words += [MARK] if j == 0 else []
            texts[f"q{qi}-d{j}"] = " ".join(words[int(i)] for i in rng.permutation(len(words)))
    user = SimulatedUser(UserConfig(kind="pbm", eta=0.8, attractiveness=(0.05, 0.9)))
    log = []
    for i in range(sessions):
        qi = int(rng.integers(len(queries)))
        docs = [f"q{qi}-d{j}" for j in rng.permutation(10)]
        clicks = user.clicks(docs, {d: int(d.endswith("-d0")) for d in docs}, rng)
        log.append(
            Session(query_id=f"s{i}", query=queries[qi], docs=tuple(docs), clicks=tuple(bool(c) for c in clicks))
        )
    return log, texts


def fetch_from(texts: dict[str, str]):  # type: ignore[no-untyped-def]
    return lambda ids: {d: texts[d] for d in ids if d in texts}


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def clicks() -> NeuralData:
    log, texts = synthetic_clicks(120, 1500, seed=0)
    return build_neural_data(log, fetch_from(texts), NeuralDataConfig())


def test_skip_above_negatives_then_the_rest_of_the_page() -> None:
    s = [
        Session(query_id="1", query="q", docs=("a", "b", "c", "d", "e"), clicks=(False, False, True, False, False)),
        Session(query_id="2", query="q", docs=("b", "a", "c", "d", "e"), clicks=(False, False, True, False, False)),
        Session(query_id="3", query="q", docs=("d", "b", "a", "c", "e"), clicks=(False, True, False, False, False)),
        Session(query_id="4", query="q", docs=("e", "a", "c", "b", "d"), clicks=(False, False, False, False, False)),
        Session(query_id="5", query="r", docs=("x", "y"), clicks=(True, True)),
    ]
    ex = click_examples(s, NeuralDataConfig(negatives=3))
    by = {(e.query, e.positive): e for e in ex}
    assert [(e.query, e.positive) for e in ex] == [("q", "b"), ("q", "c"), ("r", "x"), ("r", "y")]
    # c: a was skipped above it twice; b was too but is clicked for q elsewhere, so never a negative; then the
    # page's other unclicked documents, most often shown first
    assert by[("q", "c")].negatives == ("a", "d", "e") and by[("q", "c")].skip_above == 1
    assert by[("q", "b")].negatives == ("d", "a", "e") and by[("q", "b")].skip_above == 1
    assert by[("r", "x")].negatives == () and by[("r", "y")].negatives == ()  # everything shown was clicked
    strict = click_examples(s, NeuralDataConfig(min_clicks=2))
    assert [(e.query, e.positive) for e in strict] == [("q", "c")]
    relevance = {("q", "b"): 0.9, ("q", "c"): 0.1}
    filtered = click_examples(s, NeuralDataConfig(min_relevance=0.3), lambda q, d: relevance.get((q, d), 1.0))
    assert ("q", "c") not in {(e.query, e.positive) for e in filtered}
    assert "c" not in {n for e in filtered for n in e.negatives}  # a clicked document is never a negative


def test_held_out_split_is_seeded_and_stable() -> None:
    queries = [f"query {i}" for i in range(4000)]
    held = [q for q in queries if is_held_out(q, 0.2, 0)]
    assert 0.17 < len(held) / len(queries) < 0.23
    assert held == [q for q in queries if is_held_out(q, 0.2, 0)]
    assert held != [q for q in queries if is_held_out(q, 0.2, 1)]


def test_examples_evaluation_set_and_data_hash(clicks: NeuralData) -> None:
    data = clicks
    train_q = {e.query for e in data.examples}
    held_q = {q.query for q in data.heldout.queries}
    assert held_q and not train_q & held_q and all(is_held_out(q, 0.2, 0) for q in held_q)
    # the click model's relevance keeps stray clicks out: nearly every positive is the relevant document
    assert sum(e.positive.endswith("-d0") for e in data.examples) >= 0.9 * len(data.examples)
    assert data.stats["with_skip_above"] > 0.5 * len(data.examples)
    assert all(len(e.negatives) == 3 and not any(n.endswith("-d0") for n in e.negatives) for e in data.examples)
    top_graded = [max(q.labels, key=lambda d: q.labels[d]).endswith("-d0") for q in data.heldout.queries]
    assert np.mean(top_graded) > 0.9 and len(data.heldout.queries[0].candidates) == 10
    assert served_ndcg(data.heldout) < 0.7  # shuffled pages: the served order knows little
    assert evaluate_reranker(data.heldout, None) == served_ndcg(data.heldout)
    assert data.data_hash == data_hash(data.examples, data.texts) and len(data.data_hash) == 64
    changed = {**data.texts, data.examples[0].positive: "another text"}
    assert data_hash(data.examples, changed) != data.data_hash
    bad = shuffled(data.examples, seed=0)
    for b, e in zip(bad, data.examples, strict=True):
        assert b.query == e.query and b.positive in e.negatives and e.positive in b.negatives
        assert sorted(b.negatives) == sorted({*e.negatives, e.positive} - {b.positive})
    with pytest.raises(ValueError, match="nothing to learn"):
        build_neural_data(
            [Session(query_id="1", query="q", docs=("a",), clicks=(False,))], fetch_from({}), NeuralDataConfig()
        )


def _encoder(data: NeuralData, base: Path, registry: Registry) -> Trained:
    cfg = EncoderTrainConfig(base=str(base), max_steps=100, learning_rate=3e-3, max_seq_length=32, progress=False)
    return train_encoder(data, cfg, registry)


def _reranker(data: NeuralData, base: Path, registry: Registry) -> Trained:
    cfg = RerankerTrainConfig(
        base=str(base), max_steps=100, learning_rate=2e-3, max_seq_length=48, progress=False, latency_queries=5
    )
    return train_reranker(data, cfg, registry)


def test_tiny_encoder_learns_from_clicks_and_registers(
    clicks: NeuralData, tiny_embedder_path: Path, tmp_path: Path
) -> None:
    from models.embedder import EmbedderConfig, SentenceTransformerEmbedder
    from training.promotion import encoder_evaluator

    reg = Registry(tmp_path)
    good = _encoder(clicks, tiny_embedder_path, reg)
    m = good.card.metrics
    assert m["heldout_ndcg10"] > m["heldout_ndcg10_base"] + 0.2, m
    assert m["examples"] == len(clicks.examples) and m["train_s"] > 0
    assert good.card.kind == "encoder" and good.card.data_hash == clicks.data_hash
    assert good.card.base_model == str(tiny_embedder_path) and good.card.config["train"]["max_steps"] == 100
    assert reg.path("encoder", good.card.version) == good.path and (good.path / "card.json").is_file()
    emb = SentenceTransformerEmbedder(EmbedderConfig(model=str(good.path)))
    assert emb.embed(["class function"]).shape == (1, 32)
    assert evaluate_encoder(clicks.heldout, good.path, "unused") == pytest.approx(m["heldout_ndcg10"], abs=2e-3)

    bad_data = dataclasses.replace(clicks, examples=shuffled(clicks.examples, seed=0))
    bad = _encoder(bad_data, tiny_embedder_path, reg)
    assert bad.card.metrics["heldout_ndcg10"] < m["heldout_ndcg10"] - 0.2
    evaluate = encoder_evaluator(clicks.heldout, str(tiny_embedder_path))
    first = reg.promote("encoder", good.card.version, evaluate, margin=0.005)
    assert first.promoted and first.live is None and reg.live("encoder") == good.card.version
    refused = reg.promote("encoder", bad.card.version, evaluate, margin=0.005)
    assert not refused.promoted and refused.candidate_score < refused.live_score
    assert reg.live("encoder") == good.card.version


def test_tiny_reranker_learns_from_clicks_and_registers(
    clicks: NeuralData, tiny_reranker_path: Path, tmp_path: Path
) -> None:
    from models.cross_encoder import CrossEncoderConfig, CrossEncoderModel

    reg = Registry(tmp_path)
    trained = _reranker(clicks, tiny_reranker_path, reg)
    m = trained.card.metrics
    assert m["heldout_ndcg10"] > m["heldout_ndcg10_served"] + 0.2, m
    assert m["rerank20_p50_ms"] > 0 and m["train_pairs"] == 4 * len(clicks.examples)
    assert [c.version for c in reg.versions("reranker")] == [trained.card.version]
    assert trained.card.version.startswith("rer-" + clicks.data_hash[:10])
    model = CrossEncoderModel(CrossEncoderConfig(model=str(trained.path), max_length=48))
    q = clicks.heldout.queries[0]
    texts = [clicks.heldout.texts[d] for d in q.candidates]
    scores = dict(zip(q.candidates, model.rerank(q.query, texts), strict=True))
    assert max(scores, key=lambda d: scores[d]) == max(q.labels, key=lambda d: q.labels[d])
    assert evaluate_reranker(clicks.heldout, trained.path) == pytest.approx(m["heldout_ndcg10"], abs=2e-3)


def test_the_served_order_is_the_logged_fused_order_when_there_is_one() -> None:
    """Exploration shuffles pages, so the mean shown rank is a near-random baseline for a reranker's gate; with
    features logged, candidates are ordered by the fused rank serving computed before the shuffle."""
    from training.click_data import Session
    from training.neural_data import served_orders

    sessions = [
        Session(query_id="1", query="q", docs=("c", "a", "b"), clicks=(False, False, False)),
        Session(query_id="2", query="q", docs=("c", "b", "a"), clicks=(False, False, False)),
    ]
    assert served_orders(sessions) == {"q": ("c", "a", "b")}  # mean shown rank, then id
    fused = {("q", "a"): 1.0, ("q", "b"): 2.0}  # c has no logged features: after the ranked ones
    assert served_orders(sessions, fused) == {"q": ("a", "b", "c")}
