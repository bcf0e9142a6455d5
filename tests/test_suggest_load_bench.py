"""bench/suggest_load.py and bench/suggest_coldstart.py: the prefixes and targets they send, the CPU they count."""

from __future__ import annotations

import json
import os
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from bench.suggest_coldstart import QUERIES, prefixes
from bench.suggest_load import never_seen, table, tree_cpu_s, url_for


def test_prefixes_are_typed_forms_of_three_characters_or_more() -> None:
    got = prefixes(["ab cd", "abc"])
    assert got == ["ab c", "ab cd", "abc"]  # "ab " ends in a blank: the same query as "ab"
    assert all(len(p) >= 3 and not p.endswith(" ") for p in got)
    assert len(QUERIES) == 25 and len(prefixes(QUERIES)) > 400


def test_never_seen_prefixes_avoid_the_warm_ones_and_repeat_nothing(tmp_path: Path) -> None:
    (tmp_path / "suggest").mkdir()
    phrases = {"regular expression": 0.5, "read a file": 0.4, "json": 0.3}
    (tmp_path / "suggest" / "docs-v1.corpus.json").write_text(json.dumps({"format": 1, "phrases": phrases}))
    other = {"zzz another index": 1.0}  # another index's phrases (sorted after it) are never used
    (tmp_path / "suggest" / "tests-v9.corpus.json").write_text(json.dumps({"format": 1, "phrases": other}))
    warm = {"reg", "regu"}
    few = never_seen(tmp_path, warm, 10, "docs")
    assert not any(p.startswith("zzz") for p in never_seen(tmp_path, warm, 500, "docs"))
    with pytest.raises(SystemExit, match="no corpus suggestions of 'nope'"):
        never_seen(tmp_path, warm, 10, "nope")
    assert len(few) == len(set(few)) == 10 and not warm & set(few)
    many = never_seen(tmp_path, warm, 200, "docs")  # more than the corpus has: other k values make other keys
    assert len(many) == len(set(many)) == 200
    q = parse_qs(urlsplit(url_for("http://h", many[-1])).query)
    assert q["q"][0] and 2 <= int(q["k"][0]) < 20 and "\x00" not in q["q"][0]
    assert url_for("http://h", "a b") == "http://h/v1/suggest?q=a+b&k=8"


def test_server_cpu_counts_this_process_and_the_table_names_every_run() -> None:
    sum(i * i for i in range(200_000))
    assert tree_cpu_s(os.getpid()) > 0 and tree_cpu_s(None) == 0.0
    row = {"path": "keystroke", "prefixes": "warm", "rate": 200, "p50_ms": 1.0, "p99_ms": 2.0, "success": 1.0,
           "cpu_ms_per_request": 3.0, "server_cpu_ms_per_request": 0.5, "machine_busy": 0.4}  # fmt: skip
    assert "| keystroke | warm | 200/s | 1.0 | 2.0 | 100.0% | 3.0 | 0.5 | 40% |" in table([row])
