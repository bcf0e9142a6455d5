"""Pseudo-relevance feedback (search/feedback.py): RM3's term selection and weights by hand, Rocchio's move of
the query vector, and both through the stores (embedded here; Elasticsearch under the `es` mark) and the
retriever, whose results say what feedback ran and which terms it added."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from ranking.fusion import linear, zscore
from search.documents import Document, Hit, StoredRecord
from search.feedback import DensePRFConfig, RM3Config, expansion_terms, rm3_weights, rocchio
from search.filters import TermFilter
from search.retrieval import HybridRetriever, RetrievalConfig
from search.schema import IndexSchema
from search.stores.base import IndexStore


# -- RM3 by hand ----------------------------------------------------------------------------------------------
def test_rm3_weights_by_hand() -> None:
    cfg = RM3Config(enabled=True, fb_terms=2, orig_weight=0.5, max_df_ratio=1.0)
    # doc 1 (score 2): a×2, b×2 → P(a)=P(b)=.5; doc 2 (score 1): b×1, c×3 → P(b)=.25, P(c)=.75
    feedback = [({"a": 2, "b": 2}, 2.0), ({"b": 1, "c": 3}, 1.0)]
    w = rm3_weights(["q", "q", "a"], feedback, cfg)
    # model: a = 1.0, b = 1.0 + .25 = 1.25, c = .75 → top 2: b, a; L1 → b 1.25/2.25, a 1/2.25
    assert w["b"] == pytest.approx(0.5 * 1.25 / 2.25)
    assert w["a"] == pytest.approx(0.5 * (1 / 3) + 0.5 * 1.0 / 2.25)
    assert w["q"] == pytest.approx(0.5 * (2 / 3))
    assert "c" not in w  # cut by fb_terms
    assert sum(w.values()) == pytest.approx(1.0)
    assert expansion_terms(w, ["q", "a"]) == ["b"]


def test_rm3_drops_terms_common_in_the_collection() -> None:
    cfg = RM3Config(enabled=True, fb_terms=5, orig_weight=0.5, max_df_ratio=0.1)
    feedback = [({"common": 9, "rare": 1}, 1.0)]
    w = rm3_weights(["q"], feedback, cfg, df={"common": 50, "rare": 2}, n_docs=100)
    assert "common" not in w and w["rare"] == pytest.approx(0.5)
    # without statistics (n_docs 0) nothing is filtered
    assert "common" in rm3_weights(["q"], feedback, cfg)


def test_rm3_orig_weight_one_is_the_query() -> None:
    cfg = RM3Config(enabled=True, orig_weight=1.0)
    assert rm3_weights(["x", "y"], [({"z": 3}, 5.0)], cfg) == {"x": 0.5, "y": 0.5}
    assert rm3_weights([], [({"z": 3}, 5.0)], cfg) == {}


# -- Rocchio ------------------------------------------------------------------------------------------------
def test_rocchio_moves_towards_the_documents() -> None:
    q = np.array([1.0, 0.0, 0.0], dtype=np.float32)
    docs = [np.array([0.0, 1.0, 0.0]), np.array([0.0, 0.0, 2.0])]
    moved = rocchio(q, docs, DensePRFConfig(enabled=True, beta=1.0))
    expected = np.array([1.0, 0.5, 0.5]) / np.linalg.norm([1.0, 0.5, 0.5])
    np.testing.assert_allclose(moved, expected, rtol=1e-6)
    np.testing.assert_allclose(rocchio(2 * q, docs, DensePRFConfig(beta=0.0)), q)
    np.testing.assert_allclose(rocchio(q, [], DensePRFConfig(beta=1.0)), q)


def test_zscore_linear_fusion() -> None:
    lex = [Hit(id="a", score=3.0), Hit(id="b", score=1.0)]
    den = [Hit(id="b", score=0.9), Hit(id="c", score=0.7)]
    assert zscore(lex) == {"a": 1.0, "b": -1.0}
    s = linear(lex, den, alpha=0.5, normalization="zscore")
    # missing from a list: that list's lowest z
    assert s == {
        "a": pytest.approx(0.5 * -1 + 0.5 * 1),
        "b": pytest.approx(0.5 * 1 + 0.5 * -1),
        "c": pytest.approx(-1.0),
    }


# -- through a store ----------------------------------------------------------------------------------------
def _unit(*xs: float) -> list[float]:
    v = np.asarray(xs, dtype=np.float32)
    return (v / np.linalg.norm(v)).tolist()


def _rec(doc_id: str, title: str, body: str, vector: list[float], lang: str = "en") -> StoredRecord:
    return StoredRecord(doc=Document(id=doc_id, title=title, body=body, fields={"lang": lang}), vectors=[vector])


# "d4" never says "jaguar" but shares the feedback documents' other words: only RM3 can find it.
CORPUS = [
    _rec("d1", "Jaguar habitat", "The jaguar hunts in rainforest rivers; rainforest cats swim.", _unit(1, 0, 0)),
    _rec("d2", "Jaguar prey", "A jaguar eats caimans near rainforest rivers.", _unit(1, 0.2, 0)),
    _rec("d3", "Car review", "The sedan engine and gearbox were tested on the highway.", _unit(0, 1, 0)),
    _rec("d4", "Big cats of the rainforest", "Rainforest rivers shelter cats that swim.", _unit(0.6, 0, 0.8), "de"),
    _rec("d5", "Gardening", "Tomatoes need sun, water and compost.", _unit(0, 0, 1)),
    _rec("d6", "Cooking", "Pasta with garlic, oil and chili.", _unit(0, 0.7, 0.7)),
]
SCHEMA = IndexSchema(fields={"lang": "keyword"})


class FeedbackContract:
    """Runs against any store fixture that supports feedback."""

    @pytest.fixture
    def index(self, store: IndexStore, index_name: str) -> str:
        version = store.create_version(index_name, 3, SCHEMA)
        assert not store.upsert(version, CORPUS).failures
        store.refresh(version)
        store.switch_alias(index_name, version)
        return index_name

    def test_term_stats(self, store: IndexStore, index: str) -> None:
        stats = store.term_stats(index, ["d1", "d3"])  # type: ignore[attr-defined]
        assert stats.n_docs == len(CORPUS)
        assert stats.docs["d1"]["rainforest"] == 2 and stats.docs["d1"]["jaguar"] == 2
        assert "the" not in stats.docs["d3"]  # stop words are not terms
        assert stats.df["rainforest"] == 3 and stats.df["jaguar"] == 2 and stats.df["sedan"] == 1

    def test_weighted_search_is_the_weighted_sum_of_term_scores(self, store: IndexStore, index: str) -> None:
        one = {h.id: h.score for h in store.bm25_weighted_search(index, {"jaguar": 1.0}, 10)}  # type: ignore[attr-defined]
        two = {h.id: h.score for h in store.bm25_weighted_search(index, {"river": 1.0}, 10)}  # type: ignore[attr-defined]
        both = store.bm25_weighted_search(index, {"jaguar": 2.0, "river": 0.5}, 10)  # type: ignore[attr-defined]
        for h in both:
            assert h.score == pytest.approx(2.0 * one.get(h.id, 0.0) + 0.5 * two.get(h.id, 0.0), rel=1e-4)
        assert [h.score for h in both] == sorted((h.score for h in both), reverse=True)
        plain = {h.id: h.score for h in store.bm25_search(index, "jaguar rivers", 10, with_docs=False)}
        summed = store.bm25_weighted_search(index, {"jaguar": 1.0, "river": 1.0}, 10)  # type: ignore[attr-defined]
        assert {h.id: pytest.approx(h.score, rel=1e-4) for h in summed} == plain
        filtered = store.bm25_weighted_search(index, {"river": 1.0}, 10, [TermFilter(field="lang", value="de")])  # type: ignore[attr-defined]
        assert [h.id for h in filtered] == ["d4"]

    def test_rm3_finds_what_the_query_does_not_say(self, store: IndexStore, index: str) -> None:
        retriever = HybridRetriever(store, None, threads=2)
        try:
            plain = RetrievalConfig(mode="bm25")
            base = retriever.run(index, "jaguar", 10, config=plain, with_docs=False)
            assert "d4" not in {r.id for r in base} and base[0].feedback == [] and base[0].expansion is None
            rm3 = plain.model_copy(update={"rm3": RM3Config(enabled=True, fb_docs=2, max_df_ratio=1.0)})
            out = retriever.run(index, "jaguar", 10, config=rm3, with_docs=False)
        finally:
            retriever.close()
        assert "d4" in {r.id for r in out}
        assert {r.id for r in out[:2]} == {"d1", "d2"}
        assert out[0].feedback == ["rm3"]
        assert out[0].expansion is not None and "rainforest" in out[0].expansion and "jaguar" not in out[0].expansion


class TestEmbeddedFeedback(FeedbackContract):
    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[IndexStore]:
        from search.stores.embedded import EmbeddedStore

        s = EmbeddedStore(tmp_path / "data")
        s.warm_up()
        yield s
        s.close()

    def test_dense_prf(self, store: IndexStore, index: str) -> None:
        vecs = store.doc_vectors(index, ["d1", "d4", "nope"])  # type: ignore[attr-defined]
        assert set(vecs) == {"d1", "d4"}
        np.testing.assert_allclose(vecs["d4"], _unit(0.6, 0, 0.8), rtol=1e-6)
        retriever = HybridRetriever(store, None, threads=2)
        q = np.array(_unit(1, 0, 0.25), dtype=np.float32)
        try:
            plain = RetrievalConfig(mode="dense", depth=3, dense_prf=DensePRFConfig(enabled=False))
            before = retriever.run(index, "x", 3, config=plain, vector=q, with_docs=False)
            prf = plain.model_copy(update={"dense_prf": DensePRFConfig(enabled=True, fb_docs=2, beta=1.0)})
            after = retriever.run(index, "x", 3, config=prf, vector=q, with_docs=False)
        finally:
            retriever.close()
        assert before[0].feedback == [] and after[0].feedback == ["dense-prf"]
        # the moved vector is the Rocchio of q and its top two documents; the scores are its cosines
        moved = rocchio(q, [np.array(_unit(1, 0, 0)), np.array(_unit(1, 0.2, 0))], DensePRFConfig(beta=1.0))
        assert after[0].score == pytest.approx((1 + float(moved @ np.array(_unit(1, 0, 0)))) / 2, rel=1e-5)


@pytest.mark.es
class TestElasticsearchFeedback(FeedbackContract):
    @pytest.fixture
    def store(self, es_url: str, index_name: str) -> Iterator[IndexStore]:
        from search.stores.elasticsearch import ElasticsearchStore

        s = ElasticsearchStore(es_url)
        s.warm_up()
        yield s
        s.client.indices.delete(index=f"{index_name}-v*", ignore_unavailable=True, allow_no_indices=True)
        s.close()


def test_service_explains_the_feedback(tmp_path: Path) -> None:
    import asyncio

    from search.service import SearchConfig, SearchRequest
    from search.stores.embedded import EmbeddedStore
    from search.wiring import build_service

    store = EmbeddedStore(tmp_path / "data")
    store.warm_up()
    version = store.create_version("docs", 3, SCHEMA)
    store.upsert(version, CORPUS)
    store.switch_alias("docs", version)

    async def encode(q: str) -> list[float]:
        return _unit(1, 0, 0.25)

    cfg = RetrievalConfig(
        rm3=RM3Config(enabled=True, fb_docs=2, max_df_ratio=1.0), dense_prf=DensePRFConfig(enabled=True, fb_docs=2)
    )
    svc = build_service(store, SearchConfig(retrieval=cfg, log_features=False), encoder=encode)
    try:
        resp = asyncio.run(svc.search(SearchRequest(query="jaguar", highlight=False)))
        plain = asyncio.run(svc.search(SearchRequest(query="jaguar", mode="dense", highlight=False)))
    finally:
        svc.retriever.close()
        store.close()
    assert resp.stages == ["encode", "bm25", "rm3", "dense", "dense-prf", "fusion:linear"]
    explained = resp.results[0].explanation
    assert explained.stages == ["bm25", "rm3", "dense", "dense-prf", "fusion:linear"]
    assert explained.expansion_terms and "rainforest" in explained.expansion_terms
    assert plain.stages == ["encode", "dense", "dense-prf"] and plain.results[0].explanation.expansion_terms is None


# -- the plain baseline of `sift eval` ------------------------------------------------------------------------
def test_baseline_fuse_by_hand() -> None:
    from training.reference import baseline_fuse

    lex = [Hit(id="a", score=10.0), Hit(id="b", score=6.0), Hit(id="c", score=2.0)]
    den = [Hit(id="c", score=0.9), Hit(id="d", score=0.8), Hit(id="b", score=0.5)]
    # RRF k=60: a 1/61, b 1/62 + 1/63, c 1/63 + 1/61, d 1/62
    assert baseline_fuse(lex, den, "rrf") == ["c", "b", "a", "d"]
    # min-max .5/.5: a .5, b .5*.5 + 0 = .25, c 0 + .5 = .5, d .5*.75 = .375 → a, c tie (by id)
    assert baseline_fuse(lex, den, "linear") == ["a", "c", "d", "b"]
    assert baseline_fuse(lex, den, "rrf", k=2) == ["c", "b"]


def test_eval_runs_the_baseline_and_the_default_pipeline(tmp_path: Path, tiny_embedder_path: Path) -> None:
    import json

    from models.embedder import EmbedderConfig
    from search.settings import Settings
    from training.evaluation import EvalConfig, Evaluator

    root = tmp_path / "beir"
    (root / "qrels").mkdir(parents=True)
    with open(root / "corpus.jsonl", "w") as f:
        for r in CORPUS:
            f.write(json.dumps({"_id": r.doc.id, "title": r.doc.title, "text": r.doc.body}) + "\n")
    (root / "queries.jsonl").write_text(
        json.dumps({"_id": "1", "text": "jaguar rainforest"}) + "\n" + json.dumps({"_id": "2", "text": "pasta"}) + "\n"
    )
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n1\td1\t1\n1\td4\t1\n2\td6\t1\n")
    cfg = EvalConfig(
        dataset=root,
        store="embedded",
        systems=["bm25", "baseline-rrf", "baseline-linear", "hybrid"],
        embedder=EmbedderConfig(model=str(tiny_embedder_path), device="cpu"),
        cache_path=tmp_path / "emb.sqlite",
        data_dir=tmp_path / "data",
    )
    res = Evaluator(cfg, settings=Settings(data_dir=tmp_path / "data", cache_dir=tmp_path / "cache")).run()
    for name, fusion in (("baseline-rrf", "rrf"), ("baseline-linear", "linear"), ("hybrid", cfg.retrieval.fusion)):
        r = res.system(name)
        assert r.status == "ok" and r.mode == "hybrid" and r.fusion == fusion and r.n_queries == 2
        assert 0 < r.metrics["ndcg@10"] <= 1 and r.metrics["recall@100"] == pytest.approx(1.0)
