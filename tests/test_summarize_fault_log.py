"""A summary stream that fails mid-way is logged as the API logs any server fault (serving.errors): without the
query (an LM server's error text often quotes the prompt), bounded in length, under the request id the SSE
`error` event carries. Before, the route logged `log.exception(...)`: the whole exception text, query included."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from search.documents import Document
from serving.errors import MAX_TRACE_CHARS, query_tag

INDEX = "fault-docs"
QUERY = "Quokka migration across Zanzibar wetlands"
WORDS = ["quokka", "migration", "across", "zanzibar", "wetlands"]


class _FailingStream:
    """One token, then the LM server's error, which quotes the prompt (and is far longer than a log line)."""

    def __init__(self, query: str) -> None:
        self.query = query
        self.sent = False
        self.cancelled = False

    def __aiter__(self) -> _FailingStream:
        return self

    async def __anext__(self) -> dict[str, Any]:
        if not self.sent:
            self.sent = True
            return {"event": "token", "text": "Quokkas"}
        try:
            raise KeyError(f"prompt cache miss for {self.query.upper()}")
        except KeyError as exc:
            prompt = f"<|user|>Summarize for: {self.query}\n" + "context " * 20_000
            raise RuntimeError(f"LM server rejected the prompt {prompt!r}") from exc

    def cancel(self) -> None:
        self.cancelled = True


class _FailingClient:
    def __init__(self) -> None:
        self.streams: list[_FailingStream] = []

    def stream(self, query: str, docs: Sequence[Document], max_new_tokens: int | None) -> _FailingStream:
        self.streams.append(_FailingStream(query))
        return self.streams[-1]

    async def ready(self) -> bool:
        return True


class _Backend:
    suggest = None
    events = None
    versions: dict[str, str] = {}  # noqa: RUF012 - read only
    summary_top_k = 5

    def __init__(self, service: Any, summary_client: Any) -> None:
        self.service = service
        self.summary_client = summary_client

    async def readiness(self) -> dict[str, bool]:
        return {"store": True}


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, _FailingClient]]:
    from indexing.pipeline import IndexingConfig, IndexingPipeline
    from search.retrieval import RetrievalConfig
    from search.service import SearchConfig, SearchService
    from search.stores.embedded import EmbeddedStore
    from serving.api import create_api

    tmp = tmp_path_factory.mktemp("fault")
    src = tmp / "docs.jsonl"
    src.write_text(
        "".join(
            json.dumps({"id": f"d{i}", "title": f"Note {i}", "text": f"Marsupials {i} travel."}) + "\n"
            for i in range(3)
        )
    )
    store = EmbeddedStore(tmp / "store")
    cfg = IndexingConfig(embed=False, progress=False, dead_letter_dir=Path(tmp / "dead"))
    assert IndexingPipeline(store, None, cfg).build(src, INDEX).indexed == 3
    service = SearchService(
        store, None, None, SearchConfig(default_index=INDEX, retrieval=RetrievalConfig(mode="bm25"))
    )
    client = _FailingClient()
    with TestClient(create_api(_Backend(service, client))) as http:
        yield http, client


def _frames(raw: str) -> list[tuple[str, Any]]:
    out = []
    for frame in raw.strip().split("\n\n"):
        name, data = frame.split("\n")
        out.append((name.removeprefix("event: "), json.loads(data.removeprefix("data: "))))
    return out


def test_a_failing_summary_stream_logs_no_query_and_a_bounded_line(
    app: tuple[TestClient, _FailingClient], caplog: pytest.LogCaptureFixture
) -> None:
    http, client = app
    with caplog.at_level(logging.DEBUG, logger="sift.summarize"):
        resp = http.post(
            "/v1/summarize", json={"query": QUERY, "ids": ["d0", "d1"]}, headers={"X-Request-ID": "req-fault-1"}
        )
    assert resp.status_code == 200
    frames = _frames(resp.text)
    assert [name for name, _ in frames] == ["token", "error"]
    error = frames[-1][1]
    assert error["request_id"] == "req-fault-1" and "RuntimeError" in error["detail"]
    assert "zanzibar" not in json.dumps(error).lower()
    assert client.streams[-1].cancelled  # the generator is stopped

    records = [r for r in caplog.records if r.name == "sift.summarize"]
    assert len(records) == 1
    rec = records[0]
    line = rec.getMessage()
    assert rec.levelno == logging.ERROR and rec.exc_info is None  # no second, unbounded copy of the trace
    assert "req-fault-1" in line and "RuntimeError" in line and "KeyError" in line  # the chain is there
    assert len(line) <= MAX_TRACE_CHARS + 200
    lowered = line.lower()
    assert all(w not in lowered for w in WORDS), [w for w in WORDS if w in lowered]
    assert query_tag(QUERY) in line  # the whole query became its digest: lines of one request correlate


def test_the_search_form_redacts_its_query_too(
    app: tuple[TestClient, _FailingClient], caplog: pytest.LogCaptureFixture
) -> None:
    http, _ = app
    with caplog.at_level(logging.DEBUG, logger="sift.summarize"):
        resp = http.post("/v1/summarize", json={"search": {"query": "marsupials travel zanzibar"}, "k": 2})
    assert resp.status_code == 200 and _frames(resp.text)[-1][0] == "error"
    lines = [r.getMessage() for r in caplog.records if r.name == "sift.summarize"]
    assert len(lines) == 1 and len(lines[0]) <= MAX_TRACE_CHARS + 200
    assert not any(w in lines[0].lower() for w in ("marsupials", "travel", "zanzibar"))
