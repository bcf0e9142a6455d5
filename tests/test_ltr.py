"""Learning to rank: features (one function for serving and training), LambdaMART trained on click-model
labels, the served stage with its explanations, the impression's logged features, and `sift train ranker`."""

from __future__ import annotations

import asyncio
import json
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from logs.querylog import QueryEvent
from ranking.features import FEATURES, feature_matrix
from ranking.ltr import LTRConfig, LTRRanker, load_meta, save_ranker
from search.documents import Document
from search.retrieval import Retrieved
from training.click_data import Session
from training.click_users import SimulatedUser, UserConfig
from training.ltr import RankerData, RankerTrainConfig, ndcg_at, ranker_data, train_ranker

COL = {name: i for i, name in enumerate(FEATURES)}


def test_feature_matrix_columns() -> None:
    now = datetime(2026, 1, 11, tzinfo=UTC)
    docs = {
        "a": Document(id="a", title="Protein folding", body="how proteins fold " * 5, published_at=now - timedelta(10)),
        "b": Document(id="b", title="Other", body="folding chairs"),
    }
    cands = [
        Retrieved(id="a", doc=None, score=0.9, bm25_rank=1, bm25_score=7.5, dense_rank=2, dense_score=0.8),
        Retrieved(id="b", doc=None, score=0.4, bm25_rank=2, bm25_score=3.0),
        Retrieved(id="c", doc=None, score=0.1, dense_rank=1, dense_score=0.9),
    ]
    x = feature_matrix(["protein", "folding"], cands, docs, priors={"a": 0.7}, rerank={"b": 2.5}, now=now)
    assert x.shape == (3, len(FEATURES))
    assert x[0, COL["bm25_score"]] == 7.5 and x[0, COL["dense_rank"]] == 2 and x[0, COL["fused_rank"]] == 1
    assert x[0, COL["title_coverage"]] == 1.0  # stems: "proteins"/"protein", "folding"/"fold"
    assert x[1, COL["title_coverage"]] == 0.0 and x[1, COL["body_coverage"]] == 0.5
    assert x[0, COL["doc_length"]] == 15 and x[0, COL["age_days"]] == pytest.approx(10.0)
    assert x[0, COL["click_prior"]] == 0.7 and math.isnan(x[1, COL["click_prior"]])
    assert x[1, COL["rerank_score"]] == 2.5 and math.isnan(x[0, COL["rerank_score"]])
    assert math.isnan(x[1, COL["dense_score"]]) and math.isnan(x[1, COL["age_days"]])
    assert np.isnan(x[2, COL["title_coverage"] :][:4]).all()  # no document: no text features
    ranked = feature_matrix(["protein"], cands[1:], docs, ranks=[7, 9], now=now)
    assert ranked[:, COL["fused_rank"]].tolist() == [7.0, 9.0]


def synthetic_log(n_queries: int, sessions: int, seed: int) -> tuple[list[QueryEvent], list[Session]]:
    """Queries with 10 shown docs each; a doc is relevant iff its title covers the query, which the fused rank
    ignores; a pbm user clicks on shuffled pages."""
    rng = np.random.default_rng(seed)
    imps, rel = [], {}
    for q in range(n_queries):
        feats = {}
        for j in range(10):
            row = [math.nan] * len(FEATURES)
            relevant = rng.random() < 0.25
            row[COL["bm25_score"]] = float(rng.normal(5, 1))
            row[COL["bm25_rank"]] = row[COL["fused_rank"]] = float(j + 1)
            row[COL["fused_score"]] = 1.0 / (j + 1)
            row[COL["title_coverage"]] = 1.0 if relevant else float(rng.choice([0.0, 0.5]))
            row[COL["doc_length"]] = float(rng.integers(50, 300))
            feats[f"q{q}-d{j}"] = [None if math.isnan(v) else v for v in row]
            rel[(f"query {q}", f"q{q}-d{j}")] = int(relevant)
        imps.append(QueryEvent(query=f"query {q}", query_id=f"i{q}", shown=list(feats), offset=0, features=feats))
    user = SimulatedUser(UserConfig(kind="pbm", eta=0.8, attractiveness=(0.05, 0.9)))
    log = []
    for i in range(sessions):
        q = int(rng.integers(n_queries))
        docs = [f"q{q}-d{j}" for j in rng.permutation(10)]
        clicks = user.clicks(docs, {d: rel[(f"query {q}", d)] for d in docs}, rng)
        log.append(Session(query_id=f"s{i}", query=f"query {q}", docs=tuple(docs), clicks=tuple(map(bool, clicks))))
    return imps, log


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    imps, sessions = synthetic_log(150, 3000, seed=3)
    cfg = RankerTrainConfig()
    data, _ = ranker_data(imps, sessions, cfg)
    assert data.x.shape == (1500, len(FEATURES)) and set(np.unique(data.y)) <= set(range(cfg.grades))
    booster, meta = train_ranker(data, cfg)
    m = meta.metrics
    # the fused order knows nothing of relevance here; the learnt one does, on held-out train queries
    assert m["heldout_ndcg10_ltr"] > m["heldout_ndcg10_fused"] + 0.2, m
    assert m["heldout_queries"] > 10 and meta.features == list(FEATURES) and len(meta.data_hash) == 64
    _, meta2 = train_ranker(data, cfg)
    assert meta2.data_hash == meta.data_hash and meta2.metrics["heldout_ndcg10_ltr"] == m["heldout_ndcg10_ltr"]
    return save_ranker(booster, meta, tmp_path_factory.mktemp("ranker"))


def test_ndcg_at() -> None:
    assert ndcg_at(np.array([0.0, 2.0, 1.0]), np.array([3.0, 2.0, 1.0])) < 1.0
    assert ndcg_at(np.array([2.0, 1.0, 0.0]), np.array([3.0, 2.0, 1.0])) == pytest.approx(1.0)
    assert math.isnan(ndcg_at(np.zeros(3), np.arange(3.0)))


def test_leave_one_query_out_priors() -> None:
    """A doc's prior in a training row leaves that row's own query out (else the label leaks into it)."""
    imps, sessions = synthetic_log(40, 800, seed=5)
    data, model = ranker_data(imps, sessions, RankerTrainConfig(prior_strength=2.0))
    row = data.docs.index("q3-d0")
    rel = model.relevance("query 3", "q3-d0")
    mean = np.mean([model.relevance(q, d) for q, d in zip(data.queries, data.docs, strict=True)])
    assert data.x[row, COL["click_prior"]] == pytest.approx(mean)  # the doc is shown for no other query
    assert data.priors["q3-d0"] == pytest.approx((rel + 2.0 * mean) / 3.0)


def test_ranker_orders_and_explains(trained: Path) -> None:
    ranker = LTRRanker(LTRConfig(model=str(trained), contributions=2))
    ranker.warm_up()
    ranker.warm_up()  # idempotent
    docs = {f"d{i}": Document(id=f"d{i}", title=t, body="text") for i, t in enumerate(["other", "gut bacteria"])}
    cands = [Retrieved(id=f"d{i}", doc=None, score=1.0 - i / 10, bm25_rank=i + 1, bm25_score=5.0) for i in range(2)]
    out = ranker.rank(["gut", "bacteria"], cands, docs)
    assert out.order == ["d1", "d0"] and out.scores["d1"] > out.scores["d0"]
    assert out.contributions["d1"][0][0] == "title_coverage" and len(out.contributions["d1"]) <= 2
    assert ranker.version == load_meta(trained).version


def test_a_bad_ranker_folder_fails_at_warm_up(trained: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="sift train ranker"):
        LTRRanker(LTRConfig(model=str(tmp_path / "none"))).warm_up()
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "model.txt").write_text((trained / "model.txt").read_text())
    meta = json.loads((trained / "meta.json").read_text())
    (bad / "meta.json").write_text(json.dumps({**meta, "features": meta["features"][:-1]}))
    with pytest.raises(ValueError, match="trained on features"):
        LTRRanker(LTRConfig(model=str(bad))).warm_up()
    with pytest.raises(ValueError):
        LTRRanker(LTRConfig())


def _app(data_dir: Path, ranker: Path | None = None, interleave: bool = False) -> dict[str, Any]:
    return {
        "data_dir": str(data_dir),
        "search": {"default_index": "ltr-docs", "retrieval": {"mode": "bm25"}, "exploration": {"rate": 1.0}},
        "reranker": {"model": None},
        "ranker": {"model": str(ranker) if ranker else None, "interleave": interleave},
        "suggest": {"enabled": False},
        "summarizer": None,
    }


def test_served_features_train_a_ranker_that_serves(tmp_path: Path) -> None:
    """Searches log their page's features; `sift train ranker` learns from them and the clicks; the app then
    serves it: an `ltr` stage, the ranker's version on the impression, per-result contributions."""
    from indexing.pipeline import IndexingConfig, IndexingPipeline
    from logs.events import impression_for
    from search.settings import Settings
    from search.stores.embedded import EmbeddedStore
    from serving.backend import logged_search
    from serving.config import AppConfig
    from serving.local import local_backend
    from sift.cli import app
    from sift.clicks_cli import _backend_search
    from training.click_simulator import InProcessClient, SimulatorConfig, simulate

    topics = ["protein folding", "insulin resistance", "vitamin d", "zebrafish heart", "sleep memory", "gut flora"]
    corpus = tmp_path / "corpus.jsonl"
    with open(corpus, "w") as f:
        for i in range(120):
            t = topics[i % len(topics)]
            title = f"{t} trial {i}" if i % 4 == 0 else f"notes {i}"
            f.write(json.dumps({"_id": f"d{i}", "title": title, "text": f"{t} results {i} " * (1 + i % 3)}) + "\n")
    IndexingPipeline(EmbeddedStore(tmp_path / "indices"), None, IndexingConfig(embed=False, progress=False)).build(
        corpus, "ltr-docs"
    )
    queries = {f"q{j}": t for j, t in enumerate(topics)}
    qrels = {f"q{j}": {f"d{i}": 1 for i in range(j, 120, 24)} for j in range(len(topics))}  # the titled ones
    backend = local_backend(AppConfig.model_validate(_app(tmp_path)), Settings())
    cfg = SimulatorConfig(sessions=600, seed=1, progress=False, user=UserConfig(eta=0.8, attractiveness=(0.05, 0.9)))

    async def go() -> None:
        client = InProcessClient(_backend_search(backend), backend.events)
        try:
            await simulate(client, queries, qrels, cfg)
        finally:
            await client.aclose()

    asyncio.run(go())
    imps = [e for e in backend.suggest.query_log.read() if e.type == "search"]
    assert imps and all(e.features and set(e.features) == set(e.shown or ()) for e in imps)
    assert all(len(row) == len(FEATURES) for row in imps[0].features.values())  # type: ignore[union-attr]
    backend.suggest.close()
    backend.store.close()

    config = tmp_path / "app.yaml"
    config.write_text(yaml.safe_dump(_app(tmp_path)))
    out = tmp_path / "ranker"
    # six queries are too few for the gate's confidence (it refuses them: see test_the_gate_needs_...): off here
    loose = ["--confidence", "0", "--min-gain", "-1", "--no-ips-gate"]  # no exploration in this log
    res = CliRunner().invoke(app, ["train", "ranker", "--config", str(config), "--out", str(out), *loose])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output.splitlines()[0])
    assert summary["version"].startswith("ltr-") and summary["rows"] > 0 and (out / "model.txt").is_file()
    again = CliRunner().invoke(app, ["train", "ranker", "--config", str(config), "--out", str(out), *loose])
    assert again.exit_code == 2 and "not empty" in again.output
    gate = ["train", "ranker", "--config", str(config), "--out", str(tmp_path / "gated"), "--min-gain", "1"]
    gated = CliRunner().invoke(app, gate)
    assert gated.exit_code == 1 and "not written" in gated.output and not (tmp_path / "gated").exists()
    sure = CliRunner().invoke(app, ["train", "ranker", "--config", str(config), "--out", str(tmp_path / "sure")])
    assert sure.exit_code == 1 and "lower bound" in sure.output and not (tmp_path / "sure").exists()

    served = local_backend(AppConfig.model_validate(_app(tmp_path, out)), Settings())
    try:
        from search.service import SearchRequest

        resp = asyncio.run(logged_search(served, SearchRequest(query="vitamin d", session_id="s")))
        assert "ltr" in resp.stages and resp.results
        top = resp.results[0].explanation
        assert top.ltr_score is not None and top.contributions and "ltr" in top.stages
        assert resp.results[0].score == top.ltr_score
        assert "features" not in resp.model_dump(mode="json")  # logged, never sent
        imp = impression_for(SearchRequest(query="vitamin d"), resp, served.versions)
        assert imp.versions is not None and imp.versions["ranker"] == summary["version"]
        assert imp.features and set(imp.features) == {r.id for r in resp.results}
    finally:
        served.suggest.close()
        served.store.close()

    none = CliRunner().invoke(app, ["clicks", "interleaving", "--config", str(config)])
    assert none.exit_code == 1 and "no interleaved impressions" in none.output
    mixed = local_backend(AppConfig.model_validate(_app(tmp_path, out, interleave=True)), Settings())
    try:
        req = SearchRequest(query="vitamin d", session_id="s", limit=5)
        resp = asyncio.run(logged_search(mixed, req))
        assert "interleave" in resp.stages and "explore" not in resp.stages  # interleaving replaces exploration
        assert resp.teams is not None and len(resp.teams) == len(resp.results) == 5 and set(resp.teams) <= {"a", "b"}
        imp = impression_for(req, resp, mixed.versions)
        assert imp.teams == resp.teams and imp.versions and imp.versions["interleave"].endswith(summary["version"])
        assert asyncio.run(mixed.service.search(req)).teams == resp.teams  # same session and query: same page
    finally:
        mixed.suggest.close()
        mixed.store.close()
    report = CliRunner().invoke(app, ["clicks", "interleaving", "--config", str(config)])
    assert report.exit_code == 0, report.output
    result = json.loads(report.output)
    assert result["impressions"] == 1 and result["ties"] == 1 and result["winner"] is None
    assert not result["significant"] and result["confidence"] == 0.0
    assert result["rankers"]["b"] == summary["version"]


def test_the_gate_needs_a_gain_it_can_trust() -> None:
    """Labels that no feature explains: whatever the folds' mean says, its bootstrap bound is not above zero, so
    the ranker is not written; the synthetic log's learnable labels pass."""
    from training.ltr import lower_bound, passes_gate

    assert lower_bound([0.1] * 20, seed=0) == pytest.approx(0.1)
    assert lower_bound([0.3, -0.3] * 10, seed=0) < 0 < lower_bound([0.3, -0.1] * 10, seed=0)
    rng = np.random.default_rng(1)
    x = rng.random((2000, len(FEATURES)))
    x[:, COL["fused_rank"]] = np.tile(np.arange(1, 11), 200)
    y = rng.integers(0, 5, 2000).astype(float)
    noise = RankerData(x, y, [f"q{i // 10:03d}" for i in range(2000)], [], {})
    cfg = RankerTrainConfig(min_gain=0.0)
    _, meta = train_ranker(noise, cfg)
    assert meta.metrics["heldout_queries"] == 200 and meta.metrics["heldout_gain_lcb"] <= 0
    assert not passes_gate(meta, cfg)
    imps, sessions = synthetic_log(60, 1200, seed=3)
    data, _ = ranker_data(imps, sessions, RankerTrainConfig())
    _, good = train_ranker(data, RankerTrainConfig())
    assert good.metrics["heldout_gain_lcb"] > 0 and passes_gate(good, RankerTrainConfig())
