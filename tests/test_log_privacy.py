"""Privacy of the query log: PII scrubbed before a query is stored (every form of tests/pii_corpus.py), a past
query suggested to others only after k distinct clients issued it (per index; the server-known client, so one
client cannot pass alone by inventing session ids), retention on the JSONL logs and on Elasticsearch log indices."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from indexing.pipeline import IndexingConfig, IndexingPipeline
from logs.clicklog import ClickLogConfig, ClickRecord, make_click_log
from logs.querylog import QueryEvent, QueryLogConfig, make_query_log, purge_es_log, scrub_pii
from search.pii import contains_pii
from search.stores.embedded import EmbeddedStore
from search.suggest.indices import IssuerCounter
from tests.pii_corpus import PII_FORMS

INDEX = "priv-docs"
OTHER = "priv-other"
PROXY = ("10.9.0.1", 50000)  # the test client connects as a trusted proxy: X-Forwarded-For names the client


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
            # the log's own suggestions are under test: the corpus (public text, suggested to all) is off
            "suggest": {"lm": {"enabled": False}, "corpus": {"enabled": False}, "prefetch_top": 0},
            "summarizer": None,
            "security": {"trusted_proxies": ["10.9.0.0/16"]},
        }
    )
    assert config.suggest.min_sessions == 3
    backend = local_backend(config, Settings())
    with TestClient(create_api(backend, backend.metrics), client=PROXY) as client:
        yield tmp / "data", client
    backend.suggest.close()
    backend.store.close()


def _suggested(client: TestClient, prefix: str, session: str, k: int = 8) -> list[str]:
    r = client.get("/v1/suggest", params={"q": prefix, "session_id": session, "k": k})
    assert r.status_code == 200
    return [s["text"] for s in r.json()["suggestions"]]


def _related(client: TestClient, query: str) -> list[str]:
    r = client.get("/v1/related", params={"q": query, "k": 20})
    assert r.status_code == 200
    return [s["text"] for s in r.json()["related"]]


def _search(client: TestClient, query: str, session: str | None, index: str = INDEX, addr: str = "") -> None:
    """One search from client address `addr` (through the trusted proxy; "" is the proxy's own address)."""
    body: dict[str, Any] = {"query": query, "index": index}
    if session:
        body["session_id"] = session
    r = client.post("/v1/search", json=body, headers={"X-Forwarded-For": addr} if addr else {})
    assert r.status_code == 200 and r.json()["results"], r.text


def test_a_query_is_suggested_only_after_k_distinct_clients(app: tuple[Path, TestClient]) -> None:
    _, client = app
    q = "zebrafish heart"
    for _ in range(3):
        _search(client, q, "session-a", addr="203.0.113.1")  # one client, many times
    _search(client, q, "session-b", index=OTHER, addr="203.0.113.2")  # another index: not what suggestions serve
    assert q not in _suggested(client, "zeb", "session-z")
    _search(client, q, "session-b", addr="203.0.113.2")
    assert q not in _suggested(client, "zeb", "session-z")
    _search(client, q, "session-c", addr="203.0.113.3")
    assert q in _suggested(client, "zeb", "session-z")
    # related searches: the same rule (clients 1 and 2 issued both, then a third)
    for n in (1, 2):
        _search(client, "vitamin deficiency", f"session-{n}", addr=f"203.0.113.{n}")
        _search(client, "sleep apnea", f"session-{n}", addr=f"203.0.113.{n}")
    assert "sleep apnea" not in _related(client, "vitamin deficiency")
    _search(client, "sleep apnea", "session-3", addr="203.0.113.3")
    assert "sleep apnea" in _related(client, "vitamin deficiency")


def test_one_client_cannot_pass_the_rule_with_made_up_sessions(app: tuple[Path, TestClient]) -> None:
    """Issue 34: the rule counted the client-chosen session ids, so three made-up ones passed it."""
    data_dir, client = app
    q = "sleep deprivation memory"
    for session in ("made-up-1", "made-up-2", "made-up-3", "made-up-4"):
        _search(client, q, session, addr="198.51.100.7")
    assert q not in _suggested(client, "sleep dep", "viewer")
    for n in (8, 9):  # three distinct clients, all sending the same session id
        _search(client, q, "made-up-1", addr=f"198.51.100.{n}")
    assert q in _suggested(client, "sleep dep", "viewer")
    # the log names each client by a digest (no address), the same one for every search from that address
    logged = [json.loads(line) for p in (data_dir / "querylog").glob("querylog-*.jsonl") for line in p.open()]
    ours = [e for e in logged if e["query"] == q and e["type"] == "search"]
    assert len({e["client"] for e in ours}) == 3 and len({e["client"] for e in ours[:4]}) == 1
    assert not any("198.51.100" in json.dumps(e) for e in logged)
    suggests = [e for e in logged if e["type"] == "suggest"]
    assert suggests and all(e.get("client") for e in suggests)


def test_no_form_of_personal_data_is_ever_suggested_or_logged(app: tuple[Path, TestClient]) -> None:
    """Every corpus form, searched by four distinct clients in sessions that also searched a clean query: it is
    logged scrubbed and neither /v1/suggest nor /v1/related returns it."""
    data_dir, client = app
    for i, (form, _, _) in enumerate(PII_FORMS):
        for n in range(4):
            addr, session = f"192.0.2.{n + 1}", f"pii-{i}-{n}"
            _search(client, "vitamin deficiency", session, addr=addr)
            _search(client, f"sleep apnea {form}", session, addr=addr)
    shown = _suggested(client, "sleep apnea", "viewer", k=20) + _suggested(client, "sleep", "viewer", k=20)
    shown += _related(client, "vitamin deficiency") + _related(client, "sleep apnea")
    assert shown  # the clean queries are there
    for text in shown:
        assert contains_pii(text) is None and "<" not in text and "email" not in text and "number" not in text, text
    logged = [json.loads(line) for p in (data_dir / "querylog").glob("querylog-*.jsonl") for line in p.open()]
    pii_queries = [e["query"] for e in logged if e["query"].startswith("sleep apnea ")]
    assert len(pii_queries) >= 4 * len(PII_FORMS)
    assert all(contains_pii(q) is None for q in pii_queries), [q for q in pii_queries if contains_pii(q)]


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


def test_the_issuer_is_the_client_where_an_impression_has_one() -> None:
    """API impressions count by client (what the client cannot choose); in-process ones by session or token."""
    from search.suggest.schemas import SuggestConfig
    from search.suggest.suggester import Suggester

    assert QueryEvent(query="q", session_id="s", client="c-1").issuer == "client:c-1"
    assert QueryEvent(query="q", user_token="u").issuer == "session:u"
    assert QueryEvent(query="q").issuer is None
    s = Suggester(SuggestConfig.model_validate({"lm": {"enabled": False}, "check_results": False, "min_sessions": 3}))
    for session in ("s1", "s2", "s3"):
        s.record(QueryEvent(query="heart rate", result_count=1, session_id=session, client="c-1"))
    assert not s.issuers.shown("heart rate")
    for client in ("c-2", "c-3"):
        s.record(QueryEvent(query="heart rate", result_count=1, session_id="s1", client=client))
    assert s.issuers.shown("heart rate")
    for session in ("s1", "s2", "s3"):  # an in-process simulation: its sessions are all it knows
        s.record(QueryEvent(query="heart attack", result_count=1, session_id=session))
    assert s.issuers.shown("heart attack")


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
