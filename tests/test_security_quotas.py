"""Quotas one client cannot exhaust, authentication before the body, the body-read timeout, and summarize by
query_id answering an impression the key may not see exactly as an unknown one (the in-process app:
`local_backend` + `create_api` on an embedded-store index; uvicorn on a socket where the connection matters)."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from indexing.pipeline import IndexingConfig, IndexingPipeline
from search.stores.embedded import EmbeddedStore
from serving.auth import Guard, SearchAuth
from serving.errors import install_error_handlers
from serving.security import SecurityConfig, hash_key
from tests.widget_server import serve_in_thread

INDEX = "quota-docs"
OTHER = "quota-other"
KEYS = {
    "web": "sk_web_quota_0123456789",  # search, suggest, events: the widget's key, shared by many addresses
    "admin": "sk_admin_quota_0123456789",
    "summ": "sk_summ_quota_0123456789",  # summarize on every index
    "summ-other": "sk_summ_other_0123456789",  # search + summarize on OTHER only
}
SCOPES = {"web": ["search", "suggest", "events"], "admin": ["admin"], "summ": ["summarize"]}


def _keys() -> list[dict[str, Any]]:
    keys = [{"name": n, "sha256": hash_key(KEYS[n]), "scopes": s} for n, s in SCOPES.items()]
    keys.append(
        {"name": "summ-other", "sha256": hash_key(KEYS["summ-other"]), "scopes": ["search", "summarize"],
         "indices": [OTHER]}
    )  # fmt: skip
    return keys


def bearer(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[name]}"}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("security-quotas")
    docs = tmp / "docs.jsonl"
    docs.write_text(
        "".join(json.dumps({"id": f"d{i}", "title": f"Sleep {i}", "text": "sleep memory"}) + "\n" for i in range(5))
    )
    cfg = IndexingConfig(embed=False, dead_letter_dir=tmp / "dead", progress=False)
    for name in (INDEX, OTHER):
        assert IndexingPipeline(EmbeddedStore(tmp / "data" / "indices"), None, cfg).build(docs, name).indexed == 5
    return tmp / "data"


def _app(data_dir: Path, security: dict[str, Any]) -> tuple[Any, Any]:
    from search.settings import Settings
    from serving.api import create_api
    from serving.config import AppConfig
    from serving.local import local_backend

    config = AppConfig.model_validate(
        {
            "data_dir": str(data_dir),
            "search": {"default_index": INDEX, "retrieval": {"mode": "bm25"}},
            "reranker": {"model": None},
            "suggest": {"lm": {"enabled": False}, "prefetch_top": 0},
            "summarizer": None,
            "security": security,
        }
    )
    backend = local_backend(config, Settings())
    return backend, create_api(backend, backend.metrics)


@pytest.fixture
def make_app(data_dir: Path) -> Iterator[Any]:
    made: list[Any] = []

    def make(security: dict[str, Any]) -> Any:
        backend, app = _app(data_dir, {"keys": _keys(), **security})
        made.append(backend)
        return app

    yield make
    for backend in made:
        backend.suggest.close()
        backend.store.close()


def _from(app: Any, address: str) -> TestClient:
    return TestClient(app, client=(address, 40000))


def test_one_address_cannot_spend_a_shared_keys_budget(make_app: Any) -> None:
    app = make_app({"rate_limits": {"per_key": "5/minute", "per_client": "3/minute"}})
    search = {"query": "sleep"}
    a, b = _from(app, "10.0.0.1"), _from(app, "10.0.0.2")
    codes = [a.post("/v1/search", json=search, headers=bearer("web")).status_code for _ in range(6)]
    assert codes == [200, 200, 200, 429, 429, 429]  # the address's own 3/minute
    # its three refused requests spent nothing of the key's 5/minute: two are left for another address
    codes = [b.post("/v1/search", json=search, headers=bearer("web")).status_code for _ in range(3)]
    assert codes == [200, 200, 429]
    r = b.post("/v1/search", json=search, headers=bearer("web"))
    assert r.status_code == 429 and "5 per 1 minute" in r.json()["detail"] and int(r.headers["retry-after"]) >= 1
    # nor did the key's refusals spend the second address's own budget: a third address has the same
    assert _from(app, "10.0.0.3").post("/v1/search", json=search, headers=bearer("web")).status_code == 429


def test_missing_and_unknown_keys_are_rate_limited_per_address(make_app: Any) -> None:
    app = make_app({"rate_limits": {"unauthenticated": "3/minute"}})
    a = _from(app, "10.0.1.1")
    guesses = [{}, {"X-API-Key": "sk_guess_1"}, {"Authorization": "Bearer sk_guess_2"}, {"X-API-Key": "sk_guess_3"}]
    responses = [a.post("/v1/search", json={"query": "sleep"}, headers=h) for h in guesses]
    assert [r.status_code for r in responses] == [401, 401, 401, 429]
    assert 1 <= int(responses[-1].headers["retry-after"]) <= 60
    assert a.get("/v1/suggest", params={"q": "sl"}).status_code == 429  # every keyed route, one budget
    assert _from(app, "10.0.1.2").post("/v1/search", json={"query": "sleep"}).status_code == 401  # per address
    # a valid key from the same address is not refused: its quotas are per_client and per_key
    assert a.post("/v1/search", json={"query": "sleep"}, headers=bearer("web")).status_code == 200
    # open routes stay open for it
    for path in ["/healthz", "/readyz", "/openapi.json", "/docs", "/", "/widget/sift-autocomplete.js"]:
        assert a.get(path).status_code == 200, path


def test_no_body_is_read_or_parsed_without_a_valid_key(make_app: Any) -> None:
    app = make_app({})
    client = _from(app, "10.0.2.1")
    malformed = b'{"query": "sleep", '
    headers = {"content-type": "application/json"}
    assert client.post("/v1/search", content=malformed, headers=headers).status_code == 401
    assert client.post("/v1/events", content=b"[[[", headers=headers).status_code == 401
    r = client.post("/v1/summarize", content=malformed, headers={**headers, **bearer("web")})
    assert r.status_code == 403 and "summarize" in r.json()["detail"]  # a key without the scope: 403, unparsed
    r = client.post("/v1/search", content=malformed, headers={**headers, **bearer("web")})
    assert r.status_code == 422  # with a key, the body is parsed as before
    metrics = client.get("/metrics", headers=bearer("admin")).text  # refusals are counted under their route
    assert re.search(r'requests_total\{[^}]*route="/v1/search"[^}]*status="401"[^}]*\} 1\.0', metrics), metrics

    async def untouched() -> dict[str, Any]:
        raise AssertionError("the body of an unauthenticated request was read")

    status, response_headers, body = asyncio.run(_call(app, "/v1/search", {"content-length": "1000"}, untouched))
    assert status == 401 and json.loads(body)["detail"] == "an API key is required"
    assert response_headers["www-authenticate"] == "Bearer"
    assert response_headers["connection"] == "close"  # the unread body is not waited for


async def _call(app: Any, path: str, headers: dict[str, str], receive: Any) -> tuple[int, dict[str, str], bytes]:
    """One request straight through the ASGI app, with the given `receive`."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(k.encode(), v.encode()) for k, v in {"content-type": "application/json", **headers}.items()],
        "client": ("10.0.3.1", 40000),
        "server": ("testserver", 80),
    }
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await asyncio.wait_for(app(scope, receive, send), timeout=10)
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], {k.decode(): v.decode() for k, v in start["headers"]}, body


def test_a_body_slower_than_the_timeout_gets_408(make_app: Any) -> None:
    app = make_app({"body_read_timeout_s": 0.3})
    calls = 0

    async def stalls() -> dict[str, Any]:  # the first chunk, then nothing: a slow-loris client
        nonlocal calls
        calls += 1
        if calls == 1:
            return {"type": "http.request", "body": b'{"query": "sl', "more_body": True}
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    t0 = time.monotonic()
    status, headers, body = asyncio.run(_call(app, "/v1/search", {**_lower(bearer("web"))}, stalls))
    elapsed = time.monotonic() - t0
    assert status == 408 and "0.3 s" in json.loads(body)["detail"] and headers["connection"] == "close"
    assert 0.25 <= elapsed < 5, elapsed
    # a whole body within the limit is served as before
    ok = TestClient(app).post("/v1/search", json={"query": "sleep"}, headers=bearer("web"))
    assert ok.status_code == 200 and ok.json()["results"]


def _lower(headers: dict[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


def _raw_exchange(url: str, head: bytes, wait_s: float = 5.0) -> tuple[bytes, bool, float]:
    """Send `head` (request line, headers and part of a body) and never the rest; what came back, whether the
    server closed the connection, and when."""
    parts = urlsplit(url)
    t0 = time.monotonic()
    data, closed = b"", False
    with socket.create_connection((parts.hostname, parts.port), timeout=wait_s) as sock:
        sock.sendall(head)
        try:
            while chunk := sock.recv(65536):
                data += chunk
            closed = True
        except TimeoutError:
            pass
    return data, closed, time.monotonic() - t0


def test_slow_bodies_do_not_hold_connections(make_app: Any) -> None:
    app = make_app({"body_read_timeout_s": 0.5})
    partial = b'{"query": "sl'
    with serve_in_thread(app) as url:
        head = (
            b"POST /v1/search HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 100\r\n"
            + f"Authorization: Bearer {KEYS['web']}\r\n\r\n".encode()
            + partial
        )
        data, closed, elapsed = _raw_exchange(url, head)
        assert data.startswith(b"HTTP/1.1 408"), data[:200]
        assert closed and elapsed < 4, elapsed  # freed by the server, at the timeout
        head = b"POST /v1/search HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n" + partial  # no key
        data, closed, elapsed = _raw_exchange(url, head)
        assert data.startswith(b"HTTP/1.1 401"), data[:200]
        assert closed and elapsed < 2, elapsed  # at once: an unauthenticated body is never waited for


def test_summarize_by_query_id_hides_impressions_the_key_may_not_read(make_app: Any) -> None:
    app = make_app({})
    client = TestClient(app)
    search = client.post("/v1/search", json={"query": "sleep", "index": INDEX}, headers=bearer("admin"))
    assert search.status_code == 200
    query_id = search.json()["query_id"]
    unknown = client.get("/v1/summarize", params={"query_id": "no-such-id", "ids": "d1"}, headers=bearer("summ"))
    assert unknown.status_code == 404
    # the impression exists: a key that may read its index gets past the lookup (503: no LM on this server)
    found = client.get("/v1/summarize", params={"query_id": query_id, "ids": "d1"}, headers=bearer("summ"))
    assert found.status_code == 503
    # a key limited to OTHER: whatever index it names, the same 404 as for an unknown id
    for params in [{}, {"index": OTHER}, {"index": INDEX}]:
        r = client.get(
            "/v1/summarize", params={"query_id": query_id, "ids": "d1", **params}, headers=bearer("summ-other")
        )
        assert (r.status_code, r.json()) == (404, unknown.json()), params
    # an index this server does not serve (another server's impression in the same log): the same 404
    narrow = TestClient(make_app({"indices": [OTHER]}))
    r = narrow.get("/v1/summarize", params={"query_id": query_id, "ids": "d1"}, headers=bearer("summ"))
    assert (r.status_code, r.json()) == (404, unknown.json())
    assert narrow.get("/v1/summarize", params={"query_id": "x1", "ids": "d1"}, headers=bearer("summ")).json() == (
        unknown.json()
    )


def test_malformed_bodies_count_against_the_quotas(make_app: Any) -> None:
    """Quotas are charged from the headers, before FastAPI parses (and refuses) a body."""
    app = make_app({"rate_limits": {"per_key": "100/minute", "per_client": "3/minute"}})
    a = _from(app, "10.0.4.1")
    headers = {"content-type": "application/json", **bearer("web")}
    codes = [a.post("/v1/search", content=b'{"query": ', headers=headers).status_code for _ in range(3)]
    assert codes == [422, 422, 422]
    assert a.post("/v1/search", json={"query": "sleep"}, headers=bearer("web")).status_code == 429
    r = a.post("/v1/events", content=b"[[[", headers=headers)  # every keyed route, before its body is parsed
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
    # the per-key budget too: another address, a tight key budget
    app = make_app({"rate_limits": {"per_key": "2/minute", "per_client": "100/minute"}})
    codes = [_from(app, f"10.0.5.{i}").post("/v1/search", content=b"{", headers=headers).status_code for i in (1, 2, 3)]
    assert codes == [422, 422, 429]


def test_one_address_cannot_spend_a_shared_keys_summaries(make_app: Any) -> None:
    app = make_app({"rate_limits": {"summarize": "5/minute", "per_client_summarize": "2/minute"}})
    params = {"query": "sleep", "ids": "d1"}  # 503: no LM on this server, but past every quota

    def codes(address: str, n: int) -> list[int]:
        client = _from(app, address)
        return [client.get("/v1/summarize", params=params, headers=bearer("summ")).status_code for _ in range(n)]

    assert codes("10.0.6.1", 3) == [503, 503, 429]  # the address's own 2/minute
    assert codes("10.0.6.2", 3) == [503, 503, 429]  # the first address's refusal spent nothing of the key's 5
    assert codes("10.0.6.3", 2) == [503, 429]  # now the key's 5/minute
    r = _from(app, "10.0.6.4").get("/v1/summarize", params=params, headers=bearer("summ"))
    assert r.status_code == 429 and "5 per 1 minute" in r.json()["detail"]


def test_require_admits_where_no_gate_ran() -> None:
    """The route dependency alone (an app without `KeyGateMiddleware`) still authenticates and charges, once."""
    keys = [{"name": "web", "sha256": hash_key(KEYS["web"]), "scopes": ["search"]}]
    security = SecurityConfig.model_validate({"keys": keys, "rate_limits": {"per_client": "2/minute"}})
    bare = FastAPI()
    bare.state.guard = Guard(security)
    install_error_handlers(bare)

    @bare.get("/who")
    def who(principal: SearchAuth) -> dict[str, str]:
        return {"name": principal.name or "", "client": principal.client}

    client = _from(bare, "2001:db8:7:7::1")
    assert client.get("/who").status_code == 401
    assert client.get("/who", headers=bearer("web")).json() == {"name": "web", "client": "2001:db8:7:7::/64"}
    assert client.get("/who", headers=bearer("web")).status_code == 200
    assert _from(bare, "2001:db8:7:7::2").get("/who", headers=bearer("web")).status_code == 429  # the same /64


def test_a_non_ascii_digit_content_length_is_no_500(make_app: Any) -> None:
    """`"²".isdigit()` is True and `int("²")` raises: a refusal for such a header must still be a plain 401."""
    from starlette.datastructures import Headers

    from serving.gate import _body_pending

    assert not _body_pending(Headers(raw=[(b"content-length", "²".encode("latin-1"))]))
    assert _body_pending(Headers(raw=[(b"content-length", b"12")]))
    app = make_app({})

    async def nothing() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def run() -> tuple[int, dict[str, str], bytes]:
        sent: list[dict[str, Any]] = []

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
            "path": "/v1/search", "raw_path": b"/v1/search", "query_string": b"", "root_path": "",
            "headers": [(b"content-length", "²".encode("latin-1"))], "client": ("10.0.7.1", 1),
            "server": ("testserver", 80),
        }  # fmt: skip
        await asyncio.wait_for(app(scope, nothing, send), timeout=10)
        start = next(m for m in sent if m["type"] == "http.response.start")
        body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
        return start["status"], {k.decode(): v.decode() for k, v in start["headers"]}, body

    status, _, body = asyncio.run(run())
    assert status == 401 and json.loads(body)["detail"] == "an API key is required"
