"""bench/search_load.py's pieces that decide what is served and sent: setup specs, vegeta targets, encoders."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest

from bench.search_load import DEMO_QUERIES, REPO, Setup, encoder_of, session_cpu, targets_file


def test_setup_specs() -> None:
    assert Setup.parse("configs/demo.yaml") == Setup("configs/demo.yaml")
    assert Setup.parse("HEAD~3:configs/cpu.yaml+noray") == Setup("configs/cpu.yaml", no_ray=True, ref="HEAD~3")
    assert Setup.parse("abc123:configs/demo.yaml").name == "abc123:configs/demo.yaml"


def test_targets_are_vegeta_json_posts(tmp_path: Path) -> None:
    out = targets_file("http://127.0.0.1:1", DEMO_QUERIES[:2], "pydocs", tmp_path / "t.jsonl")
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["method"] for r in rows] == ["POST", "POST"]
    assert rows[0]["url"] == "http://127.0.0.1:1/v1/search"
    body = json.loads(base64.b64decode(rows[1]["body"]))
    assert body == {"query": DEMO_QUERIES[1], "limit": 10, "index": "pydocs"}
    assert len(set(DEMO_QUERIES)) == 25


def test_each_config_is_benchmarked_on_an_index_of_its_own_encoder(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIFT_DEVICE", "cpu")
    assert encoder_of(REPO, "configs/demo.yaml")[::2] == ("embedded", "onnx-int8")
    assert encoder_of(REPO, "configs/cpu.yaml")[::2] == ("es", "onnx-int8")


def test_session_cpu_counts_this_session() -> None:
    assert session_cpu(os.getsid(0)) > 0


def test_settle_waits_while_the_server_is_busy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Busy (a full CPU per window) for three windows, then quiet: settle stops after the fourth window."""
    import bench.search_load as sl

    readings = iter([0.0, 5.0, 5.0, 10.0, 10.0, 15.0, 15.0, 15.1] + [15.1] * 10)
    calls: list[float] = []
    monkeypatch.setattr(sl, "session_cpu", lambda sid: next(readings))
    monkeypatch.setattr(sl.time, "sleep", calls.append)
    sl.settle(1, limit_s=1e9, window_s=5.0)
    assert calls == [5.0] * 4
