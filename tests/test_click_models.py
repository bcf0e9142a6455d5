"""Click models and simulated users on synthetic, seeded click logs (no files, a few seconds in all)."""

from __future__ import annotations

import itertools

import numpy as np
import pydantic
import pytest

from training.click_data import PairIndex, Session, encode_sessions, train_test_split
from training.click_dbn import forward_backward
from training.click_models import (
    BetaPrior,
    ClickModel,
    CTRModel,
    DBNConfig,
    DBNModel,
    PBMConfig,
    PBMModel,
)
from training.click_users import SimulatedUser, UserConfig, simulate_sessions

N_QUERIES, N_DOCS, DEPTH = 30, 10, 10  # 300 (query, doc) pairs


def synthetic_collection(seed: int) -> tuple[dict[str, list[str]], dict[str, dict[str, int]]]:
    """Rankings of 10 docs per query, graded 0/1/2 at random (60/25/15 %)."""
    rng = np.random.default_rng(seed)
    rankings = {f"q{i}": [f"q{i}-d{j}" for j in range(N_DOCS)] for i in range(N_QUERIES)}
    qrels = {q: {d: int(rng.choice(3, p=[0.6, 0.25, 0.15])) for d in docs} for q, docs in rankings.items()}
    return rankings, qrels


@pytest.fixture(scope="module")
def collection() -> tuple[dict[str, list[str]], dict[str, dict[str, int]]]:
    return synthetic_collection(7)


@pytest.fixture(scope="module")
def pbm_log(collection: tuple[dict[str, list[str]], dict[str, dict[str, int]]]) -> list[Session]:
    rankings, qrels = collection
    user = SimulatedUser(UserConfig(kind="pbm", eta=0.8))
    return simulate_sessions(rankings, qrels, user, 20_000, np.random.default_rng(1), shuffle=True)


@pytest.fixture(scope="module")
def dbn_log(collection: tuple[dict[str, list[str]], dict[str, dict[str, int]]]) -> list[Session]:
    rankings, qrels = collection
    user = SimulatedUser(UserConfig(kind="dbn", gamma=0.9))
    return simulate_sessions(rankings, qrels, user, 20_000, np.random.default_rng(2), shuffle=True)


@pytest.fixture(scope="module")
def pbm_fit(pbm_log: list[Session]) -> PBMModel:
    return PBMModel().fit(pbm_log)


# -- (a) PBM recovers the examination curve from shuffled result orders -----------------------------------------
def test_pbm_recovers_propensities(pbm_fit: PBMModel) -> None:
    props = pbm_fit.propensities
    assert props is not None and pbm_fit.report is not None and pbm_fit.report.converged
    truth = 1.0 / np.arange(1, DEPTH + 1) ** 0.8
    relative = np.array(props.relative)
    assert relative[0] == pytest.approx(1.0)
    assert np.abs(relative - truth).max() < 0.05, relative
    assert np.allclose(np.array(props.raw) / props.raw[0], relative)


def test_pbm_propensities_on_a_sparse_log() -> None:
    """A SciFact-train-sized log: 809 queries, 10 shown docs each (about one relevant), 16k sessions, so a
    pair is seen ~20 times at random ranks. Per-pair MAP with a fixed Beta prior lets the prior decide the
    scale and drowns a pair's few examined views (0.06-0.08 off at rank 2); the mixture PBM stays within
    0.05 of the truth at every rank."""
    rng = np.random.default_rng(11)
    rankings = {f"q{i}": [f"q{i}-d{j}" for j in range(DEPTH)] for i in range(809)}
    qrels = {
        q: {d: 1 for d in rng.choice(docs, rng.choice([0, 1, 1, 1, 2]), replace=False)} for q, docs in rankings.items()
    }
    user = SimulatedUser(UserConfig(kind="pbm", eta=0.8, attractiveness=(0.05, 0.9)))
    log = simulate_sessions(rankings, qrels, user, 16_000, rng, shuffle=True)
    truth = user.examination(DEPTH)
    mixture = PBMModel().fit(log)
    beta = PBMModel(PBMConfig(attractiveness="beta")).fit(log)
    err_mixture = np.abs(np.array(mixture.propensities.relative) - truth).max()  # type: ignore[union-attr]
    err_beta = np.abs(np.array(beta.propensities.relative) - truth).max()  # type: ignore[union-attr]
    assert mixture.report is not None and mixture.report.converged
    assert err_mixture < 0.05 < err_beta, (err_mixture, err_beta)
    assert mixture.gamma[0] == pytest.approx(1.0)


# -- (b) DBN explains held-out DBN-user clicks better than the baselines ----------------------------------------
def test_dbn_beats_ctr_on_held_out_sessions(dbn_log: list[Session]) -> None:
    train, held = train_test_split(dbn_log, 0.25, np.random.default_rng(3))
    assert not {s.session_id for s in train} & {s.session_id for s in held}
    dbn, ctr, pbm = DBNModel().fit(train), CTRModel().fit(train), PBMModel().fit(train)
    ll_dbn, ll_ctr, ll_pbm = (m.log_likelihood(held) for m in (dbn, ctr, pbm))
    assert ll_dbn > ll_ctr + 0.1, (ll_dbn, ll_ctr)
    assert ll_dbn > ll_pbm, (ll_dbn, ll_pbm)
    assert dbn.gamma == pytest.approx(0.9, abs=0.03)


# -- (c) click-model relevance orders relevant above non-relevant docs ------------------------------------------
def query_aucs(model: ClickModel, qrels: dict[str, dict[str, int]]) -> list[float]:
    """Per query: share of (relevant, non-relevant) doc pairs the model scores in the right order (ties 1/2)."""
    aucs = []
    for q, judged in qrels.items():
        rel = [model.relevance(q, d) for d, g in judged.items() if g > 0]
        non = [model.relevance(q, d) for d, g in judged.items() if g == 0]
        if rel and non:
            wins = [1.0 if r > n else 0.5 if r == n else 0.0 for r, n in itertools.product(rel, non)]
            aucs.append(float(np.mean(wins)))
    return aucs


def test_relevance_ranks_relevant_docs_first(
    collection: tuple[dict[str, list[str]], dict[str, dict[str, int]]], pbm_fit: PBMModel, dbn_log: list[Session]
) -> None:
    _, qrels = collection
    for model in (pbm_fit, DBNModel().fit(dbn_log)):
        aucs = query_aucs(model, qrels)
        assert len(aucs) >= 20
        assert np.mean(np.array(aucs) == 1.0) >= 0.9, (model.name, aucs)


# -- (d) EM never decreases what it maximizes --------------------------------------------------------------------
def test_em_is_monotone(pbm_log: list[Session], dbn_log: list[Session]) -> None:
    none = BetaPrior(clicks=0.0, skips=0.0)
    plain = PBMModel(
        PBMConfig(attractiveness="beta", attractiveness_prior=none, examination_prior=none, max_iter=60)
    ).fit(pbm_log[:3000])
    smoothed = PBMModel(PBMConfig(attractiveness="beta", max_iter=60)).fit(pbm_log[:3000])
    mixture = PBMModel(PBMConfig(max_iter=60)).fit(pbm_log[:3000])  # marginal LL + log prior of gamma
    dbn = DBNModel(DBNConfig(max_iter=40)).fit(dbn_log[:3000])
    assert plain.report and smoothed.report and mixture.report and dbn.report
    # without priors EM is plain maximum likelihood: the LL itself is non-decreasing
    ll = np.array(plain.report.log_likelihood)
    assert len(ll) > 10 and ll[-1] > ll[0] + 0.1
    assert np.diff(ll).min() >= -1e-9
    # with priors (MAP-EM) the objective LL + log prior is
    for report in (smoothed.report, mixture.report, dbn.report):
        obj = np.array(report.objective)
        assert len(obj) > 5 and obj[-1] > obj[0] + 0.1
        assert np.diff(obj).min() >= -1e-9, np.diff(obj).min()


# -- DBN inference checked against brute-force enumeration --------------------------------------------------------
def dbn_enumerate(a: np.ndarray, s: np.ndarray, gamma: float) -> dict[tuple[bool, ...], float]:
    """P(click vector) of a DBN user by summing over every value of the latent attractive/satisfied/continue
    bits: independent of the forward-backward code under test."""
    n = len(a)
    out: dict[tuple[bool, ...], float] = {}
    for bits in itertools.product([0, 1], repeat=3 * n):
        att, sat, cont = bits[:n], bits[n : 2 * n], bits[2 * n :]
        p = np.prod([a[i] if att[i] else 1 - a[i] for i in range(n)])
        p *= np.prod([s[i] if sat[i] else 1 - s[i] for i in range(n)])
        p *= np.prod([gamma if cont[i] else 1 - gamma for i in range(n)])
        clicks, examined = [], True
        for i in range(n):
            click = examined and bool(att[i])
            clicks.append(click)
            examined = examined and not (click and sat[i]) and bool(cont[i])
        out[tuple(clicks)] = out.get(tuple(clicks), 0.0) + float(p)
    return out


def test_dbn_likelihood_and_click_probs_match_enumeration() -> None:
    docs = ("x", "y", "z")
    model = DBNModel(DBNConfig(depth=3)).fit([Session(query_id="1", query="q", docs=docs, clicks=(False,) * 3)])
    a, s, gamma = np.array([0.7, 0.4, 0.2]), np.array([0.3, 0.6, 0.5]), 0.8
    ids = [model.index.get("q", d) for d in docs]
    model.a[ids], model.s[ids], model.gamma = a, s, gamma
    probs = dbn_enumerate(a, s, gamma)
    assert sum(probs.values()) == pytest.approx(1.0)
    for clicks, p in probs.items():
        session = Session(query_id="1", query="q", docs=docs, clicks=clicks)
        assert model.log_likelihood([session]) == pytest.approx(np.log(p), abs=1e-9)
        c = np.array([clicks])
        f, b, prob = forward_backward(a[None], s[None], np.full((1, 3), gamma), c)
        assert prob[0] == pytest.approx(p, abs=1e-12)
        # forward x backward gives P(C) at every rank (the identity the E-step posteriors rest on)
        assert (f[0] * b[0]).sum(axis=1) == pytest.approx(np.full(4, p), abs=1e-12)
    marginal = [sum(p for c, p in probs.items() if c[r]) for r in range(3)]
    assert model.click_probs(session) == pytest.approx(marginal, abs=1e-12)


def test_dbn_click_probs_match_dbn_user() -> None:
    """The model with the user's own parameters predicts the user's click rates per rank."""
    cfg = UserConfig(kind="dbn", gamma=0.7)
    grades = {"a": 2, "b": 0, "c": 1, "d": 2, "e": 0}
    docs = tuple(grades)
    log = simulate_sessions(
        {"1": docs}, {"1": grades}, SimulatedUser(cfg), 40_000, np.random.default_rng(5), shuffle=False
    )
    model = DBNModel(DBNConfig(depth=5)).fit(log[:1])
    ids = [model.index.get("1", d) for d in docs]
    model.a[ids] = [cfg.attractiveness[grades[d]] for d in docs]
    model.s[ids] = [cfg.satisfaction[grades[d]] for d in docs]
    model.gamma = cfg.gamma
    empirical = np.mean([s.clicks for s in log], axis=0)
    assert model.click_probs(log[0]) == pytest.approx(empirical, abs=0.01)


# -- (e) edge cases -----------------------------------------------------------------------------------------------
MODELS = (CTRModel, PBMModel, DBNModel)


@pytest.mark.parametrize("cls", MODELS)
def test_no_clicks_at_all(cls: type[CTRModel | PBMModel | DBNModel]) -> None:
    log = [Session(query_id=str(i), query=f"q{i % 3}", docs=("a", "b", "c"), clicks=(False,) * 3) for i in range(50)]
    model = cls().fit(log)
    assert isinstance(model, ClickModel)
    assert np.isfinite(model.log_likelihood(log)) and model.log_likelihood(log) <= 0.0
    probs = model.click_probs(log[0])
    assert probs.shape == (3,) and np.all((probs >= 0) & (probs < 0.1)), probs
    prior = cls().relevance("never", "seen")
    assert model.relevance("q0", "a") < prior


@pytest.mark.parametrize("cls", MODELS)
def test_single_session(cls: type[CTRModel | PBMModel | DBNModel]) -> None:
    session = Session(query_id="1", query="q", docs=("skipped", "clicked", "below"), clicks=(False, True, False))
    model = cls().fit([session])
    assert np.isfinite(model.log_likelihood([session]))
    assert model.relevance("q", "clicked") > model.relevance("q", "skipped")
    assert model.report is not None and model.report.iterations >= 0


def test_unseen_pairs_get_the_prior(pbm_fit: PBMModel, dbn_log: list[Session]) -> None:
    prior = BetaPrior(clicks=1.0, skips=3.0)
    pbm = PBMModel(PBMConfig(attractiveness="beta", attractiveness_prior=prior)).fit(dbn_log[:500])
    dbn = DBNModel(DBNConfig(attractiveness_prior=prior)).fit(dbn_log[:500])
    ctr = CTRModel().fit(dbn_log[:500])
    assert pbm.relevance("q0", "nope") == pytest.approx(0.25)
    assert pbm.relevance("no such query", "q0-d0") == pytest.approx(0.25)
    assert dbn.relevance("q0", "nope") == pytest.approx(0.25 * 0.5)  # a prior mean x s prior mean
    assert ctr.relevance("q0", "nope") == pytest.approx(0.5)
    unseen = Session(query_id="x", query="unseen", docs=("u1", "u2", "u3"), clicks=(False, False, False))
    assert pbm.click_probs(unseen) == pytest.approx(0.25 * pbm.gamma[:3])
    assert ctr.click_probs(unseen) == pytest.approx(ctr.rank_ctr[:3])
    assert pbm_fit.relevance("q0", "q0-d0") != pytest.approx(PBMModel().relevance("q0", "q0-d0"))
    # the mixture PBM gives unseen pairs the mean of the attractiveness distribution it learnt
    assert pbm_fit.mixture is not None
    grid, weights = pbm_fit.mixture
    assert weights.sum() == pytest.approx(1.0) and pbm_fit.relevance("q0", "nope") == pytest.approx(grid @ weights)


def test_session_records_and_arrays() -> None:
    with pytest.raises(pydantic.ValidationError):
        Session(query_id="1", query="q", docs=("a", "b"), clicks=(True,))
    with pytest.raises(pydantic.ValidationError):
        Session(query_id="1", query="q", docs=(), clicks=())
    long = Session(query_id="1", query="q", docs=tuple("abcdefghijkl"), clicks=(False,) * 11 + (True,))
    short = Session(query_id="2", query="q", docs=("a", "z"), clicks=(True, False))
    index = PairIndex()
    arrays = encode_sessions([long, short], index, depth=10)
    assert arrays.pairs.shape == (2, 10) and len(index) == 11  # l and the click on it are past depth 10
    assert arrays.shown[1].tolist() == [True, True] + [False] * 8
    assert arrays.clicks.sum() == 1 and arrays.pairs[1, 0] == arrays.pairs[0, 0]
    held = encode_sessions([Session(query_id="3", query="q", docs=("new",), clicks=(False,))], index, grow=False)
    assert held.pairs[0, 0] == -1 and len(index) == 11
    with pytest.raises(ValueError):
        PBMModel().log_likelihood([])


# -- simulated users ----------------------------------------------------------------------------------------------
def test_cascade_user_clicks_the_first_attractive_doc_only() -> None:
    """Deterministic attractiveness (grade 0 never, grade >= 1 always): the one click is exactly at the
    first relevant rank, and there is none when nothing is relevant. Random attractiveness: at most one
    click, at rank k with probability a_k * prod_{j<k} (1 - a_j)."""
    rng = np.random.default_rng(11)
    sure = SimulatedUser(UserConfig(kind="cascade", attractiveness=(0.0, 1.0)))
    for _ in range(200):
        grades = {d: int(rng.integers(0, 2)) for d in "abcdef"}
        docs = list(rng.permutation(list(grades)))
        clicks = sure.clicks(docs, grades, rng)
        first = next((r for r, d in enumerate(docs) if grades[d] > 0), None)
        assert np.flatnonzero(clicks).tolist() == ([] if first is None else [first])
    user = SimulatedUser(UserConfig(kind="cascade", attractiveness=(0.2, 0.5, 0.9)))
    grades = {"a": 0, "b": 1, "c": 0, "d": 2}
    log = simulate_sessions({"1": list(grades)}, {"1": grades}, user, 40_000, rng, shuffle=False)
    flags = np.array([s.clicks for s in log])
    assert flags.sum(axis=1).max() == 1
    a = np.array([0.2, 0.5, 0.2, 0.9])
    expected = a * np.concatenate([[1.0], np.cumprod(1 - a)[:-1]])
    assert flags.mean(axis=0) == pytest.approx(expected, abs=0.01)


def test_pbm_user_examination_and_reproducibility(
    collection: tuple[dict[str, list[str]], dict[str, dict[str, int]]],
) -> None:
    rankings, qrels = collection
    user = SimulatedUser(UserConfig(kind="pbm", eta=1.5, attractiveness=(1.0,)))  # every examined doc clicked
    log = simulate_sessions(rankings, qrels, user, 20_000, np.random.default_rng(4))
    ctr = np.mean([s.clicks for s in log], axis=0)
    assert ctr == pytest.approx(1.0 / np.arange(1, 11) ** 1.5, abs=0.015)
    noisy = SimulatedUser(UserConfig(kind="dbn"))
    runs = [simulate_sessions(rankings, qrels, noisy, 200, np.random.default_rng(seed)) for seed in (9, 9, 10)]
    assert runs[0] == runs[1] and runs[0] != runs[2]
