"""`sift train encoder|reranker|ranker` into the registry and `sift models list|promote|rollback`, end to end on
an embedded index and JSONL logs of synthetic clicks (tiny models, a hundred steps)."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from logs.clicklog import ClickRecord, JsonlClickLog
from logs.querylog import JsonlQueryLog, QueryEvent
from models.registry import LIVE, Registry
from ranking.features import FEATURES
from sift.cli import app
from tests.test_neural_training import synthetic_clicks

INDEX = "neural"
COL = {name: i for i, name in enumerate(FEATURES)}


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


def _features(docs: tuple[str, ...]) -> dict[str, list[float | None]]:
    """Logged page features: the served rank, and a title coverage that says which document is relevant."""
    out: dict[str, list[float | None]] = {}
    for r, d in enumerate(docs):
        row: list[float | None] = [None] * len(FEATURES)
        row[COL["bm25_rank"]] = row[COL["fused_rank"]] = float(r + 1)
        row[COL["fused_score"]] = 1.0 / (r + 1)
        row[COL["title_coverage"]] = 1.0 if d.endswith("-d0") else 0.0
        out[d] = row
    return out


def _write_logs(data_dir: Path, sessions: list[Any]) -> None:
    qlog, clog = JsonlQueryLog(data_dir / "querylog"), JsonlClickLog(data_dir / "clicklog")
    t0 = datetime.now(UTC) - timedelta(hours=1)
    records = []
    for i, s in enumerate(sessions):
        ts = t0 + timedelta(milliseconds=i)
        qid = f"qid-{i}"
        qlog.append(
            QueryEvent(
                query=s.query, query_id=qid, shown=list(s.docs), offset=0, index=INDEX, ts=ts,
                result_count=len(s.docs), features=_features(s.docs),
            )
        )  # fmt: skip
        for r, (d, hit) in enumerate(zip(s.docs, s.clicks, strict=True)):
            if hit:
                records.append(
                    ClickRecord(
                        event_id=f"{qid}-{r}", type="click", event_name="click", query_id=qid, object_ids=[d],
                        positions=[r + 1], ts=ts, received_at=ts, index=INDEX, query=s.query,
                    )
                )  # fmt: skip
    qlog.close()
    clog.append_many(records)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory, tiny_embedder_path: Path) -> Path:
    """An embedded index of the synthetic corpus, its logs, and an app config naming both."""
    from indexing.pipeline import IndexingConfig, IndexingPipeline
    from search.stores.embedded import EmbeddedStore

    root = tmp_path_factory.mktemp("models-cli")
    sessions, texts = synthetic_clicks(120, 1500, seed=0)
    corpus = root / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"_id": d, "title": "", "text": t}) + "\n" for d, t in texts.items()))
    store = EmbeddedStore(root / "indices")
    try:
        IndexingPipeline(store, None, IndexingConfig(embed=False, progress=False)).build(corpus, INDEX)
    finally:
        store.close()
    _write_logs(root, sessions)
    app_cfg = {
        "data_dir": str(root),
        "search": {"default_index": INDEX, "retrieval": {"mode": "bm25"}},
        "embedder": {"model": str(tiny_embedder_path)},
        "reranker": {"model": None},
        "suggest": {"enabled": False},
        "summarizer": None,
    }
    (root / "app.yaml").write_text(yaml.safe_dump(app_cfg))
    return root


def run(*args: str, code: int = 0) -> Any:
    res = CliRunner().invoke(app, list(args))
    assert res.exit_code == code, res.output
    return res


def _json_line(output: str) -> dict[str, Any]:
    return json.loads(next(line for line in output.splitlines() if line.startswith('{"')))


def test_reranker_train_promote_refuse_shuffled_rollback(workspace: Path, tiny_reranker_path: Path) -> None:
    reg_dir = workspace / "registry-reranker"
    common = ["--config", str(workspace / "app.yaml"), "--registry", str(reg_dir)]
    train = ["train", "reranker", *common, "--base", str(tiny_reranker_path), "--max-steps", "100"]
    train += ["--learning-rate", "2e-3", "--max-seq-length", "48", "--no-progress"]
    good = _json_line(run(*train).stdout)
    assert good["kind"] == "reranker" and good["heldout_ndcg10"] > good["heldout_ndcg10_served"] + 0.2, good
    assert "rerank20_p50_ms" in good and Path(good["path"]).is_dir()
    bad = _json_line(run(*train, "--shuffle-labels").stdout)
    assert bad["shuffled_labels"] == 1 and bad["version"] != good["version"]

    listed = run("models", "list", "reranker", "--registry", str(reg_dir)).stdout
    assert "live: none" in listed and good["version"] in listed and bad["version"] in listed

    promoted = _json_line(run("models", "promote", "reranker", good["version"], *common).stdout)
    assert promoted["promoted"] and promoted["live_before"] is None and promoted["margin"] == 0.005
    assert promoted["candidate"] == pytest.approx(good["heldout_ndcg10"], abs=2e-3)
    assert promoted["live_score"] == pytest.approx(good["heldout_ndcg10_served"], abs=2e-3)
    assert promoted["evaluation"]["source"].startswith("clicks: held-out") and promoted["evaluation"]["queries"] > 10
    pointer = (reg_dir / "reranker" / LIVE).read_bytes()

    refused = run("models", "promote", "reranker", bad["version"], *common, code=1)
    report = _json_line(refused.stdout)
    assert not report["promoted"] and report["live_before"] == good["version"]
    assert report["candidate"] < report["live_score"] and "not promoted" in refused.output
    assert (reg_dir / "reranker" / LIVE).read_bytes() == pointer  # nothing changed
    assert f"* {good['version']}" in run("models", "list", "--registry", str(reg_dir)).stdout

    rolled = json.loads(run("models", "rollback", "reranker", "--registry", str(reg_dir)).stdout)
    assert rolled == {"kind": "reranker", "live": None, "was": good["version"]}
    run("models", "rollback", "reranker", "--registry", str(reg_dir), code=1)


def test_encoder_and_ranker_register_and_promote(
    workspace: Path, tiny_embedder_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SIFT_DATA_DIR", str(workspace / "data"))  # the default registry: <data_dir>/registry
    reg = Registry(workspace / "data" / "registry")
    config = ["--config", str(workspace / "app.yaml")]
    enc = _json_line(
        run(
            "train", "encoder", *config, "--max-steps", "100", "--learning-rate", "3e-3", "--max-seq-length", "32",
            "--no-progress",
        ).stdout
    )  # fmt: skip
    assert reg.card("encoder", enc["version"]).base_model == str(tiny_embedder_path)  # the app's embedder
    assert enc["heldout_ndcg10"] > enc["heldout_ndcg10_base"] + 0.2, enc
    promoted = _json_line(run("models", "promote", "encoder", enc["version"], *config).stdout)
    assert promoted["promoted"] and reg.live("encoder") == enc["version"]
    again = run("models", "promote", "encoder", enc["version"], *config)
    assert "already live" in again.output

    beir = workspace / "beir"
    (beir / "qrels").mkdir(parents=True, exist_ok=True)
    (beir / "corpus.jsonl").write_text((workspace / "corpus.jsonl").read_text())
    (beir / "queries.jsonl").write_text(json.dumps({"_id": "t1", "text": "code block keyword"}) + "\n")
    (beir / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nt1\tq0-d0\t1\n")
    judged = run("models", "promote", "encoder", enc["version"], *config, "--dataset", str(beir), "--split", "test",
                 "--allow-test")  # fmt: skip
    assert "already live" in judged.output  # evaluated only when it could change something
    bad_split = run("models", "promote", "ranker", "x", *config, "--dataset", str(beir), code=2)
    assert "--dataset is for encoders and rerankers" in bad_split.output

    res = run("train", "ranker", *config, "--no-ips-gate")  # the synthetic log explored nothing
    ranker = json.loads(res.stdout.splitlines()[0])
    assert ranker["version"] in {c.version for c in reg.versions("ranker")}
    path = reg.path("ranker", ranker["version"])
    assert (path / "model.txt").is_file() and (path / "meta.json").is_file()
    refused = run("models", "promote", "ranker", ranker["version"], *config, code=1)
    assert "no pass of the counterfactual gate" in refused.output
    report = _json_line(run("models", "promote", "ranker", ranker["version"], *config, "--no-ips-gate").stdout)
    assert report["promoted"] and report["candidate"] > report["live_score"] and report["evaluation"]["rows"] > 0
    out = workspace / "ranker-folder"
    run("train", "ranker", *config, "--out", str(out), "--no-ips-gate")
    assert (out / "model.txt").is_file() and len(reg.versions("ranker")) == 1  # --out writes no version
    listed = json.loads(run("models", "list", "--json").stdout)
    assert listed["ranker"]["live"] == ranker["version"] and listed["encoder"]["live"] == enc["version"]
    assert not math.isnan(listed["encoder"]["versions"][0]["metrics"]["heldout_ndcg10"])


def test_beir_evaluation_and_errors(workspace: Path, tiny_reranker_path: Path) -> None:
    from models.registry import ModelCard
    from search.settings import Settings
    from search.stores.factory import make_store
    from training.neural_data import beir_eval_set, evaluate_reranker

    reg_dir = workspace / "registry-errors"
    beir = workspace / "beir-errors"
    (beir / "qrels").mkdir(parents=True)
    (beir / "corpus.jsonl").write_text("")
    text = next(json.loads(line)["text"] for line in open(workspace / "corpus.jsonl") if '"q0-d0"' in line)
    (beir / "queries.jsonl").write_text(json.dumps({"_id": "t1", "text": text}) + "\n")
    (beir / "qrels" / "test.tsv").write_text("t1\tq0-d0\t1\n")
    store = make_store("embedded", Settings(), data_dir=workspace)
    try:
        evalset = beir_eval_set(beir, "test", store, INDEX, depth=20)
    finally:
        store.close()
    assert evalset.source.startswith("beir: beir-errors/test") and len(evalset.queries) == 1
    assert "q0-d0" in evalset.queries[0].candidates and len(evalset.queries[0].candidates) == 20
    assert evaluate_reranker(evalset, None) == 1.0  # BM25 order: the document's own words find it first

    Registry(reg_dir).register(ModelCard(kind="reranker", version="r1", data_hash="x"), lambda d: None)
    common = ["--config", str(workspace / "app.yaml"), "--registry", str(reg_dir)]
    assert "no reranker version 'nope'" in run("models", "promote", "reranker", "nope", *common, code=2).output
    assert "unknown model kind" in run("models", "list", "tokenizer", "--registry", str(reg_dir), code=2).output
    assert "no lm version 'v'" in run("models", "promote", "lm", "v", *common, code=2).output
    missing = run("models", "promote", "reranker", "r1", *common, "--dataset", str(workspace / "none"), code=2)
    assert "is not a BEIR folder" in missing.output
    no_index = run("train", "reranker", *common, "--index", "missing", "--base", str(tiny_reranker_path), code=1)
    assert "search impression" in no_index.output  # no searches of that index in the logs
    assert (reg_dir / "reranker" / LIVE).exists() is False
    bad_base = run("train", "reranker", *common, "--base", "registry:reranker", code=2)
    assert "no live reranker" in bad_base.output
