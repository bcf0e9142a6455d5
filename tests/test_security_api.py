"""API keys, scopes, quotas and the body cap over HTTP (the in-process app: `local_backend` + `create_api` on an
embedded-store index), and the refusal to serve an open API beyond loopback."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from indexing.pipeline import IndexingConfig, IndexingPipeline
from search.stores.embedded import EmbeddedStore
from serving.security import InsecureBind, SecurityConfig, check_bind, hash_key, new_key

INDEX = "sec-docs"
OTHER = "sec-other"
KEYS = {
    "admin": "sk_admin_0123456789",
    "web": "sk_web_0123456789",  # search, suggest, events: the widget's key
    "other": "sk_other_0123456789",  # search on OTHER only
    "summ": "sk_summ_0123456789",
    "tight": "sk_tight_0123456789",  # a tiny per-key quota lives on its own app
}


def _key(name: str, scopes: list[str], indices: list[str] | None = None) -> dict[str, Any]:
    return {"name": name, "sha256": hash_key(KEYS[name]), "scopes": scopes, "indices": indices}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("security-api")
    docs = tmp / "docs.jsonl"
    docs.write_text(
        "".join(json.dumps({"id": f"d{i}", "title": f"Sleep {i}", "text": "sleep memory"}) + "\n" for i in range(5))
    )
    cfg = IndexingConfig(embed=False, dead_letter_dir=tmp / "dead", progress=False)
    for name in (INDEX, OTHER):
        assert IndexingPipeline(EmbeddedStore(tmp / "data" / "indices"), None, cfg).build(docs, name).indexed == 5
    return tmp / "data"


def _client(data_dir: Path, security: dict[str, Any], lm: bool = False) -> tuple[Any, TestClient]:
    """`lm`: the suggester has an LM (never called here: blank prefixes get no completion)."""
    from search.settings import Settings
    from serving.api import create_api
    from serving.config import AppConfig
    from serving.local import local_backend

    config = AppConfig.model_validate(
        {
            "data_dir": str(data_dir),
            "search": {"default_index": INDEX, "retrieval": {"mode": "bm25"}},
            "reranker": {"model": None},
            "suggest": {"lm": {"enabled": lm, "lm": {"model": "no-such-lm"}}, "prefetch_top": 0},
            "summarizer": None,
            "security": security,
        }
    )
    backend = local_backend(config, Settings())
    return backend, TestClient(create_api(backend, backend.metrics))


@pytest.fixture(scope="module")
def keyed(data_dir: Path) -> Iterator[TestClient]:
    keys = [
        _key("admin", ["admin"]),
        _key("web", ["search", "suggest", "events"]),
        _key("other", ["search"], [OTHER]),
        _key("summ", ["summarize"]),
    ]
    backend, client = _client(data_dir, {"keys": keys, "max_body_bytes": 4096})
    with client:
        yield client
    backend.suggest.close()
    backend.store.close()


def bearer(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[name]}"}


def test_401_without_or_with_unknown_key(keyed: TestClient) -> None:
    for headers in [{}, {"X-API-Key": "sk_wrong"}, {"Authorization": "Bearer sk_wrong"}, {"Authorization": "Basic x"}]:
        r = keyed.post("/v1/search", json={"query": "sleep"}, headers=headers)
        assert r.status_code == 401, (headers, r.text)
        assert r.headers["www-authenticate"] == "Bearer"
    assert keyed.get("/v1/suggest", params={"q": "sl"}).status_code == 401
    assert keyed.post("/v1/events", content=b"{}").status_code == 401
    assert keyed.get("/v1/summarize", params={"query": "q", "ids": "d1"}).status_code == 401


def test_both_headers_authenticate_and_open_routes_stay_open(keyed: TestClient) -> None:
    assert keyed.post("/v1/search", json={"query": "sleep"}, headers=bearer("web")).json()["results"]
    r = keyed.post("/v1/search", json={"query": "sleep"}, headers={"X-API-Key": KEYS["web"]})
    assert r.status_code == 200 and r.json()["results"]
    assert keyed.get("/v1/suggest", params={"q": "sl"}, headers=bearer("web")).status_code == 200
    assert keyed.get("/healthz").status_code == 200
    assert keyed.get("/readyz").status_code == 200
    schema = keyed.get("/openapi.json").json()
    assert {"HTTPBearer", "APIKeyHeader"} <= set(schema["components"]["securitySchemes"])


def test_403_out_of_scope_or_index(keyed: TestClient) -> None:
    r = keyed.post("/v1/search", json={"query": "sleep"}, headers=bearer("summ"))
    assert r.status_code == 403 and "search" in r.json()["detail"]
    assert keyed.get("/v1/summarize", params={"query": "q", "ids": "d1"}, headers=bearer("web")).status_code == 403
    assert keyed.get("/v1/suggest", params={"q": "sl"}, headers=bearer("other")).status_code == 403
    # a key restricted to OTHER: the default index and a named one are refused, OTHER answers
    assert keyed.post("/v1/search", json={"query": "sleep"}, headers=bearer("other")).status_code == 403
    r = keyed.post("/v1/search", json={"query": "sleep", "index": INDEX}, headers=bearer("other"))
    assert r.status_code == 403 and INDEX in r.json()["detail"]
    r = keyed.post("/v1/search", json={"query": "sleep", "index": OTHER}, headers=bearer("other"))
    assert r.status_code == 200 and r.json()["index"] == OTHER
    body = {"search": {"query": "sleep", "index": INDEX}}
    assert keyed.post("/v1/summarize", json=body, headers=bearer("summ")).status_code == 503  # allowed: no LM here
    # /metrics is for admin keys
    assert keyed.get("/metrics").status_code == 401
    assert keyed.get("/metrics", headers=bearer("web")).status_code == 403
    r = keyed.get("/metrics", headers=bearer("admin"))
    assert r.status_code == 200 and "sift" in r.text
    assert keyed.post("/v1/search", json={"query": "sleep", "index": OTHER}, headers=bearer("admin")).status_code == 200


def test_413_before_parsing(keyed: TestClient) -> None:
    big = {"query": "sleep", "session_id": "x" * 5000}
    r = keyed.post("/v1/search", json=big, headers=bearer("web"))
    assert r.status_code == 413 and "4096" in r.json()["detail"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        yield b'{"events": ['
        for _ in range(100):
            yield b" " * 100
        yield b"]}"

    r = keyed.post("/v1/events", content=chunks(), headers={**bearer("web"), "content-type": "text/plain"})
    assert r.status_code == 413, r.text


def test_429_with_retry_after(data_dir: Path) -> None:
    security = {
        "keys": [_key("tight", ["search", "summarize"])],
        "rate_limits": {"per_key": "3/minute", "per_client": "100/minute", "summarize": "1/minute"},
    }
    backend, client = _client(data_dir, security)
    with client:
        codes = [
            client.post("/v1/search", json={"query": "sleep"}, headers=bearer("tight")).status_code for _ in range(4)
        ]
        assert codes == [200, 200, 200, 429]
        r = client.post("/v1/search", json={"query": "sleep"}, headers=bearer("tight"))
        assert r.status_code == 429 and 1 <= int(r.headers["retry-after"]) <= 60
    backend.suggest.close()
    backend.store.close()
    # per client address, and the lower budget of summaries
    security = {"keys": [_key("tight", ["admin"])], "rate_limits": {"per_client": "2/minute", "summarize": "1/minute"}}
    backend, client = _client(data_dir, security)
    with client:
        params = {"query": "q", "ids": "d1"}
        assert client.get("/v1/summarize", params=params, headers=bearer("tight")).status_code == 503
        assert client.get("/v1/summarize", params=params, headers=bearer("tight")).status_code == 429
        # the refused summary spent nothing of the address's 2/minute: one more request, then 429
        assert client.get("/metrics", headers=bearer("tight")).status_code == 200
        assert client.get("/metrics", headers=bearer("tight")).status_code == 429
    backend.suggest.close()
    backend.store.close()


def test_suggest_with_an_lm_has_its_own_budget(data_dir: Path) -> None:
    security = {"keys": [_key("web", ["search", "suggest"])], "rate_limits": {"suggest_lm": "2/minute"}}
    backend, client = _client(data_dir, security)
    with client:
        codes = [client.get("/v1/suggest", params={"q": ""}, headers=bearer("web")).status_code for _ in range(3)]
        assert codes == [200, 200, 200]  # no LM here: only per_key counts
    backend.suggest.close()
    backend.store.close()
    backend, client = _client(data_dir, security, lm=True)
    with client:
        codes = [client.get("/v1/related", params={"q": ""}, headers=bearer("web")).status_code for _ in range(3)]
        assert codes == [200, 200, 429]
        assert client.post("/v1/search", json={"query": "sleep"}, headers=bearer("web")).status_code == 200
    backend.suggest.close()
    backend.store.close()


def test_open_api_only_on_loopback(data_dir: Path) -> None:
    from serving.local import local_backend

    for host in ["0.0.0.0", "10.1.2.3", "::", "search.example.org"]:
        with pytest.raises(InsecureBind, match="without API keys"):
            check_bind(host, SecurityConfig())
    for host in ["127.0.0.1", "localhost", "::1", "127.0.0.2"]:
        check_bind(host, SecurityConfig())
    key, entry = new_key(["search"], "web")
    check_bind("0.0.0.0", SecurityConfig(keys=[entry]))
    from search.settings import Settings
    from serving.config import AppConfig

    with pytest.raises(InsecureBind):
        local_backend(AppConfig(host="0.0.0.0", data_dir=data_dir), Settings())
    dumped = AppConfig(host="0.0.0.0", security=SecurityConfig(keys=[entry])).model_dump_json()
    assert key not in dumped and entry.sha256 in dumped


def test_key_file(data_dir: Path, tmp_path: Path) -> None:
    key_file = tmp_path / "keys.yaml"
    key_file.write_text(json.dumps({"keys": [_key("web", ["search"])]}))
    backend, client = _client(data_dir, {"key_file": str(key_file)})
    with client:
        assert client.post("/v1/search", json={"query": "sleep"}).status_code == 401
        assert client.post("/v1/search", json={"query": "sleep"}, headers=bearer("web")).status_code == 200
    backend.suggest.close()
    backend.store.close()


def test_one_address_cannot_spend_a_shared_keys_lm_suggestions(data_dir: Path) -> None:
    limits = {"suggest_lm": "3/minute", "per_client_suggest_lm": "2/minute"}
    backend, client = _client(data_dir, {"keys": [_key("web", ["search", "suggest"])], "rate_limits": limits}, lm=True)
    app = client.app
    with client:
        a, b = TestClient(app, client=("10.9.0.1", 1)), TestClient(app, client=("10.9.0.2", 1))
        assert [a.get("/v1/related", params={"q": ""}, headers=bearer("web")).status_code for _ in range(3)] == [
            200, 200, 429,
        ]  # fmt: skip
        # the address's refusal spent nothing of the key's 3/minute: one left for another address
        assert [b.get("/v1/suggest", params={"q": ""}, headers=bearer("web")).status_code for _ in range(2)] == [
            200, 429,
        ]  # fmt: skip
    backend.suggest.close()
    backend.store.close()
