"""POST /v1/events against a caller that lies: keys limited to other indices, event ids taken from others,
replays under another name, click floods, deep JSON, a failed write; and the training readers' view of it
(flagged clicks ignored, one caller's repeated searches counted once). The in-process app with API keys and a
trusted proxy, so each test address is a client of its own."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from indexing.pipeline import IndexingConfig, IndexingPipeline
from logs.clicklog import ClickRecord
from logs.querylog import QueryEvent
from search.stores.embedded import EmbeddedStore
from serving.security import hash_key

SCI, OTHER = "cp-sci", "cp-other"
KEYS = {"admin": "sk_cp_admin_0123456789", "sci": "sk_cp_sci_0123456789", "web": "sk_cp_web_0123456789"}


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, TestClient]]:
    from search.settings import Settings
    from serving.api import create_api
    from serving.config import AppConfig
    from serving.local import local_backend

    tmp = tmp_path_factory.mktemp("click-poisoning")
    docs = tmp / "docs.jsonl"
    docs.write_text(
        "".join(
            json.dumps({"id": f"d{i}", "title": f"insulin {i}", "text": "insulin resistance"}) + "\n" for i in range(8)
        )
    )
    cfg = IndexingConfig(embed=False, dead_letter_dir=tmp / "dead", progress=False)
    for name in (SCI, OTHER):
        IndexingPipeline(EmbeddedStore(tmp / "data" / "indices"), None, cfg).build(docs, name)
    keys = [
        {"name": "admin", "sha256": hash_key(KEYS["admin"]), "scopes": ["admin"]},
        {"name": "sci", "sha256": hash_key(KEYS["sci"]), "scopes": ["search", "events"], "indices": [SCI]},
        {"name": "web", "sha256": hash_key(KEYS["web"]), "scopes": ["search", "events"]},
    ]
    config = AppConfig.model_validate(
        {
            "data_dir": str(tmp / "data"),
            "search": {"default_index": SCI, "retrieval": {"mode": "bm25"}},
            "reranker": {"model": None},
            "suggest": {"enabled": False},
            "summarizer": None,
            "security": {"keys": keys, "rate_limits": None, "trusted_proxies": ["127.0.0.1/32"]},
        }
    )
    backend = local_backend(config, Settings())
    client = TestClient(
        create_api(backend, backend.metrics), client=("127.0.0.1", 50000), raise_server_exceptions=False
    )
    with client:
        yield backend, client
    backend.suggest.close()
    backend.store.close()


def as_(key: str, address: str = "10.0.0.1") -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[key]}", "X-Forwarded-For": address}


def search(client: TestClient, key: str, address: str = "10.0.0.1", **body: Any) -> dict[str, Any]:
    r = client.post("/v1/search", json={"query": "insulin resistance", "limit": 5, **body}, headers=as_(key, address))
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def click(resp: dict[str, Any], pos: int = 1, **extra: Any) -> dict[str, Any]:
    doc = resp["results"][pos - 1]["id"]
    ev = {"type": "click", "event_name": "Result clicked", "query_id": resp["query_id"], "positions": [pos]}
    return {**ev, "object_ids": [doc], **extra}


def post(client: TestClient, key: str, events: list[dict[str, Any]], address: str = "10.0.0.1") -> Any:
    return client.post("/v1/events", json={"events": events}, headers=as_(key, address))


def stored(backend: Any, query_id: str) -> list[ClickRecord]:
    return [r for r in backend.events.clicks.read() if r.query_id == query_id]


def test_an_impression_of_an_index_the_key_may_not_read_is_unknown_to_it(api: Any) -> None:
    backend, client = api
    other = search(client, "admin", index=OTHER)
    r = post(client, "sci", [click(other)])
    assert r.status_code == 422 and "unknown query_id" in r.json()["detail"][0]["msg"], r.text  # not "forbidden"
    assert stored(backend, other["query_id"]) == []
    unknown = post(client, "sci", [click(other, query_id="0" * 32)]).json()["detail"][0]["msg"]
    assert unknown.replace("0" * 32, other["query_id"]) == r.json()["detail"][0]["msg"]  # the same answer
    assert post(client, "sci", [click(search(client, "sci"))]).status_code == 202
    assert post(client, "web", [click(other)]).status_code == 202  # a key for every index may


def test_records_carry_the_server_known_identity_not_the_client_chosen_ids(api: Any) -> None:
    backend, client = api
    resp = search(client, "web", "10.0.0.2", session_id="s-honest", user_token="u-honest")
    r = post(client, "web", [click(resp, session_id="s-made-up", user_token="u-made-up")], "10.0.0.2")
    assert r.status_code == 202, r.text
    (rec,) = stored(backend, resp["query_id"])
    assert rec.client and rec.client.startswith("c-") and "10.0.0.2" not in rec.client
    assert (rec.session_id, rec.user_token) == ("s-honest", "u-honest")  # the impression's, as logged
    other = search(client, "web", "10.0.0.3")
    post(client, "web", [click(other)], "10.0.0.3")
    assert stored(backend, other["query_id"])[0].client != rec.client  # another address: another identity


def test_one_client_cannot_pre_empt_another_clients_event_id(api: Any) -> None:
    backend, client = api
    victim, attacker = search(client, "web", "10.0.1.1"), search(client, "web", "10.0.1.2")
    eid = f"e-{uuid.uuid4().hex}"
    first = post(client, "web", [click(attacker, event_id=eid)], "10.0.1.2")
    assert first.json()["accepted"] == 1
    mine = post(client, "web", [click(victim, event_id=eid)], "10.0.1.1")
    assert mine.status_code == 202 and mine.json() == {"accepted": 1, "duplicates": 0, "event_ids": [eid]}
    retry = post(client, "web", [click(victim, event_id=eid)], "10.0.1.1")
    assert retry.json()["accepted"] == 0 and retry.json()["duplicates"] == 1  # the victim's own retry
    assert len(stored(backend, victim["query_id"])) == 1


def test_a_replay_under_another_event_name_is_a_duplicate(api: Any) -> None:
    backend, client = api
    resp = search(client, "web", "10.0.2.1")
    ts = int(datetime.now(UTC).timestamp() * 1000)
    a = post(client, "web", [click(resp, timestamp=ts)], "10.0.2.1").json()
    b = post(client, "web", [click(resp, timestamp=ts, event_name="Clicked again", session_id="x")], "10.0.2.1")
    assert a["accepted"] == 1 and b.json()["accepted"] == 0 and b.json()["duplicates"] == 1
    assert len(stored(backend, resp["query_id"])) == 1


def test_clicks_past_the_caps_are_stored_flagged(api: Any) -> None:
    backend, client = api
    per_impression = backend.events.config.max_clicks_per_impression  # defaults: 5 and 20
    per_caller = backend.events.config.max_clicks_per_identity_query
    resp = search(client, "web", "10.0.3.1")
    flood = [click(resp, event_id=f"f-{uuid.uuid4().hex}") for _ in range(per_impression + 7)]
    r = post(client, "web", flood, "10.0.3.1")
    assert r.status_code == 202 and r.json()["accepted"] == len(flood)  # nothing for an attacker to tune by
    flags = [rec.flagged for rec in stored(backend, resp["query_id"])]
    assert flags.count(None) == per_impression and flags.count("impression_cap") == 7
    again = post(client, "web", flood, "10.0.3.1").json()  # a retry is not counted twice
    assert again["duplicates"] == len(flood)
    # The same caller searching the query again and clicking: per identity and query, `per_caller` objects a
    # day, the flood counted; then only another caller's impression still counts.
    for n in range(len(flood), per_caller + 1):
        mine = search(client, "web", "10.0.3.1")
        post(client, "web", [click(mine, 2)], "10.0.3.1")
        expected = None if n < per_caller else "identity_cap"
        assert stored(backend, mine["query_id"])[0].flagged == expected, n
    theirs = search(client, "web", "10.0.3.2")
    post(client, "web", [click(theirs, 2)], "10.0.3.2")
    assert stored(backend, theirs["query_id"])[0].flagged is None


def test_in_process_events_are_not_capped(api: Any) -> None:
    import asyncio

    from logs.events import EventsBatch

    backend, client = api
    resp = search(client, "web", "10.0.3.9")
    flood = [
        click(resp, event_id=f"p-{uuid.uuid4().hex}")
        for _ in range(backend.events.config.max_clicks_per_impression + 3)
    ]
    asyncio.run(backend.events.record(EventsBatch.model_validate({"events": flood})))  # the simulator's path
    recs = stored(backend, resp["query_id"])
    assert len(recs) == len(flood) and all(r.flagged is None and r.client is None for r in recs)


def test_deeply_nested_json_is_a_422(api: Any) -> None:
    _, client = api
    for body in (b"[" * 200_000, b'{"events": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"):
        r = client.post("/v1/events", content=body, headers=as_("web"))
        assert r.status_code == 422, r.text[:300]
        assert "too deeply" in r.json()["detail"][0]["msg"]


def test_a_click_whose_write_failed_is_stored_by_its_retry(api: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    backend, client = api
    resp = search(client, "web", "10.0.4.1")
    ev = click(resp, event_id=f"e-{uuid.uuid4().hex}")
    real, calls = os.fsync, []

    def fail_once(fd: int) -> None:
        calls.append(fd)
        if len(calls) == 1:
            raise OSError(5, "Input/output error")
        real(fd)

    monkeypatch.setattr(os, "fsync", fail_once)
    assert post(client, "web", [ev], "10.0.4.1").status_code == 500
    retry = post(client, "web", [ev], "10.0.4.1")
    assert retry.status_code == 202 and retry.json()["accepted"] == 1, retry.text
    assert len(stored(backend, resp["query_id"])) == 1


def _imp(qid: str, client: str | None, shown: list[str], minute: int = 0) -> QueryEvent:
    ts = datetime(2026, 12, 1, tzinfo=UTC) + timedelta(minutes=minute)
    return QueryEvent(
        type="search", query="Insulin", result_count=len(shown), query_id=qid, shown=shown, client=client, ts=ts
    )


def _click(qid: str, pos: int, flagged: str | None = None) -> ClickRecord:
    ts = datetime(2026, 12, 1, 1, tzinfo=UTC)
    return ClickRecord(
        event_id=uuid.uuid4().hex, type="click", event_name="c", query_id=qid, object_ids=[f"d{pos}"],
        positions=[pos], ts=ts, received_at=ts, flagged=flagged,
    )  # fmt: skip


def test_training_counts_one_caller_once_and_ignores_flagged_clicks() -> None:
    from training.click_logs import sessions_from_logs

    page = [f"d{i}" for i in range(1, 11)]
    imps = [_imp(f"a{i}", "c-attacker", page, i) for i in range(50)]  # one caller, 50 searches of one query
    imps += [_imp(f"h{i}", f"c-user{i}", page, 100 + i) for i in range(3)]  # three callers, once each
    imps += [_imp(f"s{i}", None, page, 200 + i) for i in range(4)]  # in-process: no identity, all kept
    clicks = [_click(f"a{i}", 10) for i in range(1, 50)] + [_click("h0", 1), _click("h1", 2, "impression_cap")]
    sessions = sessions_from_logs(imps, clicks)
    assert len(sessions) == 1 + 3 + 4
    attacker = [s for s in sessions if s.query_id.startswith("a")]
    assert [s.query_id for s in attacker] == ["a1"]  # its first clicked impression stands for all of them
    assert attacker[0].clicks == (False,) * 9 + (True,)
    by_id = {s.query_id: s for s in sessions}
    assert by_id["h0"].clicks[0] and not any(by_id["h1"].clicks)  # the flagged click does not count
    assert [s.query_id for s in sessions if s.query_id.startswith("s")] == ["s0", "s1", "s2", "s3"]


def test_a_timestamp_at_the_edge_of_the_date_range_is_a_422(api: Any) -> None:
    backend, client = api
    resp = search(client, "web", "10.0.5.1")
    cases = {
        "9999-12-31T23:59:59-01:00": "out of range",  # past year 9999 in UTC
        "0001-01-01T00:00:00+01:00": "out of range",  # before year 1 in UTC
        "9999-12-31T23:59:59Z": "in the future",
        253402300799999: "in the future",  # epoch milliseconds of the last one
    }
    for ts, msg in cases.items():
        r = post(client, "web", [click(resp, timestamp=ts)], "10.0.5.1")
        assert r.status_code == 422, (ts, r.status_code, r.text[:300])
        (err,) = r.json()["detail"]
        assert err["loc"][:4] == ["body", "events", 0, "timestamp"] and msg in err["msg"], (ts, err)
    assert stored(backend, resp["query_id"]) == []


def test_a_flood_far_past_the_caps_is_refused_and_nothing_of_it_is_stored(api: Any) -> None:
    backend, client = api
    resp = search(client, "web", "10.0.6.1")
    limit = 10 * backend.events.config.max_clicks_per_impression
    before = backend.events.caps.remembered()
    for _ in range(20):  # 20,000 clicks on one response, 1,000 a batch
        flood = [click(resp, event_id=f"f-{uuid.uuid4().hex}") for _ in range(1000)]
        r = post(client, "web", flood, "10.0.6.1")
        assert r.status_code == 422, r.text[:300]
    detail = r.json()["detail"]
    assert len(detail) == 1000 - limit and detail[0]["loc"] == ["body", "events", limit, "query_id"]
    assert "refused" in detail[0]["msg"] and "max_clicks_per_impression" in detail[0]["msg"]
    assert stored(backend, resp["query_id"]) == [] and backend.events.caps.remembered() == before
