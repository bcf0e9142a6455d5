"""`sift serve --no-ray` serves from this process without importing Ray: the in-process path (the CLI,
`serving.local`, the API and everything below them) imports Ray nowhere at module level."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent

# Runs the real `sift serve --no-ray` with uvicorn.run replaced by a recorder, then reports Ray's presence.
_SCRIPT = """
import sys

import uvicorn

from sift.cli import app

seen = {}
uvicorn.run = lambda api, **kw: seen.update(api=api, **kw)
app(["serve", "--no-ray", "--config", sys.argv[1], "--port", "8123"], standalone_mode=False)
assert type(seen["api"]).__name__ == "FastAPI" and seen["port"] == 8123, seen
print("RAY_IMPORTED" if any(m == "ray" or m.startswith("ray.") for m in sys.modules) else "NO_RAY")
"""


def test_serve_no_ray_builds_the_app_without_importing_ray(tmp_path: Path) -> None:
    config = {
        "store": "embedded",
        "data_dir": str(tmp_path / "data"),
        "search": {"retrieval": {"mode": "bm25"}},
        "reranker": {"model": None},
        "suggest": {"lm": {"enabled": False}, "prefetch_top": 0},
        "summarizer": None,
    }
    path = tmp_path / "app.yaml"
    path.write_text(yaml.safe_dump(config))
    out = subprocess.run(
        [sys.executable, "-c", _SCRIPT, str(path)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-4000:]
    assert out.stdout.strip().splitlines()[-1] == "NO_RAY", out.stdout + out.stderr[-4000:]
