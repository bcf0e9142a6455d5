"""scripts/system-packages.sh: installs only what is missing, or stops at once with the install line."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "system-packages.sh"


def _run(tmp_path: Path, profile: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run as a user who is not root and has no sudo: a fake `id` and a PATH without sudo."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "id").write_text("#!/bin/sh\necho 1000\n")
    (bin_dir / "id").chmod(0o755)
    path = f"{bin_dir}:/usr/bin:/bin"
    full_env = {"PATH": path, "HOME": str(tmp_path), **env}
    return subprocess.run(["bash", str(SCRIPT), profile], env=full_env, capture_output=True, text=True, check=False)


def test_missing_browser_stops_with_one_install_line(tmp_path: Path) -> None:
    result = _run(tmp_path, "test", SIFT_CHROMIUM="/nonexistent/chromium", SIFT_CHROMEDRIVER="/nonexistent/driver")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "apt-get install -y" in lines[0]
    assert "chromium" in lines[0] and "chromium-driver" in lines[0]


def test_demo_profile_needs_no_browser(tmp_path: Path) -> None:
    import sys

    result = _run(tmp_path, "demo", PYTHON=sys.executable, SIFT_CHROMIUM="/nonexistent/chromium")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


def test_unknown_profile_is_a_usage_error(tmp_path: Path) -> None:
    result = _run(tmp_path, "everything")
    assert result.returncode == 2 and "usage" in result.stderr


def test_ci_runs_only_what_a_newcomer_runs() -> None:
    """`.ci/run` must not install anything `make test` would not: it calls make and nothing else."""
    commands = [
        line.strip()
        for line in (REPO / ".ci" / "run").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert commands[-1] == "make lint test"
    assert not any("apt-get" in c or "pip " in c for c in commands)
    assert os.access(SCRIPT, os.X_OK)
