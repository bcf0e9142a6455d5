"""Keys, scopes, quotas (429), the body cap (413) and input bounds (422) on the real Serve app, started as
`sift serve` starts it (`run_local`), on the real Elasticsearch store, over HTTP."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from indexing.pipeline import IndexingConfig, IndexingPipeline
from models.ray_session import shutdown_ray
from search.schema import IndexSchema
from search.stores.elasticsearch import ElasticsearchStore
from serving.security import hash_key
from tests.widget_server import wait_ready

pytestmark = [pytest.mark.es, pytest.mark.slow]

INDEX = "sec-serve"
OTHER = "sec-serve-other"
WEB, ADMIN, TIGHT = "sk_web_serve", "sk_admin_serve", "sk_tight_serve"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def url(es_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    import ray
    from ray import serve

    from search.settings import Settings
    from serving.config import AppConfig
    from serving.ray_env import prepare_ray_env, run_local

    tmp = tmp_path_factory.mktemp("sec-serve")
    src = tmp / "docs.jsonl"
    src.write_text(
        "".join(json.dumps({"id": f"d{i}", "title": "Sleep", "text": "sleep", "year": i}) + "\n" for i in range(5))
    )
    store = ElasticsearchStore(es_url)
    cfg = IndexingConfig(
        embed=False, schema=IndexSchema(fields={"year": "long"}), dead_letter_dir=tmp / "dead", progress=False
    )
    for name in (INDEX, OTHER):
        assert IndexingPipeline(store, None, cfg).build(src, name).indexed == 5
    store.close()
    config = AppConfig.model_validate(
        {
            "app_name": "secure",
            "host": "127.0.0.1",
            "port": _port(),
            "store": "es",
            "elasticsearch_url": es_url,
            "search": {"default_index": INDEX, "retrieval": {"mode": "bm25"}},
            "reranker": {"model": None},
            "ingress": {"num_cpus": 0.1},
            "suggest": {"lm": {"enabled": False}, "prefetch_top": 0},
            "query_log": {"backend": "none"},
            "summarizer": None,
            "security": {
                "keys": [
                    {"name": "web", "sha256": hash_key(WEB), "scopes": ["search", "suggest"], "indices": [INDEX]},
                    {"name": "admin", "sha256": hash_key(ADMIN), "scopes": ["admin"]},
                    {"name": "tight", "sha256": hash_key(TIGHT), "scopes": ["search"]},
                ],
                "rate_limits": {"per_key": "20/minute", "per_client": "1000/minute"},
                "max_body_bytes": 2048,
            },
        }
    )
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    prepare_ray_env()
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=200 * 1024 * 1024, log_to_driver=False)
    try:
        run_local(config, Settings())
        base = f"http://127.0.0.1:{config.port}"
        wait_ready(base)
        yield base
    finally:
        serve.shutdown()
        shutdown_ray()


def test_keys_scopes_and_bounds_over_serve(url: str, tmp_path: Path) -> None:
    web = {"Authorization": f"Bearer {WEB}"}
    with httpx.Client(base_url=url, timeout=30) as http:
        assert http.get("/healthz").status_code == 200 and http.get("/readyz").status_code == 200
        r = http.post("/v1/search", json={"query": "sleep"})
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        r = http.post("/v1/search", json={"query": "sleep"}, headers=web)
        assert r.status_code == 200 and len(r.json()["results"]) == 5
        assert http.post("/v1/search", json={"query": "sleep", "index": OTHER}, headers=web).status_code == 403
        r = http.post("/v1/search", json={"query": "sleep", "index": OTHER}, headers={"X-API-Key": ADMIN})
        assert r.status_code == 200 and r.json()["index"] == OTHER
        assert http.get("/metrics", headers=web).status_code == 403
        assert http.get("/metrics", headers={"X-API-Key": ADMIN}).status_code == 200
        assert http.post("/v1/search", json={"query": "x" * 3000}, headers=web).status_code == 413
        for index in ["..", "sec-*", f"{INDEX},{OTHER}"]:
            assert http.post("/v1/search", json={"query": "s", "index": index}, headers=web).status_code == 422
        raw = b'{"query":"sleep","filters":[{"type":"range","field":"year","gte":1e999}]}'
        r = http.post("/v1/search", content=raw, headers={**web, "content-type": "application/json"})
        assert r.status_code == 422, r.text
        tight = {"X-API-Key": TIGHT}
        codes = [http.post("/v1/search", json={"query": "sleep"}, headers=tight).status_code for _ in range(21)]
        assert codes == [200] * 20 + [429]
        r = http.post("/v1/search", json={"query": "sleep"}, headers=tight)
        assert r.status_code == 429 and 1 <= int(r.headers["retry-after"]) <= 60
        assert http.post("/v1/search", json={"query": "sleep"}, headers=web).status_code == 200  # its own budget
