"""Hot reload: servers follow the registry's live pointer, swap a promoted version in without a restart, and
every response names the versions that served it. The Serve test promotes a reranker mid-load at 20 req/s."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from models.live import LiveModel
from models.ray_session import shutdown_ray
from models.registry import ModelCard, Registry


def register_copy(registry: Registry, kind: str, version: str, src: Path) -> Path:
    card = ModelCard(kind=kind, version=version, data_hash="0" * 64, metrics={"ndcg@10": 0.5})
    return registry.register(card, lambda d: shutil.copytree(src, d, dirs_exist_ok=True))


def test_live_model_follows_the_pointer(tmp_path: Path) -> None:
    src = tmp_path / "weights"
    src.mkdir()
    (src / "w.txt").write_text("x")
    reg = Registry(tmp_path / "reg")
    loads: list[str] = []

    def load(path: str) -> str:
        if Path(path).name == "broken":
            raise RuntimeError("cannot load")
        loads.append(Path(path).name)
        return f"model<{Path(path).name}>"

    live: LiveModel[str] = LiveModel("registry:reranker", load, reg.root, watch_s=0)
    live.warm_up()
    assert live.current == (None, None)  # nothing live yet: the stage is off, not failing
    seen: list[Any] = []
    live.add_listener(lambda v, m: seen.append((v, m)))
    for v in ("v1", "v2", "broken"):
        register_copy(reg, "reranker", v, src)
    reg.set_live("reranker", "v1", "test")
    assert live.check() and live.current == ("v1", "model<v1>")
    assert not live.check()  # unchanged pointer: no reload
    reg.set_live("reranker", "v2", "test")
    assert live.check() and live.current == ("v2", "model<v2>") and seen[-1] == ("v2", "model<v2>")
    reg.set_live("reranker", "broken", "test")
    with pytest.raises(RuntimeError):
        live.check()
    assert live.current == ("v2", "model<v2>")  # the old version keeps serving
    assert not live.check()  # and the broken one is not reloaded every poll
    assert reg.rollback("reranker") == "v2" and not live.check()  # back where it serves: nothing to load
    assert reg.rollback("reranker") == "v1" and live.check() and live.current[0] == "v1"
    assert loads == ["v1", "v2", "v1"]
    pinned: LiveModel[str] = LiveModel("registry:reranker@v2", load, reg.root)
    pinned.warm_up()
    assert pinned.current == ("v2", "model<v2>") and not pinned.follows
    with pytest.raises(ValueError, match="registry"):
        LiveModel("registry:reranker", load, None).warm_up()


def test_local_backend_swaps_a_promoted_ranker(tmp_path: Path) -> None:
    """`ranker: {model: registry:ranker}`: no ranker until one is live; a promotion reaches the next search."""
    from indexing.pipeline import IndexingConfig, IndexingPipeline
    from ranking.ltr import load_meta, save_ranker
    from search.service import SearchRequest
    from search.settings import Settings
    from search.stores.embedded import EmbeddedStore
    from serving.config import AppConfig
    from serving.local import local_backend
    from tests.test_ltr import synthetic_log
    from training.ltr import RankerTrainConfig, ranker_data, train_ranker

    corpus = tmp_path / "corpus.jsonl"
    with open(corpus, "w") as f:
        for i in range(30):
            f.write(json.dumps({"_id": f"d{i}", "title": f"gut flora {i}", "text": f"gut flora notes {i} " * 3}) + "\n")
    IndexingPipeline(EmbeddedStore(tmp_path / "indices"), None, IndexingConfig(embed=False, progress=False)).build(
        corpus, "reload-docs"
    )
    imps, sessions = synthetic_log(60, 1200, seed=3)
    data, _ = ranker_data(imps, sessions, RankerTrainConfig())
    booster, meta = train_ranker(data, RankerTrainConfig())
    folder = save_ranker(booster, meta, tmp_path / "trained")
    reg = Registry(tmp_path / "registry")
    register_copy(reg, "ranker", "r1", folder)
    cfg = AppConfig.model_validate(
        {
            "data_dir": str(tmp_path),
            "search": {"default_index": "reload-docs", "retrieval": {"mode": "bm25"}},
            "reranker": {"model": None},
            "ranker": {"model": "registry:ranker", "watch_s": 0, "familiar_only": False},  # learnt "query N" only
            "suggest": {"enabled": False},
            "summarizer": None,
        }
    )
    backend = local_backend(cfg, Settings(registry_dir=reg.root))
    req = SearchRequest(query="gut flora", limit=5)
    try:
        before = asyncio.run(backend.service.search(req))
        assert "ltr" not in before.stages and "ranker" not in before.model_versions
        reg.set_live("ranker", "r1", "test")
        assert backend.ranker is not None and backend.ranker.check()
        after = asyncio.run(backend.service.search(req))
        assert "ltr" in after.stages and after.model_versions["ranker"] == load_meta(folder).version
        assert backend.versions["ranker"] == load_meta(folder).version  # what impressions are logged with
        reg.rollback("ranker")
        assert backend.ranker.check()
        assert "ltr" not in asyncio.run(backend.service.search(req)).stages
    finally:
        backend.suggest.close()
        backend.store.close()


# -- the Serve app under load -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def reload_app(tmp_path_factory: pytest.TempPathFactory, tiny_reranker_path: Path) -> Iterator[tuple[str, Registry]]:
    import ray
    from ray import serve

    from indexing.pipeline import IndexingConfig, IndexingPipeline
    from search.settings import Settings
    from search.stores.embedded import EmbeddedStore
    from serving.builder import build_app
    from serving.config import AppConfig, Resources
    from serving.ray_env import prepare_ray_env
    from tests.test_api_serve import free_port
    from tests.widget_server import wait_ready

    tmp = tmp_path_factory.mktemp("reload")
    corpus = tmp / "corpus.jsonl"
    with open(corpus, "w") as f:
        for i in range(40):
            f.write(json.dumps({"_id": f"d{i}", "title": f"note {i}", "text": f"loops and files example {i}"}) + "\n")
    IndexingPipeline(EmbeddedStore(tmp / "indices"), None, IndexingConfig(embed=False, progress=False)).build(
        corpus, "reload"
    )
    reg = Registry(tmp / "registry")
    register_copy(reg, "reranker", "ce-v1", tiny_reranker_path)
    register_copy(reg, "reranker", "ce-v2", tiny_reranker_path)
    reg.set_live("reranker", "ce-v1", "test")
    small = Resources(num_cpus=0.1, max_batch_size=8).model_dump()
    cfg = AppConfig.model_validate(
        {
            "app_name": "reload",
            "data_dir": str(tmp),
            "search": {"default_index": "reload", "retrieval": {"mode": "bm25"}},
            "reranker": {"model": "registry:reranker", "device": "cpu", "watch_s": 0.2, "deadline_ms": 30000},
            "ingress": small,
            "reranker_resources": small,
            "suggest": {"enabled": False},
            "summarizer": None,
            # every search must rerank (the versions are read from it): no lighter searches on a loaded machine
            "search_admission": {"lighter_from": None, "max_wait_s": 30},
        }
    )
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    prepare_ray_env()
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=200 * 1024 * 1024, log_to_driver=False)
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        serve.run(build_app(cfg, Settings(registry_dir=reg.root)), name="reload", route_prefix="/")
        url = f"http://127.0.0.1:{port}"
        wait_ready(url)
        yield url, reg
    finally:
        serve.shutdown()
        shutdown_ray()


async def _load(url: str, rate: float, seconds: float, at: float, action: Any) -> list[tuple[float, int, Any]]:
    """Searches at `rate` per second for `seconds`; `action()` runs once, `at` seconds in."""
    out: list[tuple[float, int, Any]] = []

    async with httpx.AsyncClient(base_url=url, timeout=30) as client:

        async def one(i: int) -> None:
            t = time.perf_counter()
            try:
                r = await client.post("/v1/search", json={"query": f"loops files example {i % 7}", "limit": 5})
                body = r.json() if r.status_code == 200 else r.text
                out.append((t, r.status_code, body))
            except httpx.HTTPError as exc:
                out.append((t, 0, repr(exc)))

        tasks, start, fired = [], time.perf_counter(), False
        for i in range(int(rate * seconds)):
            await asyncio.sleep(max(0.0, start + i / rate - time.perf_counter()))
            if not fired and time.perf_counter() - start >= at:
                await asyncio.to_thread(action)
                fired = True
            tasks.append(asyncio.create_task(one(i)))
        await asyncio.gather(*tasks)
    return sorted(out, key=lambda r: r[0])


@pytest.mark.slow
def test_promotion_mid_load_fails_no_request(reload_app: tuple[str, Registry]) -> None:
    url, reg = reload_app
    promoted: list[Any] = []

    def promote() -> None:  # the gated path, with a stand-in evaluation that prefers ce-v2
        promoted.append(reg.promote("reranker", "ce-v2", lambda p: 0.6 if p and p.name == "ce-v2" else 0.5, 0.01))

    rows = asyncio.run(_load(url, rate=20, seconds=8, at=3, action=promote))
    assert promoted and promoted[0].promoted, promoted
    failed = [r for r in rows if r[1] != 200]
    assert not failed, failed[:3]
    versions = [r[2]["model_versions"].get("reranker") for r in rows]
    assert all(r[2]["reranked"] for r in rows), [r[2]["rerank_note"] for r in rows if not r[2]["reranked"]][:3]
    assert versions[0] == "ce-v1" and versions[-1] == "ce-v2", versions
    switch = versions.index("ce-v2")
    assert set(versions[:switch]) == {"ce-v1"} and set(versions[switch + 10 :]) == {"ce-v2"}, versions
    assert len(rows) == 160
    # rollback reaches the app the same way
    reg.rollback("reranker")
    deadline = time.time() + 10
    while time.time() < deadline:
        body = httpx.post(url + "/v1/search", json={"query": "loops", "limit": 3}, timeout=30).json()
        if body["model_versions"].get("reranker") == "ce-v1":
            break
        time.sleep(0.2)
    assert body["model_versions"]["reranker"] == "ce-v1"
