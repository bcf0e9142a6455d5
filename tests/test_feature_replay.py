"""Features for impressions logged without them (imported click logs), replayed against the current index with
the serving code: Sift's own impressions get back the features they were served with, documents Sift does
not retrieve get the documented values, and `sift train ranker` replays on its own."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from logs.querylog import QueryEvent
from ranking.features import FEATURES
from sift.cli import app
from tests.ubi_native import INDEX, app_dict, native_logs, same_rows, training_rows

COL = {name: i for i, name in enumerate(FEATURES)}


@pytest.fixture(scope="module")
def native(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return native_logs(tmp_path_factory.mktemp("replay-native"), sessions=200)


def backend_for(config: Path) -> Any:
    from search.settings import Settings
    from serving.config import AppConfig
    from serving.local import local_backend

    return local_backend(AppConfig.model_validate(yaml.safe_load(config.read_text())), Settings())


def test_replay_gives_back_the_served_features(native: Path) -> None:
    from sift.clicks_cli import read_logs
    from training.feature_replay import needs_replay, replay_features

    imps, _ = read_logs(native)
    assert imps and not needs_replay(imps)
    stripped = [e.model_copy(update={"features": None}) for e in imps]
    backend = backend_for(native)
    try:
        replayed, report = replay_features(stripped, backend.service, INDEX, progress=False)
    finally:
        backend.suggest.close()
        backend.store.close()
    assert report.impressions == len(imps) and report.not_retrieved == report.missing_docs == 0
    assert report.queries == 6 < len(imps)  # one retrieval per distinct query, whatever the traffic
    assert [e.features for e in replayed] == [e.features for e in imps]


def test_hybrid_and_reranked_features_replay_as_served(
    tmp_path: Path, tiny_embedder: Any, tiny_embedder_path: Path, tiny_reranker_path: Path
) -> None:
    """Dense score and rank, linear fusion and the cross-encoder's scores of the head come back too."""
    from sift.clicks_cli import read_logs
    from training.feature_replay import replay_features

    config = native_logs(tmp_path, 60, (tiny_embedder_path, tiny_reranker_path), tiny_embedder)
    imps, _ = read_logs(config)
    assert all((e.versions or {}).get("retrieval") == "hybrid-linear" for e in imps)
    served = [row for e in imps for row in (e.features or {}).values()]
    assert any(r[COL["dense_rank"]] is not None for r in served) and any(r[COL["rerank_score"]] for r in served)
    backend = backend_for(config)
    try:
        stripped = [e.model_copy(update={"features": None}) for e in imps]
        replayed, report = replay_features(stripped, backend.service, INDEX, progress=False)
    finally:
        backend.suggest.close()
        backend.store.close()
    assert report.queries == 6 and report.not_retrieved == 0
    for e, r in zip(imps, replayed, strict=True):
        assert r.features is not None and e.features is not None and r.features.keys() == e.features.keys()
        for doc, row in e.features.items():
            assert r.features[doc] == row, (e.query, doc)


def test_documents_sift_does_not_retrieve(native: Path) -> None:
    """A shown document the index does not retrieve for the query still gets a row: text features from the
    document, no retriever evidence, fused score 0 and rank one past the fused list; a document gone from the
    index has no text features either."""
    from training.feature_replay import replay_features

    imp = QueryEvent(query="vitamin d", query_id="x", shown=["d8", "d1", "gone"], offset=0, index=INDEX)
    backend = backend_for(native)
    try:
        [out], report = replay_features([imp], backend.service, INDEX, progress=False)
        fused = backend.service.retriever.run(INDEX, "vitamin d", 100, with_docs=False)
    finally:
        backend.suggest.close()
        backend.store.close()
    assert report.not_retrieved == 2 and report.missing_docs == 1 and report.rows == 3
    assert out.features is not None
    hit, foreign, gone = out.features["d8"], out.features["d1"], out.features["gone"]
    rank = {r.id: i for i, r in enumerate(fused, start=1)}
    assert hit[COL["fused_rank"]] == rank["d8"] and hit[COL["bm25_score"]] is not None  # "vitamin d trial 8"
    assert hit[COL["title_coverage"]] == 1.0 and "d1" not in rank
    assert foreign[COL["bm25_score"]] is None and foreign[COL["bm25_rank"]] is None
    assert foreign[COL["fused_score"]] == 0.0 and foreign[COL["fused_rank"]] == len(fused) + 1
    assert foreign[COL["body_coverage"]] == 0.0 and foreign[COL["doc_length"]] == 8  # "insulin resistance..." x2
    assert gone[COL["fused_rank"]] == len(fused) + 1 and gone[COL["doc_length"]] is None
    assert all(row[COL["click_prior"]] is None and row[COL["rerank_score"]] is None for row in out.features.values())


def _strip_features(path: Path) -> None:
    docs = [json.loads(line) for line in path.read_text().splitlines()]
    for d in docs:
        d["query_attributes"].pop("features")
    path.write_text("".join(json.dumps(d) + "\n" for d in docs))


def test_imported_logs_without_features_train_on_replayed_rows(native: Path, tmp_path: Path) -> None:
    """Export, drop the features, import into fresh logs over the same index: the rows the ranker trains on,
    features replayed, are the native ones; `sift train ranker` replays by itself."""
    from sift.clicks_cli import read_logs
    from sift.logs_cli import with_replayed_features
    from training.click_logs import sessions_from_logs
    from training.ltr import RankerTrainConfig, ranker_data

    out = tmp_path / "export"
    assert CliRunner().invoke(app, ["logs", "export", "--config", str(native), "--out", str(out)]).exit_code == 0
    _strip_features(out / "queries.ndjson")
    cfg = app_dict(native.parent)
    cfg["query_log"] = {"directory": str(tmp_path / "querylog")}
    cfg["click_log"] = {"directory": str(tmp_path / "clicklog")}
    fresh = tmp_path / "app.yaml"
    fresh.write_text(yaml.safe_dump(cfg))
    files = ["--queries", str(out / "queries.ndjson"), "--events", str(out / "events.ndjson")]
    res = CliRunner().invoke(app, ["clicks", "import", "--format", "ubi", "--config", str(fresh), *files])
    assert res.exit_code == 0, res.output

    imps, clicks = read_logs(fresh)
    assert imps and all(e.features is None for e in imps)
    with pytest.raises(ValueError, match="carries ranking features"):
        ranker_data(imps, sessions_from_logs(imps, clicks), RankerTrainConfig())
    replayed = with_replayed_features(imps, fresh, None)
    data, _ = ranker_data(replayed, sessions_from_logs(replayed, clicks), RankerTrainConfig())
    native_rows, _ = training_rows(native)
    assert same_rows(native_rows, data) and not math.isnan(data.x[0, COL["bm25_score"]])

    loose = ["--confidence", "0", "--min-gain", "-1", "--no-ips-gate"]  # no exploration in this log
    trained = CliRunner().invoke(app, ["train", "ranker", "--config", str(fresh), "--out", str(tmp_path / "r"), *loose])
    assert trained.exit_code == 0, trained.output
    assert "replayed features" in trained.output and (tmp_path / "r" / "model.txt").is_file()
    assert json.loads(_summary(trained.output))["rows"] == len(data.y)


def _summary(output: str) -> str:
    line = next(line for line in output.splitlines() if '{"version"' in line)  # after the progress bar's \r
    return line[line.index('{"version"') :]
