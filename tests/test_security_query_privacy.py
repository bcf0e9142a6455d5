"""Query text stays out of URLs and out of warning/error log lines: `summary_url` names the search by its
query id (the GET route reads the query back from the logged impression), and a server fault logged for a
request leaves out the query the request carried (its words too), naming it by a digest instead."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from indexing.pipeline import IndexingConfig, IndexingPipeline
from search.stores.embedded import EmbeddedStore
from serving.errors import query_tag, redact

INDEX = "privacy-docs"
SECRET = "alice diagnosis oncology"


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory, tiny_embedder_path: Path, tiny_chat_lm_path: Path) -> Iterator[Any]:
    from search.settings import Settings
    from serving.api import create_api
    from serving.config import AppConfig
    from serving.local import local_backend

    tmp = tmp_path_factory.mktemp("query-privacy")
    docs = tmp / "docs.jsonl"
    rows = [{"id": f"d{i}", "title": f"Oncology note {i}", "text": f"A diagnosis note number {i}."} for i in range(6)]
    docs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = IndexingConfig(embed=False, dead_letter_dir=tmp / "dead", progress=False)
    assert IndexingPipeline(EmbeddedStore(tmp / "data" / "indices"), None, cfg).build(docs, INDEX).indexed == 6
    config = AppConfig.model_validate(
        {
            "data_dir": str(tmp / "data"),
            "search": {"default_index": INDEX, "retrieval": {"mode": "bm25"}},
            "embedder": {"model": str(tiny_embedder_path)},
            "suggest": {"enabled": False},
            "summarizer": {
                "lm": {"model": str(tiny_chat_lm_path), "device": "cpu"},
                "max_new_tokens": 4,
                "deadline_s": None,
                "cache_sentence_vectors": False,
                "max_sentences": None,
            },
        }
    )
    backend = local_backend(config, Settings())
    with TestClient(create_api(backend, backend.metrics), raise_server_exceptions=False) as client:
        yield backend, client
    backend.store.close()


def _events(text: str) -> list[str]:
    return [line[len("event: ") :] for line in text.splitlines() if line.startswith("event: ")]


def test_the_summary_url_carries_a_query_id_and_streams_the_logged_query(app: Any) -> None:
    _, client = app
    body = client.post("/v1/search", json={"query": SECRET, "summarize": True}).json()
    url = body["summary_url"]
    assert url and f"query_id={body['query_id']}" in url
    assert not any(w in url.lower() for w in SECRET.split())
    r = client.get(url)
    assert r.status_code == 200 and _events(r.text)[-1] == "summary", r.text[-300:]
    assert client.get("/v1/summarize", params={"query_id": "f" * 32, "ids": "d1"}).status_code == 404
    both = client.get("/v1/summarize", params={"query_id": body["query_id"], "query": "x", "ids": "d1"})
    neither = client.get("/v1/summarize", params={"ids": "d1"})
    assert both.status_code == 422 and neither.status_code == 422


def test_a_fault_is_logged_without_the_query(
    app: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    backend, client = app

    def failing(*args: Any, **kwargs: Any) -> Any:  # a store whose error quotes the query, as ES's parse errors do
        raise RuntimeError(f"failed to parse query [{SECRET}] near 'oncology'")

    monkeypatch.setattr(backend.store, "bm25_search", failing)
    with caplog.at_level(logging.WARNING):
        r = client.post("/v1/search", json={"query": SECRET})
        s = client.get("/v1/suggest", params={"q": "alice diag"})
    assert r.status_code == 500 and r.json()["request_id"] and SECRET not in r.text
    assert s.status_code == 200
    logged = "\n".join(rec.getMessage() for rec in caplog.records if rec.levelno >= logging.WARNING)
    assert "RuntimeError" in logged and r.json()["request_id"] in logged  # the fault is still findable
    for word in SECRET.split():
        assert word not in logged.lower(), logged
    assert query_tag(SECRET) in logged


def test_redact_removes_the_query_and_its_words() -> None:
    out = redact("parse error at [Alice Diagnosis oncology]; term alice; len", SECRET)
    assert "alice" not in out.lower() and "oncology" not in out.lower() and query_tag(SECRET) in out
    assert out.endswith("; len")  # other text is left alone
    assert redact("nothing to hide", "") == "nothing to hide"
