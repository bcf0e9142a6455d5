"""Retention of the Elasticsearch log indices keeps running while the server is up, not only at start: the query
log's flush thread and the click log's writes purge what passed the retention, once per period."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from logs.clicklog import ClickRecord, EsClickLog
from logs.querylog import QueryEvent
from logs.querylog_es import EsQueryLog, PeriodicPurge

pytestmark = pytest.mark.es


def _old(days: float) -> datetime:
    return datetime.now(UTC) - timedelta(days=days)


def _left(client: object, index: str, field: str) -> list[str]:
    client.indices.refresh(index=index)  # type: ignore[attr-defined]
    hits = client.search(index=index, query={"match_all": {}}, sort=[{field: "asc"}])["hits"]["hits"]  # type: ignore[attr-defined]
    return [h["_id"] for h in hits]


def _wait_for(check: object, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return True
        time.sleep(0.2)
    return False


def test_the_query_log_purges_periodically_while_running(es_url: str, index_name: str) -> None:
    from elasticsearch import Elasticsearch

    client = Elasticsearch(es_url)
    index = f"ql-{index_name}"
    qlog = EsQueryLog(client, index, flush_interval_s=0.1, retention_days=30, retention_check_s=1.0)
    try:
        qlog.append(QueryEvent(query="kept", query_id="new", ts=_old(1)))
        qlog.flush()
        assert _left(client, index, "ts") == ["new"]
        # an event that is old by now (as if the server had been up for months) arrives after the start
        client.index(index=index, id="stale", document={"ts": _old(45).isoformat(), "query": "gone"}, refresh=True)
        assert sorted(_left(client, index, "ts")) == ["new", "stale"]
        assert _wait_for(lambda: _left(client, index, "ts") == ["new"]), "the stale event was never purged"
        purge = qlog.purge
        assert purge is not None
        assert _wait_for(lambda: purge.deleted == 1), purge.deleted  # the count lands just after the delete
    finally:
        qlog.close()
        client.indices.delete(index=index, ignore_unavailable=True)
        client.close()


def test_the_click_log_purges_on_a_later_write(es_url: str, index_name: str) -> None:
    from elasticsearch import Elasticsearch

    client = Elasticsearch(es_url)
    index = f"cl-{index_name}"
    clog = EsClickLog(client, index, retention_days=30, retention_check_s=0.5)
    try:

        def rec(event_id: str, days: float) -> ClickRecord:
            ts = _old(days)
            return ClickRecord(
                event_id=event_id, type="click", event_name="c", query_id="q", object_ids=["d"], ts=ts, received_at=ts
            )

        assert clog.append_many([rec("new", 0), rec("stale", 40)]) == (2, 0)
        assert sorted(_left(client, index, "received_at")) == ["new", "stale"]  # not yet due
        time.sleep(0.6)
        clog.append_many([rec("newer", 0)])  # due now: purged in the background
        assert _wait_for(lambda: sorted(_left(client, index, "received_at")) == ["new", "newer"])
    finally:
        clog.close()
        client.indices.delete(index=index, ignore_unavailable=True)
        client.close()


def test_a_failed_purge_is_retried_next_period_and_never_raises() -> None:
    now = [0.0]

    class Down:
        class indices:  # the client's namespace
            @staticmethod
            def exists(index: str) -> bool:
                raise ConnectionError("cluster down")

    purge = PeriodicPurge(Down(), "ql", 30, every_s=10, clock=lambda: now[0])
    assert not purge.due()
    now[0] = 10.0
    purge.run()  # logged, not raised
    assert not purge.due() and purge.deleted == 0
    now[0] = 20.0
    assert purge.due()
