"""GET/PUT/DELETE /v1/indexes/{index}/synonyms over HTTP (the in-process app on an embedded-store index): admin
keys only, 422 for bad sets, a change seen by the next search (on this replica and on a second one over the same
data dir) and named in the explanation of each result that matched through a synonym."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from indexing.pipeline import IndexingConfig, IndexingPipeline
from search.stores.embedded import EmbeddedStore
from serving.security import hash_key

INDEX = "syn-docs"
OTHER = "syn-other"
KEYS = {"admin": "sk_admin_0123456789", "web": "sk_web_0123456789", "boss": "sk_boss_0123456789"}
DOCS = [
    ("d1", "Television repair", "We repair every television in town."),
    ("d2", "TV stands", "Stands for a tv and a sound bar."),
    ("d3", "New York hotels", "Cheap rooms in New York for a weekend."),
    ("d4", "York minster", "An old church in York with a new roof."),
    ("d5", "Garden tools", "Spades and rakes."),
]
SETS = [
    {"type": "synonym", "synonyms": ["telly", "television"]},
    {"type": "oneway", "input": "ny", "synonyms": ["new york"]},
]
URL = f"/v1/indexes/{INDEX}/synonyms"


def _key(name: str, scopes: list[str], indices: list[str] | None = None) -> dict[str, Any]:
    return {"name": name, "sha256": hash_key(KEYS[name]), "scopes": scopes, "indices": indices}


def bearer(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[name]}"}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("synonyms-api")
    src = tmp / "docs.jsonl"
    src.write_text("".join(json.dumps({"id": i, "title": t, "text": b}) + "\n" for i, t, b in DOCS))
    cfg = IndexingConfig(embed=False, dead_letter_dir=tmp / "dead", progress=False)
    for name in (INDEX, OTHER):
        assert IndexingPipeline(EmbeddedStore(tmp / "data" / "indices"), None, cfg).build(src, name).indexed == 5
    return tmp / "data"


def _client(data_dir: Path, security: dict[str, Any]) -> tuple[Any, TestClient]:
    from search.settings import Settings
    from serving.api import create_api
    from serving.config import AppConfig
    from serving.local import local_backend

    config = AppConfig.model_validate(
        {
            "data_dir": str(data_dir),
            "search": {"default_index": INDEX, "retrieval": {"mode": "bm25"}},
            "reranker": {"model": None},
            "suggest": {"enabled": False},
            "summarizer": None,
            "security": security,
        }
    )
    backend = local_backend(config, Settings())
    return backend, TestClient(create_api(backend, backend.metrics))


@pytest.fixture(scope="module")
def keyed(data_dir: Path) -> Iterator[TestClient]:
    keys = [_key("admin", ["admin"]), _key("web", ["search"]), _key("boss", ["admin"], [OTHER])]
    backend, client = _client(data_dir, {"keys": keys})
    with client:
        yield client
    backend.store.close()


@pytest.fixture(scope="module")
def second(data_dir: Path) -> Iterator[TestClient]:
    """A second replica over the same data dir (another process in production)."""
    backend, client = _client(data_dir, {"keys": [_key("admin", ["admin"]), _key("web", ["search"])]})
    with client:
        yield client
    backend.store.close()


def _search(client: TestClient, query: str) -> dict[str, Any]:
    r = client.post("/v1/search", json={"query": query, "index": INDEX}, headers=bearer("web"))
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def _ids(body: dict[str, Any]) -> set[str]:
    return {r["id"] for r in body["results"]}


def test_admin_scope_is_required(keyed: TestClient) -> None:
    for method in ("get", "delete"):
        assert getattr(keyed, method)(URL).status_code == 401
        assert getattr(keyed, method)(URL, headers=bearer("web")).status_code == 403
    assert keyed.put(URL, json={"sets": SETS}).status_code == 401
    r = keyed.put(URL, json={"sets": SETS}, headers=bearer("web"))
    assert r.status_code == 403 and "admin" in r.json()["detail"]
    # an admin key restricted to another index may not touch this one
    assert keyed.put(URL, json={"sets": SETS}, headers=bearer("boss")).status_code == 403
    assert keyed.get(f"/v1/indexes/{OTHER}/synonyms", headers=bearer("boss")).status_code == 200


@pytest.mark.parametrize(
    "body",
    [
        {"sets": [{"type": "synonym", "synonyms": ["tv"]}]},
        {"sets": [{"type": "synonym", "synonyms": ["the", "a"]}]},
        {"sets": [{"type": "oneway", "input": "x" * 500, "synonyms": ["tv"]}]},
        {"sets": [{"type": "nope", "synonyms": ["ab", "cd"]}]},
        {"sets": [{"type": "synonym", "synonyms": ["ab", "cd"]}] * 1001},
        {"rules": []},
    ],
)
def test_bad_sets_get_422_with_a_message(keyed: TestClient, body: dict[str, Any]) -> None:
    before = keyed.get(URL, headers=bearer("admin")).json()["version"]
    r = keyed.put(URL, json=body, headers=bearer("admin"))
    assert r.status_code == 422, r.text
    assert r.json()["detail"] and all(e.get("msg") for e in r.json()["detail"])
    assert keyed.get(URL, headers=bearer("admin")).json()["version"] == before  # nothing written


def test_bad_index_names(keyed: TestClient) -> None:
    assert keyed.get("/v1/indexes/Bad..Name/synonyms", headers=bearer("admin")).status_code == 422


def test_a_change_applies_to_the_next_search_and_is_explained(keyed: TestClient, second: TestClient) -> None:
    assert _ids(_search(keyed, "telly")) == set()
    assert _ids(_search(second, "telly")) == set()
    r = keyed.put(URL, json={"sets": SETS}, headers=bearer("admin"))
    assert r.status_code == 200, r.text
    assert r.json()["version"] >= 1 and r.json()["sets"][0]["synonyms"] == ["telly", "television"]
    got = keyed.get(URL, headers=bearer("admin")).json()
    assert got["sets"] == r.json()["sets"] and got["index"] == INDEX

    for client in (keyed, second):  # this replica and another one, with no restart
        body = _search(client, "telly")
        assert _ids(body) == {"d1"}
        assert body["results"][0]["explanation"]["synonyms"] == ["television"]
    # one-way, multi-word: "ny" finds New York as a phrase (not York minster's words apart); no reverse
    body = _search(keyed, "ny hotels")
    assert {r["id"]: r["explanation"]["synonyms"] for r in body["results"]} == {"d3": ["new york"]}
    body = _search(keyed, "new york")
    assert "d4" in _ids(body) and all(r["explanation"]["synonyms"] is None for r in body["results"])
    # a result matched by the query's own word names no synonym
    assert all(r["explanation"]["synonyms"] is None for r in _search(keyed, "television")["results"])

    r = keyed.delete(URL, headers=bearer("admin"))
    assert r.status_code == 200 and r.json() == {"index": INDEX, "deleted": True}
    for client in (keyed, second):
        assert _ids(_search(client, "telly")) == set()
    assert keyed.delete(URL, headers=bearer("admin")).json()["deleted"] is False
