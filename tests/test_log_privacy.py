"""Privacy of the query log: PII scrubbed before a query is stored, a past query suggested to others only after k
distinct sessions issued it (per index), retention on the JSONL logs and on Elasticsearch log indices."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from indexing.pipeline import IndexingConfig, IndexingPipeline
from search.clicklog import ClickLogConfig, ClickRecord, make_click_log
from search.querylog import QueryEvent, QueryLogConfig, make_query_log, purge_es_log, scrub_pii
from search.stores.embedded import EmbeddedStore
from search.suggest.indices import IssuerCounter

INDEX = "priv-docs"
OTHER = "priv-other"


@pytest.mark.parametrize(
    ("query", "stored"),
    [
        ("jane.doe+work@example.co.uk sleep", "<email> sleep"),
        ("call +1 (555) 123-4567", "call <number>"),
        ("card 4111 1111 1111 1111 refund", "card <number> refund"),
        ("ticket 8812345", "ticket <number>"),
        ("ph 030/123 45 67", "ph <number>"),
        ("covid 19 vaccine 2021", "covid 19 vaccine 2021"),
        ("iso 27001 and 1990-2000", "iso 27001 and 1990-2000"),
    ],
)
def test_scrub_pii(query: str, stored: str) -> None:
    assert scrub_pii(query) == stored
    assert QueryEvent(query=query).query == stored


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, TestClient]]:
    """The in-process app with the API's defaults: 3 sessions before a query is suggested."""
    from search.settings import Settings
    from serving.api import create_api
    from serving.config import AppConfig
    from serving.local import local_backend

    tmp = tmp_path_factory.mktemp("privacy")
    docs = tmp / "docs.jsonl"
    texts = ["sleep deprivation memory", "sleep apnea", "vitamin deficiency", "zebrafish heart"]
    docs.write_text("".join(json.dumps({"id": f"d{i}", "title": t, "text": t}) + "\n" for i, t in enumerate(texts)))
    cfg = IndexingConfig(embed=False, dead_letter_dir=tmp / "dead", progress=False)
    for name in (INDEX, OTHER):
        IndexingPipeline(EmbeddedStore(tmp / "data" / "indices"), None, cfg).build(docs, name)
    config = AppConfig.model_validate(
        {
            "data_dir": str(tmp / "data"),
            "search": {"default_index": INDEX, "retrieval": {"mode": "bm25"}},
            "reranker": {"model": None},
            "suggest": {"lm": {"enabled": False}, "prefetch_top": 0},
            "summarizer": None,
        }
    )
    assert config.suggest.min_sessions == 3
    backend = local_backend(config, Settings())
    with TestClient(create_api(backend, backend.metrics)) as client:
        yield tmp / "data", client
    backend.suggest.close()
    backend.store.close()


def _suggested(client: TestClient, prefix: str, session: str) -> list[str]:
    r = client.get("/v1/suggest", params={"q": prefix, "session_id": session})
    assert r.status_code == 200
    return [s["text"] for s in r.json()["suggestions"]]


def _search(client: TestClient, query: str, session: str | None, index: str = INDEX) -> None:
    body: dict[str, Any] = {"query": query, "index": index}
    if session:
        body["session_id"] = session
    r = client.post("/v1/search", json=body)
    assert r.status_code == 200 and r.json()["results"], r.text


def test_a_query_is_suggested_only_after_k_distinct_sessions(app: tuple[Path, TestClient]) -> None:
    _, client = app
    q = "zebrafish heart"
    for _ in range(3):
        _search(client, q, "session-a")  # one session, many times
    _search(client, q, None)  # no session: its issuer cannot be told apart
    _search(client, q, "session-b", index=OTHER)  # another index: not what suggestions serve
    assert q not in _suggested(client, "zeb", "session-z")
    _search(client, q, "session-b")
    assert q not in _suggested(client, "zeb", "session-z")
    _search(client, q, "session-c")
    assert q in _suggested(client, "zeb", "session-z")
    # related searches: the same rule (sessions a and b issued both, then a third)
    for s in ("session-a", "session-b"):
        _search(client, "vitamin deficiency", s)
        _search(client, "sleep apnea", s)
    related = client.get("/v1/related", params={"q": "vitamin deficiency"}).json()["related"]
    assert "sleep apnea" not in [r["text"] for r in related]
    _search(client, "sleep apnea", "session-c")
    related = client.get("/v1/related", params={"q": "vitamin deficiency"}).json()["related"]
    assert "sleep apnea" in [r["text"] for r in related]


def test_a_query_with_an_email_is_stored_scrubbed(app: tuple[Path, TestClient]) -> None:
    data_dir, client = app
    for s in ("p1", "p2", "p3"):
        _search(client, "sleep apnea jane.doe@example.com", s)
    logged = "".join(p.read_text() for p in (data_dir / "querylog").glob("querylog-*.jsonl"))
    assert "jane.doe" not in logged and "example.com" not in logged
    assert '"sleep apnea <email>"' in logged
    assert all("jane" not in t for t in _suggested(client, "sleep apnea", "p4"))


def test_issuer_counter_is_per_index() -> None:
    c = IssuerCounter(2, index="a")
    c.add("q", "s1", "a")
    c.add("q", "s2", "b")
    assert not c.shown("q")
    c.add("q", "s2", None)  # an event without an index counts for the served one
    assert c.shown("q")
    assert IssuerCounter(1).shown("anything")


def _old(days: float) -> datetime:
    return datetime.now(UTC) - timedelta(days=days)


def test_retention_deletes_old_jsonl_files(tmp_path: Path) -> None:
    qdir, cdir = tmp_path / "querylog", tmp_path / "clicklog"
    qdir.mkdir()
    cdir.mkdir()
    for days in (200, 91, 89, 0):
        (qdir / f"querylog-{_old(days):%Y-%m-%d}.jsonl").write_text("")
        (cdir / f"clicklog-{_old(days):%Y-%m-%d}.jsonl").write_text("")
    qlog = make_query_log(QueryLogConfig(), "embedded", tmp_path)
    assert sorted(p.name for p in qdir.iterdir()) == [
        f"querylog-{_old(89):%Y-%m-%d}.jsonl",
        f"querylog-{_old(0):%Y-%m-%d}.jsonl",
    ]
    qlog.close()
    clog = make_click_log(ClickLogConfig(retention_days=30), "embedded", tmp_path)
    assert clog is not None
    now = datetime.now(UTC)
    rec = ClickRecord(
        event_id="e1", type="click", event_name="c", query_id="q", object_ids=["d"], ts=now, received_at=now
    )
    assert clog.append_many([rec]) == (1, 0)
    assert sorted(p.name for p in cdir.glob("clicklog-*.jsonl")) == [f"clicklog-{_old(0):%Y-%m-%d}.jsonl"]
    clog.close()


def test_retention_purges_the_elasticsearch_log(es_url: str, index_name: str) -> None:
    from elasticsearch import Elasticsearch

    client = Elasticsearch(es_url)
    index = f"ql-{index_name}"
    try:
        assert purge_es_log(client, index, 90) == 0  # no log index yet
        for i, days in enumerate((120, 91, 10, 0)):
            client.index(index=index, id=str(i), document={"ts": _old(days).isoformat(), "query": f"q{i}"})
        client.indices.refresh(index=index)
        qlog = make_query_log(QueryLogConfig(es_index=index, es_flush_interval_s=0.05), "es", None, client)
        qlog.close()
        client.indices.refresh(index=index)
        left = client.search(index=index, query={"match_all": {}}, sort=[{"ts": "asc"}])["hits"]["hits"]
        assert [h["_source"]["query"] for h in left] == ["q2", "q3"]
    finally:
        client.indices.delete(index=index, ignore_unavailable=True)
        client.close()
