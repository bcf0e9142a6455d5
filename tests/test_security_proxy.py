"""Per-client quotas count the real client only behind a configured trusted proxy: X-Forwarded-For from anyone
else is ignored (a client could otherwise dodge its quota by naming a new address on every request)."""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from indexing.pipeline import IndexingConfig, IndexingPipeline
from search.stores.embedded import EmbeddedStore
from serving.auth import client_address
from serving.security import SecurityConfig, hash_key

INDEX = "proxy-docs"
KEY = "sk_proxy_0123456789"
PROXY = "10.1.2.3"
TRUSTED = [ipaddress.ip_network("10.1.0.0/16"), ipaddress.ip_network("::1/128")]


def test_client_address_walks_forwarded_for_only_from_trusted_proxies() -> None:
    # an untrusted peer: its header is ignored, whatever it says
    assert client_address("203.0.113.9", ["1.1.1.1"], TRUSTED) == "203.0.113.9"
    # a trusted peer: the rightmost hop that is not a trusted proxy
    assert client_address(PROXY, ["198.51.100.7"], TRUSTED) == "198.51.100.7"
    assert client_address(PROXY, ["6.6.6.6, 198.51.100.7, 10.1.9.9"], TRUSTED) == "198.51.100.7"
    assert client_address(PROXY, ["6.6.6.6", "198.51.100.7:5555"], TRUSTED) == "198.51.100.7"
    assert client_address("::1", ["[2001:db8::5]:443"], TRUSTED) == "2001:db8::/64"  # its /64 (test_identity)
    # a malformed hop: stop at the last trusted address, never believe what lies left of it
    assert client_address(PROXY, ["6.6.6.6, garbage"], TRUSTED) == PROXY
    assert client_address(PROXY, [], TRUSTED) == PROXY
    assert client_address(None, ["1.1.1.1"], TRUSTED) == "unknown"
    assert client_address(PROXY, ["198.51.100.7"], []) == PROXY  # no trusted proxies configured


def test_trusted_proxies_must_be_addresses_or_networks() -> None:
    assert SecurityConfig(trusted_proxies=["10.0.0.0/8", "::1"]).trusted_proxies == ["10.0.0.0/8", "::1"]
    with pytest.raises(ValidationError):
        SecurityConfig(trusted_proxies=["not-a-network"])


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("security-proxy")
    docs = tmp / "docs.jsonl"
    docs.write_text("".join(json.dumps({"id": f"d{i}", "text": "sleep memory"}) + "\n" for i in range(3)))
    cfg = IndexingConfig(embed=False, dead_letter_dir=tmp / "dead", progress=False)
    assert IndexingPipeline(EmbeddedStore(tmp / "data" / "indices"), None, cfg).build(docs, INDEX).indexed == 3
    return tmp / "data"


@pytest.fixture(scope="module")
def app(data_dir: Path) -> Iterator[object]:
    from search.settings import Settings
    from serving.api import create_api
    from serving.config import AppConfig
    from serving.local import local_backend

    security = {
        "keys": [{"name": "web", "sha256": hash_key(KEY), "scopes": ["search"]}],
        "rate_limits": {"per_key": "1000/minute", "per_client": "2/minute"},
        "trusted_proxies": ["10.1.0.0/16"],
    }
    config = AppConfig.model_validate(
        {
            "data_dir": str(data_dir),
            "search": {"default_index": INDEX, "retrieval": {"mode": "bm25"}},
            "suggest": {"enabled": False},
            "summarizer": None,
            "security": security,
        }
    )
    backend = local_backend(config, Settings())
    yield create_api(backend, backend.metrics)
    backend.store.close()


def _search(client: TestClient, forwarded_for: str | None = None) -> int:
    headers = {"X-API-Key": KEY} | ({"X-Forwarded-For": forwarded_for} if forwarded_for else {})
    return client.post("/v1/search", json={"query": "sleep"}, headers=headers).status_code


def test_a_direct_client_cannot_escape_its_quota_with_forwarded_for(app: object) -> None:
    client = TestClient(app, client=("203.0.113.50", 4000))  # type: ignore[arg-type]
    assert [_search(client, f"192.0.2.{i}") for i in range(3)] == [200, 200, 429]


def test_behind_the_trusted_proxy_each_client_has_its_own_quota(app: object) -> None:
    proxy = TestClient(app, client=(PROXY, 4000))  # type: ignore[arg-type]
    assert [_search(proxy, "198.51.100.1") for _ in range(3)] == [200, 200, 429]
    assert _search(proxy, "198.51.100.2") == 200  # another client behind the same proxy: its own budget
    assert _search(proxy, "6.6.6.6, 198.51.100.1") == 429  # a spoofed hop left of the proxy's entry is ignored
