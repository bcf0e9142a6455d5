"""serving/static/sift-instantsearch.js's unit tests (tests/js/, node's own test runner), run from pytest so
`make test` runs them: request and response mapping, disjunctive facets, errors, the insights transport through the
real search-insights bundle, the summary stream reader. Node comes with `make setup` (scripts/system-packages.sh)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_search_client_unit_tests_pass_under_node() -> None:
    node = shutil.which("node")
    assert node, "node is missing: apt-get install nodejs npm (make setup installs it)"
    proc = subprocess.run(
        [node, "--test", "--test-reporter=tap", "tests/js/sift_instantsearch.test.mjs"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    passed = [line for line in out.splitlines() if line.startswith("# pass ")]
    assert passed and int(passed[0].split()[-1]) >= 15, out[-2000:]
