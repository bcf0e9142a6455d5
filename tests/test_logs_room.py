"""The logs room as a notebook uses it: LogsConfig reads the logs' keys of a server's YAML without serving/,
`read_logs` / `export_ubi` / `import_files` open the logs it names, and the training jobs' library calls
(`training.jobs`) are what `sift train ranker` runs."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from logs.access import NoClickLog, read_logs
from logs.clicklog import ClickRecord, JsonlClickLog
from logs.config import LogsConfig
from logs.querylog import JsonlQueryLog, QueryEvent
from logs.transfer import export_ubi, import_files
from search.configfile import ConfigError
from tests.conftest import REPO
from training.jobs import TooFewSessions, training_sessions

T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)


APP_CONFIGS = sorted(p.name for p in (REPO / "configs").glob("*.yaml") if not p.stem.endswith("-indexing"))


@pytest.mark.parametrize("name", APP_CONFIGS)
def test_logs_config_reads_the_same_keys_as_the_app_config(name: str) -> None:
    """One YAML for both: the logs' settings read alone equal what the server reads."""
    from serving.config import AppConfig

    path = REPO / "configs" / name
    app, logs = AppConfig.load(path), LogsConfig.load(path)
    assert logs.query_log == app.query_log and logs.click_log == app.click_log
    assert (logs.store, logs.data_dir, logs.elasticsearch_url) == (app.store, app.data_dir, app.elasticsearch_url)


def test_logs_config_loads_without_serving() -> None:
    code = (
        "import sys; from logs.config import LogsConfig; from logs.access import read_logs;"
        "import training.jobs; c = LogsConfig.load('configs/cpu.yaml');"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('serving', 'sift'));"
        "assert not bad, bad; print(c.store)"
    )
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr


def test_a_bad_logs_key_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "logs.yaml"
    path.write_text(yaml.safe_dump({"query_log": {"backend": "sqlite"}, "port": 9000}))
    with pytest.raises(ConfigError, match=r"(?s)logs\.yaml.*query_log\.backend"):
        LogsConfig.load(path)
    path.write_text(yaml.safe_dump({"click_log": {"retention_day": 3}}))
    with pytest.raises(ConfigError, match="retention_day"):
        LogsConfig.load(path)
    with pytest.raises(ConfigError, match="not found"):
        LogsConfig.load(tmp_path / "missing.yaml")


def _logs(data_dir: Path, searches: int) -> None:
    qlog = JsonlQueryLog(data_dir / "querylog")
    clog = JsonlClickLog(data_dir / "clicklog")
    records = []
    for i in range(searches):
        ts = T0 + timedelta(seconds=i)
        shown = [f"d{i % 7}", f"d{(i + 1) % 7}", f"d{(i + 2) % 7}"]
        index = "docs" if i % 4 else "other"
        qlog.append(QueryEvent(ts=ts, query=f"topic {i % 5}", index=index, query_id=f"q{i}", shown=shown, offset=0))
        at = ts + timedelta(seconds=5)
        records.append(
            ClickRecord(event_id=f"e{i}", type="click", event_name="click", query_id=f"q{i}", object_ids=[shown[1]],
                        positions=[2], ts=at, received_at=at, query=f"topic {i % 5}", index=index)
        )  # fmt: skip
    qlog.close()
    clog.append_many(records)
    clog.close()


def test_read_logs_export_and_import_through_the_library(tmp_path: Path) -> None:
    _logs(tmp_path / "a", 40)
    cfg = LogsConfig(data_dir=tmp_path / "a")
    imps, clicks = read_logs(cfg, index="docs")
    assert len(imps) == 30 and {e.index for e in imps} == {"docs"} and len(clicks) == 40
    sessions = training_sessions(imps, clicks, index="docs")
    assert all(s.clicks == (False, True, False) for s in sessions)
    with pytest.raises(TooFewSessions, match="only 0"):
        training_sessions(imps, clicks, index="nowhere")

    counts = export_ubi(cfg, tmp_path / "ubi")
    assert counts["queries"] == 40 and counts["records"] == 40
    target = LogsConfig(data_dir=tmp_path / "b")
    report = import_files(
        target, "ubi", queries=tmp_path / "ubi" / "queries.ndjson", events=tmp_path / "ubi" / "events.ndjson"
    )
    assert report.impressions_written == 40 and report.records_written == 40 and report.rejected == 0
    again_imps, again_clicks = read_logs(target, index="docs")
    assert [e.query_id for e in again_imps] == [e.query_id for e in imps]
    assert sorted(r.query_id for r in again_clicks) == sorted(r.query_id for r in clicks)
    with pytest.raises(ValueError, match="one file"):
        import_files(target, "jsonl", queries=tmp_path / "ubi" / "queries.ndjson")
    assert json.loads((tmp_path / "ubi" / "queries.ndjson").read_text().splitlines()[0])["query_id"] == "q0"


def test_no_click_log_is_an_error_not_an_empty_read(tmp_path: Path) -> None:
    cfg = LogsConfig.model_validate({"data_dir": str(tmp_path), "click_log": {"backend": "none"}})
    with pytest.raises(NoClickLog):
        read_logs(cfg)
