"""The learnt ranker re-orders only queries it has click evidence for (issue 33): the training queries' word
sets saved with it, a familiar query re-ordered, an unfamiliar one left in the fused order, the threshold, and
rankers saved before this keep applying to every query."""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path

import numpy as np
import pytest

from logs.querylog import QueryEvent
from ranking.familiar import FamiliarIndex, familiar_sets
from ranking.features import FEATURES
from ranking.ltr import LTRConfig, LTRRanker, load_meta, save_ranker
from training.click_data import Session
from training.ltr import RankerTrainConfig, ranker_data, train_ranker

COL = {name: i for i, name in enumerate(FEATURES)}


def test_familiar_sets_and_threshold() -> None:
    sets = familiar_sets(["Gut bacteria", "gut  BACTERIA", "sleep and memory", "", "   "])
    assert sets == [["bacteria", "gut"], ["and", "memory", "sleep"]]  # most frequent first, empty dropped
    assert len(familiar_sets([f"q {i}" for i in range(50)], limit=7)) == 7
    index = FamiliarIndex(sets)
    assert index.familiar("gut bacteria") and index.best("GUT, bacteria!") == 1.0
    assert index.best("bacteria of the gut wall") == pytest.approx(2 / 5)
    assert not index.familiar("bacteria of the gut wall") and index.familiar("bacteria of the gut wall", 0.4)
    assert not index.familiar("zebrafish heart") and index.best("") == 0.0


def _log(n_queries: int, sessions: int, seed: int) -> tuple[list[QueryEvent], list[Session]]:
    """A doc is relevant iff its title covers the query; the fused order ignores that; clicks show it."""
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
            row[COL["title_coverage"]] = 1.0 if relevant else 0.0
            feats[f"q{q}-d{j}"] = [None if math.isnan(v) else v for v in row]
            rel[(f"topic {q}", f"q{q}-d{j}")] = relevant
        imps.append(QueryEvent(query=f"topic {q}", query_id=f"i{q}", shown=list(feats), offset=0, features=feats))
    out = []
    for i in range(sessions):
        q = int(rng.integers(n_queries))
        docs = [f"q{q}-d{j}" for j in rng.permutation(10)]
        clicks = tuple(bool(rel[(f"topic {q}", d)] and rng.random() < 0.9 / (1 + k)) for k, d in enumerate(docs))
        out.append(Session(query_id=f"s{i}", query=f"topic {q}", docs=tuple(docs), clicks=clicks))
    return imps, out


@pytest.fixture(scope="module")
def ranker_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    imps, sessions = _log(60, 1500, seed=4)
    booster, meta = train_ranker(ranker_data(imps, sessions, RankerTrainConfig())[0], RankerTrainConfig())
    return save_ranker(booster, meta, tmp_path_factory.mktemp("ranker"))


def test_training_saves_the_queries_it_learnt_from(ranker_dir: Path) -> None:
    sets = load_meta(ranker_dir).familiar
    assert sets is not None and ["7", "topic"] in sets and len(sets) == 60
    assert all(s == sorted(s) and s[-1] == "topic" for s in sets)


def _with_sets(src: Path, dst: Path, sets: list[list[str]] | None) -> Path:
    dst.mkdir()
    (dst / "model.txt").write_text((src / "model.txt").read_text())
    meta = json.loads((src / "meta.json").read_text())
    if sets is None:
        meta.pop("familiar")  # what a ranker trained before issue 33 looks like
    else:
        meta["familiar"] = sets
    (dst / "meta.json").write_text(json.dumps(meta))
    return dst


def test_served_only_to_familiar_queries(ranker_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from indexing.pipeline import IndexingConfig, IndexingPipeline
    from search.service import SearchConfig, SearchRequest
    from search.stores.embedded import EmbeddedStore
    from search.wiring import build_service

    corpus = tmp_path / "corpus.jsonl"
    with open(corpus, "w") as f:  # bm25 puts the body-heavy notes first; the ranker wants covering titles
        for i in range(6):
            f.write(json.dumps({"_id": f"n{i}", "title": f"notes {i}", "text": "gut bacteria wall " * 8}) + "\n")
            f.write(json.dumps({"_id": f"t{i}", "title": "gut bacteria wall", "text": f"trial {i}"}) + "\n")
    store = EmbeddedStore(tmp_path / "indices")
    IndexingPipeline(store, None, IndexingConfig(embed=False, progress=False)).build(corpus, "docs")
    search_cfg = SearchConfig.model_validate({"default_index": "docs", "retrieval": {"mode": "bm25"}})
    search_cfg = search_cfg.model_copy(update={"log_features": False})
    sets = [["bacteria", "gut"]]

    def serve(query: str, folder: Path | None, **cfg: object) -> tuple[list[str], list[str]]:
        ltr = LTRRanker(LTRConfig(model=str(folder), **cfg)) if folder else None  # type: ignore[arg-type]
        svc = build_service(store, search_cfg, ltr=ltr)
        resp = asyncio.run(svc.search(SearchRequest(query=query, limit=10)))
        return [r.id for r in resp.results], resp.stages

    known = _with_sets(ranker_dir, tmp_path / "known", sets)
    fused, _ = serve("gut bacteria", None)
    learnt, stages = serve("gut bacteria", known)
    assert "ltr" in stages and learnt != fused and learnt[0].startswith("t")  # familiar: re-ordered
    wide = "bacteria of the gut wall"  # Jaccard 2/5 with {gut, bacteria}
    order, stages = serve(wide, known)
    assert order == serve(wide, None)[0] and "ltr-skipped:unfamiliar" in stages and "ltr" not in stages
    assert "ltr" in serve(wide, known, familiar_jaccard=0.4)[1]  # the threshold is the config's
    assert "ltr" in serve(wide, known, familiar_only=False)[1]
    old = _with_sets(ranker_dir, tmp_path / "old", None)
    with caplog.at_level("INFO", logger="ranking.ltr"):
        assert "ltr" in serve(wide, old)[1]  # saved without its queries: applied to every query, as before
    assert "saved without its training queries" in caplog.text
