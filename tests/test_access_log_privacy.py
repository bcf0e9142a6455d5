"""`sift serve --no-ray` writes no query strings to its access log: uvicorn's access lines follow `access_log`
(off by default, as Serve's are), and when on they carry the path alone (`GET /v1/suggest?q=...` held what a
user typed). Runs the real CLI with `uvicorn.run` recorded, then serves one request with what it recorded."""

from __future__ import annotations

import logging
import socket
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
import yaml

SECRET = "zqxsecret"


def _serve_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **extra: Any) -> dict[str, Any]:
    """`sift serve --no-ray` as a user runs it, uvicorn.run replaced by a recorder of its arguments."""
    from sift.cli import app

    config = {
        "store": "embedded",
        "data_dir": str(tmp_path / "data"),
        "search": {"retrieval": {"mode": "bm25"}},
        "reranker": {"model": None},
        "suggest": {"lm": {"enabled": False}, "prefetch_top": 0},
        "summarizer": None,
        **extra,
    }
    path = tmp_path / "app.yaml"
    path.write_text(yaml.safe_dump(config))
    seen: dict[str, Any] = {}
    monkeypatch.setattr(uvicorn, "run", lambda api, **kw: seen.update(api=api, **kw))
    app(["serve", "--no-ray", "--config", str(path)], standalone_mode=False)
    return seen


def test_no_ray_serves_with_the_access_log_off_by_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from serving.config import AppConfig
    from serving.local import uvicorn_options

    assert AppConfig().access_log is False and uvicorn_options(AppConfig())["access_log"] is False
    seen = _serve_cli(tmp_path, monkeypatch)
    assert seen["access_log"] is False and seen["proxy_headers"] is False


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


def test_no_ray_access_lines_when_on_carry_no_query_string(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = _serve_cli(tmp_path, monkeypatch, access_log=True)
    assert seen["access_log"] is True
    options = {k: v for k, v in seen.items() if k not in ("api", "host", "port")}
    server = uvicorn.Server(uvicorn.Config(seen["api"], lifespan="off", **options))  # applies its log_config
    access = logging.getLogger("uvicorn.access")
    lines = _Lines()
    lines.setFormatter(uvicorn.logging.AccessFormatter("%(client_addr)s %(request_line)s %(status_code)s"))
    access.addHandler(lines)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        base = f"http://127.0.0.1:{sock.getsockname()[1]}"
        for path in [f"/v1/suggest?q={SECRET}+phone", f"/healthz?token={SECRET}", f"/v1/nothing?{SECRET}"]:
            httpx.get(base + path, timeout=30)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()
        access.removeHandler(lines)
    assert len(lines.lines) == 3, lines.lines
    assert "GET /v1/suggest HTTP/1.1" in lines.lines[0] and "/healthz" in lines.lines[1], lines.lines
    assert not [line for line in lines.lines if SECRET in line or "?" in line], lines.lines
