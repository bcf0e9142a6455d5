"""The keystroke server is no way around the API's edge: the same quotas (per client before per key, the
unauthenticated limit, 429 with Retry-After), the same suggest impression per answer, and the same 4xx for bad
input, methods and CORS. A small in-memory suggester: no index is needed to ask these."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from fastapi.testclient import TestClient

from logs.querylog import QueryEvent
from search.suggest.schemas import SuggestConfig
from search.suggest.suggester import Suggester
from serving.auth import Guard, Principal
from serving.keystroke import MAX_QUERY_STRING_BYTES, KeystrokeApp, with_cors
from serving.security import RateLimits, SecurityConfig, new_key

INDEX = "docs"
KEY, ENTRY = new_key(["suggest"], "widget")


@pytest.fixture(scope="module")
def suggester() -> Suggester:
    s = Suggester(SuggestConfig(lm={"enabled": False}, min_sessions=1), index=INDEX)  # type: ignore[arg-type]
    for i, q in enumerate(["capture output", "capture output of subprocess", "csv reader"]):
        s.record(QueryEvent(type="search", query=q, result_count=3, session_id=f"s{i}", client=f"c{i}"))
    return s


def _guard(**limits: str) -> Guard:
    return Guard(SecurityConfig(keys=[ENTRY], rate_limits=RateLimits(**limits)))


def _client(app: Any, address: str = "203.0.113.7") -> TestClient:
    return TestClient(app, client=(address, 50000))


def _get(c: TestClient, q: str = "cap", key: str | None = KEY) -> Any:
    return c.get("/v1/suggest", params={"q": q}, headers={"X-API-Key": key} if key else {})


def test_a_client_past_its_quota_gets_429_with_retry_after(suggester: Suggester) -> None:
    app = KeystrokeApp(suggester, INDEX, _guard(per_client="3/minute", per_key="100/minute"))
    c = _client(app)
    assert [_get(c).status_code for _ in range(3)] == [200, 200, 200]
    refused = _get(c)
    assert refused.status_code == 429 and "3 per 1 minute" in refused.json()["detail"]
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert _get(c, q="csv").status_code == 429  # a new prefix (an LRU miss) is counted the same


def test_per_client_is_charged_before_per_key(suggester: Suggester) -> None:
    """One address past its own quota spends none of the shared (widget) key's: another address still gets
    the key's remainder, and then the key's limit refuses it."""
    app = KeystrokeApp(suggester, INDEX, _guard(per_client="2/minute", per_key="3/minute"))
    a, b = _client(app, "203.0.113.7"), _client(app, "198.51.100.9")
    assert [_get(a).status_code for _ in range(5)] == [200, 200, 429, 429, 429]
    assert _get(b).status_code == 200  # a's refused requests did not count against the key
    over = _get(b)
    assert over.status_code == 429 and "3 per 1 minute" in over.json()["detail"]  # the key's limit now


def test_requests_without_a_known_key_count_against_the_unauthenticated_limit(suggester: Suggester) -> None:
    app = KeystrokeApp(suggester, INDEX, _guard(unauthenticated="2/minute"))
    c = _client(app)
    first, second = _get(c, key=None), _get(c, key="sk_guessed")
    assert first.status_code == second.status_code == 401 and first.headers["www-authenticate"] == "Bearer"
    third = _get(c, key="sk_guessed_again")
    assert third.status_code == 429 and int(third.headers["retry-after"]) >= 1
    assert _get(_client(app, "198.51.100.9"), key=None).status_code == 401  # per address
    assert _get(c).status_code == 200  # a real key is not the unauthenticated budget


def test_the_quotas_follow_the_security_config_and_trusted_proxies(suggester: Suggester) -> None:
    """Behind a trusted proxy the client is X-Forwarded-For's, as at the API; null rate_limits: no quota."""
    guard = Guard(
        SecurityConfig(keys=[ENTRY], rate_limits=RateLimits(per_client="1/minute"), trusted_proxies=["10.0.0.0/8"])
    )
    c = _client(KeystrokeApp(suggester, INDEX, guard), "10.1.2.3")
    hdr = {"X-API-Key": KEY}
    for who in ("192.0.2.1", "192.0.2.2"):
        assert c.get("/v1/suggest?q=cap", headers={**hdr, "X-Forwarded-For": who}).status_code == 200
    assert c.get("/v1/suggest?q=cap", headers={**hdr, "X-Forwarded-For": "192.0.2.1"}).status_code == 429
    free = _client(KeystrokeApp(suggester, INDEX, Guard(SecurityConfig(keys=[ENTRY], rate_limits=None))))
    assert all(_get(free).status_code == 200 for _ in range(30))


def test_each_answer_logs_the_apis_suggest_impression(suggester: Suggester) -> None:
    logged: list[QueryEvent] = []
    guard = _guard()
    app = KeystrokeApp(suggester, INDEX, guard, record=logged.append, versions={"retrieval": "bm25"})
    c = _client(app)
    one = c.get(
        "/v1/suggest", params={"q": "capt", "session_id": "s-1", "user_token": "u-1"}, headers={"X-API-Key": KEY}
    )
    two = c.get("/v1/suggest", params={"q": "capt"}, headers={"X-API-Key": KEY})  # from the LRU
    assert one.status_code == two.status_code == 200
    texts = [s["text"] for s in one.json()["suggestions"]]
    assert texts and one.json()["query_id"] != two.json()["query_id"]  # one impression per answer
    assert one.headers["etag"] == two.headers["etag"]  # the ETag leaves the query_id out, as the API's
    assert [e.query_id for e in logged] == [one.json()["query_id"], two.json()["query_id"]]
    ev = logged[0]
    identity = Principal("widget", frozenset(), None, client="203.0.113.7", identity_key=guard.identity_key).identity
    assert (ev.type, ev.query, ev.shown, ev.result_count, ev.index) == ("suggest", "capt", texts, len(texts), INDEX)
    assert (ev.session_id, ev.user_token, ev.client, ev.versions) == ("s-1", "u-1", identity, {"retrieval": "bm25"})
    # as the API: a revalidated answer (304) and a blank prefix log nothing; a blank one still has a query_id
    again = c.get("/v1/suggest?q=capt", headers={"X-API-Key": KEY, "If-None-Match": one.headers["etag"]})
    blank = c.get("/v1/suggest?q=+", headers={"X-API-Key": KEY})
    assert again.status_code == 304 and len(blank.json()["query_id"]) == 32 and len(logged) == 2
    refused = c.get("/v1/suggest?q=capt&k=0", headers={"X-API-Key": KEY})
    assert refused.status_code == 422 and len(logged) == 2


def test_a_failing_log_never_fails_the_answer(suggester: Suggester) -> None:
    def broken(event: QueryEvent) -> None:
        raise OSError("disk full")

    r = _client(KeystrokeApp(suggester, INDEX, record=broken)).get("/v1/suggest?q=capt")
    assert r.status_code == 200 and r.json()["suggestions"]


@pytest.mark.parametrize(
    ("query", "status"),
    [
        ("q=" + "x" * 201, 422),
        ("q=" + "%C3%A9" * 201, 422),  # 201 characters, 402 bytes
        ("q=" + "x" * (MAX_QUERY_STRING_BYTES + 1), 414),
        ("q=%ff%fe", 422),  # not UTF-8
        ("q=ab&session_id=" + "s" * 201, 422),
        ("q=ab&user_token=" + "u" * 201, 422),
        ("&".join(f"f{i}=1" for i in range(21)), 422),
    ],
)
def test_bad_query_strings_are_4xx_with_a_message(suggester: Suggester, query: str, status: int) -> None:
    r = _client(KeystrokeApp(suggester, INDEX)).get(f"/v1/suggest?{query}")
    assert r.status_code == status and r.json()["detail"]


def test_the_longest_valid_prefix_is_answered(suggester: Suggester) -> None:
    r = _client(KeystrokeApp(suggester, INDEX)).get("/v1/suggest", params={"q": "é" * 200, "session_id": "s" * 200})
    assert r.status_code == 200 and r.json()["query"] == "é" * 200


def _raw(
    app: Any, query_string: bytes, headers: list[tuple[bytes, bytes]] | None = None
) -> tuple[int, dict[bytes, bytes], bytes]:
    """One request straight through ASGI: bytes no HTTP client would send (raw non-ASCII in the query string)."""
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": "/v1/suggest", "query_string": query_string,
             "headers": headers or [], "client": ("203.0.113.7", 1)}  # fmt: skip
    asyncio.run(app(scope, receive, send))
    return sent[0]["status"], dict(sent[0]["headers"]), sent[1]["body"]


def test_raw_non_ascii_and_declared_bodies(suggester: Suggester) -> None:
    app = KeystrokeApp(suggester, INDEX)
    status, _, body = _raw(app, "q=caf\xe9".encode("latin-1"))
    assert status == 422 and b"UTF-8" in body
    status, headers, _ = _raw(app, b"q=cap", [(b"content-length", b"2000000")])
    assert status == 413 and headers[b"connection"] == b"close"  # over security.max_body_bytes, never read
    status, headers, _ = _raw(app, b"q=cap", [(b"content-length", b"5")])
    assert status == 200 and headers[b"connection"] == b"close"  # a body is never read: the connection goes


def test_methods_head_and_cors(suggester: Suggester) -> None:
    app = KeystrokeApp(suggester, INDEX, _guard())
    c = _client(app)
    get = _get(c, q="capt")
    head = c.head("/v1/suggest?q=capt", headers={"X-API-Key": KEY})
    assert head.status_code == 200 and head.content == b""
    assert (
        head.headers["content-length"] == get.headers["content-length"] and head.headers["etag"] == get.headers["etag"]
    )
    for method in ("POST", "PUT", "DELETE", "OPTIONS"):
        r = c.request(method, "/v1/suggest?q=capt", headers={"X-API-Key": KEY})
        assert r.status_code == 405 and r.headers["allow"] == "GET, HEAD" and r.json()["detail"]
    site = "https://site.example"
    cors = _client(with_cors(KeystrokeApp(suggester, INDEX, _guard()), [site]))
    pre = cors.options(
        "/v1/suggest",
        headers={"Origin": site, "Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "x-api-key"},
    )
    assert pre.status_code == 200 and pre.headers["access-control-allow-origin"] == site  # before the key check
    ok = cors.get("/v1/suggest?q=capt", headers={"Origin": site, "X-API-Key": KEY})
    assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == site
    denied = cors.get("/v1/suggest?q=capt", headers={"Origin": site})
    assert denied.status_code == 401 and denied.headers["access-control-allow-origin"] == site  # a page sees why
    other = cors.options(
        "/v1/suggest", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"}
    )
    assert other.status_code == 400 and "access-control-allow-origin" not in other.headers
    assert with_cors(app, []) is app
