"""An Elasticsearch outage through the API: a real node stopped and restarted, and a node that accepts connections
and never answers (a JVM starting, a GC pause), via a TCP relay in front of the real node. Every search during the
outage must end as a fast 503 with Retry-After (the store's read timeout below the search deadline, no client
retry on timeouts, the breaker failing the rest fast), and searches must answer 200 again soon after the node is
back (no poisoned connection pool, the breaker's probe closes it)."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

READ_TIMEOUT_S = 1.0
BOUND_S = 3 * READ_TIMEOUT_S  # a 503 comes within this, well before the 10 s deadline


class Relay:
    """TCP relay to the node; `hole = True`: new connections are accepted and never answered (nor forwarded)."""

    def __init__(self, target_port: int) -> None:
        self.target_port, self.hole = target_port, False
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        self.piped: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            if self.hole:
                self.held.append(conn)
                continue
            try:
                up = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                conn.close()
                continue
            self.piped += [conn, up]
            for a, b in ((conn, up), (up, conn)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def black_hole(self) -> None:
        """Cut the open connections (as a restart does) and swallow the new ones."""
        self.hole = True
        for s in self.piped:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.piped.clear()

    def close(self) -> None:
        self.sock.close()
        for c in self.held:
            c.close()


@pytest.fixture(scope="module")
def node() -> Iterator[Any]:
    from sift.es_node import LocalElasticsearch

    # A node of this module's own, never the session's (tests/conftest.py): these tests stop and restart it, and
    # the rest of the run must keep its node. Its own port means its own state folder too.
    default = int(os.environ.get("SIFT_TEST_ES_PORT", "9250")) + 1
    n = LocalElasticsearch(port=int(os.environ.get("SIFT_TEST_ES_RESTART_PORT", default)), heap="512m")
    n.wipe()
    n.start(timeout=300)
    yield n
    n.stop()


@pytest.fixture(scope="module")
def app(node: Any, tmp_path_factory: pytest.TempPathFactory, tiny_embedder: Any, tiny_embedder_path: Any) -> Any:
    from indexing.pipeline import IndexingConfig, IndexingPipeline
    from search.settings import Settings
    from search.stores.elasticsearch import ElasticsearchStore
    from serving.api import create_api
    from serving.config import AppConfig
    from serving.local import local_backend

    tmp = tmp_path_factory.mktemp("es-restart")
    src = tmp / "docs.jsonl"
    src.write_text("".join(json.dumps({"id": f"d{i}", "title": t, "text": t}) + "\n" for i, t in enumerate(TEXTS)))
    index = f"restart-{os.getpid()}"
    store = ElasticsearchStore(node.url)
    IndexingPipeline(store, tiny_embedder, IndexingConfig(dead_letter_dir=tmp / "dead", progress=False)).build(
        src, index
    )
    relay = Relay(node.port)
    config = AppConfig.model_validate(
        {
            "store": "es",
            "elasticsearch_url": f"http://127.0.0.1:{relay.port}",
            "es_request_timeout_s": READ_TIMEOUT_S,
            "data_dir": str(tmp / "data"),
            "embedder": {"model": str(tiny_embedder_path), "device": "cpu"},
            "reranker": {"model": None},
            "suggest": {"enabled": False},
            "summarizer": None,
            "search": {"default_index": index, "fail_fast_s": 0.25},
        }
    )
    backend = local_backend(config, Settings())
    try:
        with TestClient(create_api(backend, backend.metrics)) as client:
            yield client, relay, backend
    finally:
        relay.close()
        for v in store.list_versions(index):  # the alias goes with its index
            store.client.indices.delete(index=v.version, ignore_unavailable=True)
        store.close()


TEXTS = ["zebrafish hearts regenerate", "sleep consolidates memory", "vitamin d and bone density"]


def _search(client: TestClient) -> tuple[int, float, dict[str, str]]:
    t = time.monotonic()
    r = client.post("/v1/search", json={"query": "zebrafish hearts"})
    return r.status_code, time.monotonic() - t, dict(r.headers)


def _until_ok(client: TestClient, within_s: float) -> float:
    """Seconds until a search answers 200 (fails past `within_s`), then 5 more in a row must too."""
    t = time.monotonic()
    while _search(client)[0] != 200:
        assert time.monotonic() - t < within_s, "searches did not answer 200 again after the node came back"
        time.sleep(0.1)
    assert [_search(client)[0] for _ in range(5)] == [200] * 5
    return time.monotonic() - t


def _outage(client: TestClient, n: int = 12) -> None:
    for _ in range(n):
        status, took, headers = _search(client)
        assert status == 503, status
        assert "retry-after" in headers
        assert took < BOUND_S, f"a search took {took:.1f} s during the outage"


@pytest.mark.slow
def test_a_node_that_never_answers_gives_fast_503s_then_200s(app: Any) -> None:
    client, relay, backend = app
    assert _search(client)[0] == 200
    relay.black_hole()
    _outage(client)
    assert backend.service.breaker.rejected > 0  # most failed fast, without waiting on the node
    relay.hole = False
    assert _until_ok(client, within_s=BOUND_S + 2) < BOUND_S + 2


@pytest.mark.slow
def test_a_stopped_and_restarted_node_gives_fast_503s_then_200s(app: Any, node: Any) -> None:
    client, _, _ = app
    assert _search(client)[0] == 200
    node.stop()
    _outage(client)
    node.start(timeout=300)
    _until_ok(client, within_s=60)  # the restarted node recovers its shard first (seconds on a loaded machine)


def test_the_cpu_config_fails_a_down_store_fast_not_at_the_deadline() -> None:
    """Issue 37: a read timeout equal to the search deadline turned an ES restart into deadline misses. A hybrid
    search makes two store calls in turn: both timing out must still leave time before the deadline."""
    from serving.config import AppConfig

    cfg = AppConfig.load(Path(__file__).resolve().parent.parent / "configs" / "cpu.yaml")
    assert cfg.search_deadline_s is not None
    assert 2 * cfg.es_request_timeout_s < cfg.search_deadline_s / 2
    assert cfg.search.fail_fast_s > 0 and not cfg.es_retry_busy
