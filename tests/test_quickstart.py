"""docs/quickstart.md runs as written: its marked bash blocks are executed in a temporary folder.

Convention (documented in the quickstart): an HTML comment right before a ```bash fence marks the block.
- `<!-- test: run -->` runs it with `bash -euo pipefail` (exit 0 required);
  `<!-- test: run expect="REGEX" -->` also requires REGEX in its stdout.
- `<!-- test: serve -->` starts it in the background and waits for `/readyz`; later blocks talk to it.
Unmarked blocks (`make demo`) are not run. The only substitution is the port: the server gets a free one
(`--port`) and `127.0.0.1:8000` in later blocks becomes it, so a running demo never collides with the test.
The commands use the offline default embedder, as a reader would, so this is slow (imports dominate).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
GUIDE = REPO / "docs" / "quickstart.md"
MARK = re.compile(r'<!--\s*test:\s*(run|serve)(?:\s+expect="((?:[^"\\]|\\.)*)")?\s*-->\s*\n```bash\n(.*?)\n```', re.S)


@dataclass
class Block:
    mode: str
    expect: str | None
    code: str


def marked_blocks(text: str) -> list[Block]:
    """The fenced bash blocks preceded by a test marker, in document order."""
    return [Block(m[1], m[2].replace('\\"', '"') if m[2] else None, m[3]) for m in MARK.finditer(text)]


def test_marker_parsing() -> None:
    text = (
        '<!-- test: run expect="a\\"b" -->\n```bash\necho \'a"b\'\n```\n\n```bash\nmake demo\n```\n'
        "<!-- test: serve -->\n```bash\nsift serve\n```\n"
    )
    blocks = marked_blocks(text)
    assert [(b.mode, b.expect, b.code) for b in blocks] == [
        ("run", 'a"b', "echo 'a\"b'"),
        ("serve", None, "sift serve"),
    ]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise AssertionError(f"the server block exited with {proc.returncode} before it was ready")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"the server block was not ready within {timeout:.0f} s ({url})")


@pytest.mark.slow
def test_quickstart_commands_run_as_written(tmp_path: Path) -> None:
    blocks = marked_blocks(GUIDE.read_text(encoding="utf-8"))
    modes = [b.mode for b in blocks]
    assert modes.count("serve") == 1 and modes.count("run") >= 4, f"quickstart lost its marked blocks: {modes}"
    port = _free_port()
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("SIFT_DATA_DIR", None)  # the guide's commands use the default, relative to the working folder
    server: subprocess.Popen[bytes] | None = None
    log = tmp_path / "serve.log"
    try:
        for i, block in enumerate(blocks):
            code = block.code.replace("127.0.0.1:8000", f"127.0.0.1:{port}")
            if block.mode == "serve":
                with log.open("wb") as out:
                    server = subprocess.Popen(
                        ["bash", "-c", f"exec {code} --port {port}"],
                        cwd=tmp_path,
                        env=env,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                _wait_ready(f"http://127.0.0.1:{port}/readyz", server, timeout=240)
                continue
            done = subprocess.run(
                ["bash", "-euo", "pipefail", "-c", code],
                cwd=tmp_path,
                env=env,
                capture_output=True,
                text=True,
                timeout=300,
            )
            where = (
                f"block {i + 1} of docs/quickstart.md:\n{block.code}\n"
                f"--- stdout\n{done.stdout[-3000:]}\n--- stderr\n{done.stderr[-3000:]}"
            )
            assert done.returncode == 0, f"exit {done.returncode} in {where}"
            if block.expect:
                assert re.search(block.expect, done.stdout), f"/{block.expect}/ not in the output of {where}"
    finally:
        if server is not None and server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait()
    assert (tmp_path / ".data" / "indices" / "aliases" / "help").exists(), "the guide's index was not written here"
