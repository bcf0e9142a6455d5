"""Offline evaluation: metric values checked by hand, and small end-to-end runs on both stores."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from training.beir import load_beir, read_qrels
from training.evaluation import NO_RANKER, NO_RERANKER, EvalConfig, Evaluator
from training.metrics import (
    fit_query,
    mean_metrics,
    per_query_deltas,
    per_query_metrics,
    ranking_to_run,
    summarize_deltas,
)
from training.report import write_outputs

# -- metrics on hand-built qrels and runs ---------------------------------------------------------------------
QRELS = {
    "q1": {"a": 3, "b": 1, "c": 0},  # c is judged but not relevant
    "q2": {"d": 1},
    "q3": {"g": 2, "h": 2},
    "q4": {"z": 1},  # nothing retrieved for q4
    "q5": {"y": 0, "w": -1},  # no relevant document: not evaluated at all
}
RUN = {
    "q1": ranking_to_run(["x", "a", "c", "b"]),
    "q2": ranking_to_run([f"n{i}" for i in range(10)] + ["d"]),  # relevant at rank 11
    "q3": ranking_to_run(["g", "m"]),
    "q5": ranking_to_run(["y"]),
}


def test_ndcg_mrr_recall_by_hand() -> None:
    pq = per_query_metrics(QRELS, RUN)
    assert set(pq["ndcg@10"]) == {"q1", "q2", "q3", "q4"}
    # q1: gains 3 at rank 2 and 1 at rank 4; ideal: 3 at rank 1, 1 at rank 2 (linear gains, as trec_eval).
    dcg = 3 / math.log2(3) + 1 / math.log2(5)
    idcg = 3 / math.log2(2) + 1 / math.log2(3)
    assert pq["ndcg@10"]["q1"] == pytest.approx(dcg / idcg)
    assert pq["ndcg@10"]["q1"] == pytest.approx(0.639909, abs=1e-6)
    assert pq["mrr@10"]["q1"] == pytest.approx(0.5)
    assert pq["recall@100"]["q1"] == pytest.approx(1.0)  # c (grade 0) does not count
    # q2: the only relevant document sits at rank 11: outside @10, inside @100.
    assert pq["ndcg@10"]["q2"] == 0.0
    assert pq["mrr@10"]["q2"] == 0.0
    assert pq["recall@100"]["q2"] == 1.0
    # q3: one of two equally graded documents at rank 1.
    assert pq["ndcg@10"]["q3"] == pytest.approx(2 / (2 + 2 / math.log2(3)))
    assert pq["mrr@10"]["q3"] == 1.0
    assert pq["recall@100"]["q3"] == pytest.approx(0.5)
    # q4: judged but absent from the run: zeros, and it still counts in the mean.
    assert pq["ndcg@10"]["q4"] == pq["mrr@10"]["q4"] == pq["recall@100"]["q4"] == 0.0
    means = mean_metrics(pq)
    assert means["mrr@10"] == pytest.approx((0.5 + 0 + 1 + 0) / 4)
    assert means["recall@100"] == pytest.approx((1 + 1 + 0.5 + 0) / 4)


def test_service_order_is_kept_even_with_tied_scores() -> None:
    """ranx sorts by score: ranking_to_run must encode the service's order, not its (possibly tied) scores."""
    pq = per_query_metrics({"q": {"b": 1}}, {"q": ranking_to_run(["a", "b", "c"])})
    assert pq["mrr@10"]["q"] == pytest.approx(0.5)
    pq = per_query_metrics({"q": {"b": 1}}, {"q": ranking_to_run(["b", "a", "c"])})
    assert pq["mrr@10"]["q"] == 1.0


def test_deltas_against_baseline() -> None:
    base = {"q1": 0.5, "q2": 0.2, "q3": 0.7}
    sys_ = {"q1": 0.75, "q2": 0.2, "q3": 0.1, "q9": 1.0}
    d = per_query_deltas(sys_, base)
    assert d == pytest.approx({"q1": 0.25, "q2": 0.0, "q3": -0.6})
    s = summarize_deltas(d)
    assert (s.wins, s.losses, s.ties) == (1, 1, 1)
    assert s.mean == pytest.approx((0.25 - 0.6) / 3)


def test_read_qrels_keeps_grades_and_header(tmp_path: Path) -> None:
    p = tmp_path / "q.tsv"
    p.write_text("query-id\tcorpus-id\tscore\r\n1\t10\t3\r\n1\t11\t0\r\n2\t12\t-1\r\n")
    assert read_qrels(p) == {"1": {"10": 3, "11": 0}, "2": {"12": -1}}


def test_fit_query_cuts_at_a_word_boundary() -> None:
    assert fit_query("  short   query ") == "short query"
    long = " ".join(["word"] * 400)
    cut = fit_query(long)
    assert len(cut) <= 1000 and cut.endswith("word") and long.startswith(cut)


# -- end to end on a tiny BEIR folder -------------------------------------------------------------------------
DOCS = [
    ("d1", "Volcanoes", "Lava flows from a volcanic eruption cool into basalt rock."),
    ("d2", "Coral reefs", "Coral reefs bleach when ocean water warms and algae leave the polyps."),
    ("d3", "Honey bees", "Honey bees communicate the direction of flowers with a waggle dance."),
    ("d4", "Glaciers", "Glaciers carve valleys as compacted ice moves slowly downhill."),
    ("d5", "Comets", "A comet grows a tail of gas and dust when it nears the sun."),
    ("d6", "Tides", "Ocean tides follow the pull of the moon and, less strongly, the sun."),
    ("d7", "Photosynthesis", "Leaves turn sunlight, water and carbon dioxide into sugar and oxygen."),
    ("d8", "Earthquakes", "Earthquakes release strain stored where tectonic plates lock together."),
]
QUERIES = [
    ("1", "basalt from volcanic lava"),
    ("2", "waggle dance of honey bees"),
    ("3", "why do coral reefs bleach"),
    ("4", "tectonic plates strain"),
    ("5", "a query nobody judged"),
]
TEST_QRELS = [("1", "d1", 2), ("2", "d3", 1), ("3", "d2", 2), ("3", "d6", 0), ("4", "d8", 1)]


@pytest.fixture
def tiny_beir(tmp_path: Path) -> Path:
    root = tmp_path / "tiny-beir"
    (root / "qrels").mkdir(parents=True)
    with open(root / "corpus.jsonl", "w") as f:
        for i, t, b in DOCS:
            f.write(json.dumps({"_id": i, "title": t, "text": b}) + "\n")
    with open(root / "queries.jsonl", "w") as f:
        for i, t in QUERIES:
            f.write(json.dumps({"_id": i, "text": t}) + "\n")
    lines = ["query-id\tcorpus-id\tscore"] + [f"{q}\t{d}\t{s}" for q, d, s in TEST_QRELS]
    (root / "qrels" / "test.tsv").write_text("\n".join(lines) + "\n")
    return root


def test_load_beir_skips_queries_without_relevant_documents(tiny_beir: Path) -> None:
    data = load_beir(tiny_beir)
    assert list(data.qrels) == ["1", "2", "3", "4"]
    assert data.qrels["3"] == {"d2": 2}
    assert data.queries_without_qrels == 1
    assert data.name == "tiny-beir"


def _config(tiny_beir: Path, tmp_path: Path, tiny_embedder_path: Path, **kw: object) -> EvalConfig:
    from models.embedder import EmbedderConfig

    return EvalConfig(
        dataset=tiny_beir,
        embedder=EmbedderConfig(model=str(tiny_embedder_path), device="cpu"),
        cache_path=tmp_path / "emb.sqlite",
        data_dir=tmp_path / "data",
        **kw,  # type: ignore[arg-type]
    )


def test_end_to_end_embedded_writes_outputs_and_reuses_the_cache(
    tiny_beir: Path, tmp_path: Path, tiny_embedder_path: Path, tiny_embedder
) -> None:  # type: ignore[no-untyped-def]
    from search.settings import Settings

    settings = Settings(data_dir=tmp_path / "data", cache_dir=tmp_path / "cache")
    cfg = _config(tiny_beir, tmp_path, tiny_embedder_path, store="embedded", index="eval-tiny")
    first = Evaluator(cfg, settings=settings, embedder=tiny_embedder).run()
    assert first.n_queries == 4 and first.queries_without_qrels == 1
    assert first.build.indexed == 8 and first.build.encoded == first.build.chunks > 0
    assert first.query_encoding.encoded == 4
    by = {s.name: s for s in first.systems}
    assert [s.name for s in first.systems] == [
        "bm25",
        "bm25-reference",
        "dense",
        "baseline-rrf",
        "baseline-linear",
        "hybrid",
        "hybrid-rrf",
        "hybrid-linear",
        "hybrid+rerank",
        "hybrid-linear+ltr",
        "hybrid-linear+encoder",
        "hybrid-linear+rerank",
        "full",
    ]
    assert by["hybrid-linear+ltr"].status == "not run"  # no ranker given
    # Every judged query has its relevant document as the only exact lexical match.
    assert by["bm25"].metrics["ndcg@10"] == pytest.approx(1.0)
    assert by["bm25"].metrics["mrr@10"] == pytest.approx(1.0)
    assert by["hybrid+rerank"].status == "not run" and by["hybrid+rerank"].reason == NO_RERANKER
    for name in ("dense", "hybrid-rrf", "hybrid-linear"):
        s = by[name]
        assert s.status == "ok" and s.n_queries == 4
        assert set(s.delta_vs_bm25) == {"1", "2", "3", "4"}
        assert s.delta_summary is not None
        assert s.delta_vs_bm25["1"] == pytest.approx(s.per_query["ndcg@10"]["1"] - 1.0)
        assert 0.0 <= s.metrics["recall@100"] <= 1.0
    # With 8 documents and depth 100, every system retrieves everything: recall is 1 across the board.
    assert by["dense"].metrics["recall@100"] == pytest.approx(1.0)

    out = tmp_path / "out"
    paths = write_outputs(first, out)
    saved = json.loads(paths["json"].read_text())
    assert saved["systems"][0]["per_query"]["ndcg@10"]["1"] == pytest.approx(1.0)
    md = paths["md"].read_text()
    assert "| bm25 | 1.0000 | 1.0000 | 1.0000 |" in md
    assert f"not run: {NO_RERANKER}" in md
    for png in (paths["metrics_png"], paths["deltas_png"]):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000

    # A second run encodes nothing: documents and queries come from the cache; the numbers do not move.
    second = Evaluator(cfg, settings=settings, embedder=tiny_embedder).run()
    assert second.build.encoded == 0 and second.build.cache_hits == second.build.chunks
    assert second.query_encoding.encoded == 0 and second.query_encoding.seconds == 0.0
    assert {s.name: s.metrics for s in second.systems} == {s.name: s.metrics for s in first.systems}


def test_rerank_system_goes_through_the_service_reranker(
    tiny_beir: Path, tmp_path: Path, tiny_embedder_path: Path, tiny_embedder
) -> None:  # type: ignore[no-untyped-def]
    from search.settings import Settings
    from tests.tiny_models import build_tiny_cross_encoder

    ce = build_tiny_cross_encoder(tmp_path / "ce")
    settings = Settings(data_dir=tmp_path / "data", cache_dir=tmp_path / "cache")
    cfg = _config(
        tiny_beir, tmp_path, tiny_embedder_path, store="embedded", systems=["bm25", "hybrid+rerank"], reranker=str(ce)
    )
    res = Evaluator(cfg, settings=settings, embedder=tiny_embedder).run()
    rr = res.system("hybrid+rerank")
    assert rr.status == "ok" and rr.fusion == "linear"
    assert rr.reranked_queries == 4


def test_reference_bm25_runs_beside_the_stores_bm25(tiny_beir: Path, tmp_path: Path, tiny_embedder_path: Path) -> None:
    """bm25s over corpus.jsonl, outside the service, on each query's full text (not cut to the API's limit)."""
    from search.settings import Settings

    long_query = " ".join(["filler"] * 250) + " glaciers carve valleys"  # past 1,000 characters
    with open(tiny_beir / "queries.jsonl", "a") as f:
        f.write(json.dumps({"_id": "6", "text": long_query}) + "\n")
    with open(tiny_beir / "qrels" / "test.tsv", "a") as f:
        f.write("6\td4\t1\n")
    settings = Settings(data_dir=tmp_path / "data", cache_dir=tmp_path / "cache")
    cfg = _config(tiny_beir, tmp_path, tiny_embedder_path, store="embedded", systems=["bm25", "bm25-reference"])
    res = Evaluator(cfg, settings=settings).run()
    assert res.truncated_queries == 1
    bm25, ref = res.system("bm25"), res.system("bm25-reference")
    assert ref.status == "ok" and ref.mode == "bm25" and ref.n_queries == 5
    assert all(ref.per_query["ndcg@10"][q] == pytest.approx(1.0) for q in "12346")
    assert bm25.per_query["ndcg@10"]["6"] == 0.0  # the service saw only the filler
    assert ref.delta_vs_bm25["6"] == pytest.approx(1.0) and ref.delta_summary is not None


def test_ltr_system_runs_the_learnt_stage(
    tiny_beir: Path, tmp_path: Path, tiny_embedder_path: Path, tiny_embedder
) -> None:  # type: ignore[no-untyped-def]
    """hybrid-linear+ltr is hybrid-linear with the ranker of EvalConfig.ranker re-ordering the head through the
    service; without a ranker it is "not run" with the reason. A ranker that prefers the served order's bottom
    (trained so on purpose) must change the scores."""
    import numpy as np

    from ranking.features import FEATURES
    from ranking.ltr import save_ranker
    from search.settings import Settings
    from training.ltr import RankerData, RankerTrainConfig, train_ranker

    rng = np.random.default_rng(0)
    x = rng.random((3000, len(FEATURES)))
    x[:, FEATURES.index("fused_rank")] = np.tile(np.arange(1, 11), 300)
    y = (x[:, FEATURES.index("fused_rank")] >= 6).astype(float) * 4
    data = RankerData(x, y, [f"q{i // 10:03d}" for i in range(3000)], [], {})
    booster, meta = train_ranker(data, RankerTrainConfig(base_weight=0.0))
    meta = meta.model_copy(update={"familiar": None})  # learnt "q000".., not the test queries: apply to all
    ranker = save_ranker(booster, meta, tmp_path / "ranker")
    settings = Settings(data_dir=tmp_path / "data", cache_dir=tmp_path / "cache")
    systems = ["hybrid-linear", "hybrid-linear+ltr"]
    cfg = _config(tiny_beir, tmp_path, tiny_embedder_path, store="embedded", systems=systems)
    res = Evaluator(cfg, settings=settings, embedder=tiny_embedder).run()
    assert res.system("hybrid-linear+ltr").status == "not run"
    assert res.system("hybrid-linear+ltr").reason == NO_RANKER
    cfg = cfg.model_copy(update={"ranker": ranker, "rebuild": False})
    res = Evaluator(cfg, settings=settings, embedder=tiny_embedder).run()
    base, ltr = res.system("hybrid-linear"), res.system("hybrid-linear+ltr")
    assert base.status == ltr.status == "ok" and ltr.fusion == "linear"
    assert ltr.metrics["ndcg@10"] < base.metrics["ndcg@10"], (ltr.metrics, base.metrics)
    # as the server does: saved with the queries it learnt from, none familiar here, the fused order is scored
    familiar = save_ranker(booster, meta.model_copy(update={"familiar": [["q000"]]}), tmp_path / "familiar")
    res = Evaluator(cfg.model_copy(update={"ranker": familiar}), settings=settings, embedder=tiny_embedder).run()
    assert res.system("hybrid-linear+ltr").metrics == res.system("hybrid-linear").metrics


def test_pipeline_systems_need_their_models_and_use_them(
    tiny_beir: Path, tmp_path: Path, tiny_embedder_path: Path, tiny_embedder
) -> None:  # type: ignore[no-untyped-def]
    """+encoder searches its own index built with the trained encoder; +rerank and full name what they lack."""
    import numpy as np

    from ranking.features import FEATURES
    from ranking.ltr import save_ranker
    from search.settings import Settings
    from search.stores.embedded import EmbeddedStore
    from tests.tiny_models import build_tiny_cross_encoder
    from training.evaluation import NO_ENCODER
    from training.ltr import RankerData, RankerTrainConfig, train_ranker

    rng = np.random.default_rng(0)
    x = rng.random((1000, len(FEATURES)))
    y = (x[:, FEATURES.index("title_coverage")] > 0.5).astype(float) * 4
    booster, meta = train_ranker(
        RankerData(x, y, [f"q{i // 10:03d}" for i in range(1000)], [], {}), RankerTrainConfig()
    )
    ranker = save_ranker(booster, meta, tmp_path / "ranker")
    settings = Settings(data_dir=tmp_path / "data", cache_dir=tmp_path / "cache")
    systems = ["hybrid-linear", "hybrid-linear+encoder", "hybrid-linear+rerank", "full"]
    cfg = _config(tiny_beir, tmp_path, tiny_embedder_path, store="embedded", systems=systems)
    res = Evaluator(cfg, settings=settings, embedder=tiny_embedder).run()
    assert res.system("hybrid-linear+encoder").reason == NO_ENCODER
    assert res.system("hybrid-linear+rerank").reason == NO_RERANKER and res.system("full").reason == NO_RANKER
    # full serves what it is given: with the encoder alone it is hybrid-linear+encoder
    only = Evaluator(cfg.model_copy(update={"encoder": str(tiny_embedder_path)}), settings=settings).run()
    assert only.system("full").status == "ok" and only.system("full").reranked_queries == 0
    assert only.system("full").per_query == only.system("hybrid-linear+encoder").per_query
    ce = build_tiny_cross_encoder(tmp_path / "ce")
    cfg = cfg.model_copy(update={"encoder": str(tiny_embedder_path), "reranker": str(ce), "ranker": ranker})
    res = Evaluator(cfg, settings=settings, embedder=tiny_embedder).run()
    assert all(s.status == "ok" for s in res.systems), [(s.name, s.reason) for s in res.systems]
    store = EmbeddedStore(tmp_path / "data" / "indices")
    assert store.current_version(f"{res.index}-encoder") is not None  # the trained encoder's own index
    store.close()
    # the "trained" encoder here is the same tiny model, so its index must rank exactly as the first one does
    enc = res.system("hybrid-linear+encoder")
    assert enc.per_query == res.system("hybrid-linear").per_query
    assert res.system("full").reranked_queries == res.system("hybrid-linear+rerank").reranked_queries == 4


def test_cli_names_the_same_systems() -> None:
    from sift.eval_cli import SYSTEM_NAMES
    from training.evaluation import SYSTEMS

    assert tuple(SYSTEMS) == SYSTEM_NAMES


def test_unknown_system_is_refused(tiny_beir: Path, tmp_path: Path, tiny_embedder_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown system"):
        Evaluator(_config(tiny_beir, tmp_path, tiny_embedder_path, systems=["bm25", "splade"]))


def test_cli_embedded(
    tiny_beir: Path, tmp_path: Path, tiny_embedder_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import typer
    from typer.testing import CliRunner

    from sift.eval_cli import eval_cmd

    monkeypatch.setenv("SIFT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("SIFT_DATA_DIR", str(tmp_path / "data"))
    app = typer.Typer()
    app.command("eval")(eval_cmd)
    app.command("noop")(lambda: None)  # two commands, so typer keeps the sub-command name
    out = tmp_path / "cli-out"
    args = ["eval", "--dataset", str(tiny_beir), "--store", "embedded", "--systems", "bm25,dense,hybrid-linear"]
    args += ["--out", str(out), "--model", str(tiny_embedder_path), "--alpha", "0.3", "--quiet"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "| bm25 | 1.0000 |" in res.output
    saved = json.loads((out / "results.json").read_text())
    assert saved["retrieval"]["alpha"] == 0.3
    assert saved["index"] == "eval-tiny-beir"
    assert [s["name"] for s in saved["systems"]] == ["bm25", "dense", "hybrid-linear"]
    assert (tmp_path / "cache" / "embeddings.sqlite").is_file()
    assert (out / "metrics.png").is_file() and (out / "deltas.png").is_file()

    bad = CliRunner().invoke(app, ["eval", "--dataset", str(tiny_beir), "--systems", "bm25,nope"])
    assert bad.exit_code == 2


@pytest.mark.es
def test_end_to_end_elasticsearch(
    tiny_beir: Path, tmp_path: Path, tiny_embedder_path: Path, tiny_embedder, es_url: str, index_name: str
) -> None:  # type: ignore[no-untyped-def]
    from search.settings import Settings
    from search.stores.elasticsearch import ElasticsearchStore

    store = ElasticsearchStore(es_url)
    settings = Settings(data_dir=tmp_path / "data", cache_dir=tmp_path / "cache")
    cfg = _config(tiny_beir, tmp_path, tiny_embedder_path, store="es", index=index_name)
    try:
        res = Evaluator(cfg, store=store, settings=settings, embedder=tiny_embedder).run()
    finally:
        store.client.indices.delete(index=f"{index_name}-v*", ignore_unavailable=True, allow_no_indices=True)
        store.close()
    assert res.build.indexed == 8
    by = {s.name: s for s in res.systems}
    assert by["bm25"].metrics["ndcg@10"] == pytest.approx(1.0)
    assert by["dense"].metrics["recall@100"] == pytest.approx(1.0)
    assert by["hybrid-rrf"].status == by["hybrid-linear"].status == "ok"
    assert by["hybrid+rerank"].reason == NO_RERANKER
