"""The suggester's LM follows the registry (`lm.model: registry:lm`): a promoted version is served without a
restart and the suggestion endpoint answers every request meanwhile. Two tiny LMs fitted to different query
lines tell the versions apart by what they complete."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from models.ray_session import shutdown_ray
from models.registry import ModelCard, Registry
from search.suggest.live_lm import LiveCompleter, make_completer
from search.suggest.lm_completer import LMCompleter, LMCompleterConfig

V1_LINES = ["protein folding in yeast", "protein kinase inhibitors"]
V2_LINES = ["python list comprehension", "python dict merge"]


def _fitted(out: Path, lines: list[str]) -> Path:
    from tests.tiny_lm import build_tiny_lm

    docs = ["Search queries:\n" + "".join(f"- {q}\n" for q in lines)] * 4
    path = build_tiny_lm(out, docs, steps=250)
    (path / "sift_prompt.json").write_text(json.dumps({"examples": [], "related_examples": []}))
    return path


@pytest.fixture(scope="module")
def lm_registry(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    tmp = tmp_path_factory.mktemp("lm-reload")
    reg = Registry(tmp / "registry")
    for version, lines in (("lm-v1", V1_LINES), ("lm-v2", V2_LINES)):
        src = _fitted(tmp / version, lines)
        card = ModelCard(kind="lm", version=version, base_model="tiny", data_hash=version, metrics={}, config={})
        reg.register(card, lambda out, s=src: shutil.copytree(s, out, dirs_exist_ok=True))
    return reg


def _config(model: str) -> LMCompleterConfig:
    return LMCompleterConfig.model_validate({"lm": {"model": model, "device": "cpu"}, "max_new_tokens": 6})


def test_model_prompt_overrides_the_configured_examples(lm_registry: Registry) -> None:
    lm = LMCompleter(_config(str(lm_registry.path("lm", "lm-v1"))))
    lm.warm_up()
    assert lm.config.examples == []  # the tuned model's saved prompt, not the configured few-shot lines
    assert lm._prompt("prot", "complete")[0] == "Search queries:\n"


def test_live_completer_swaps_on_promotion_and_never_fails(lm_registry: Registry) -> None:
    lm_registry.set_live("lm", "lm-v1", "test")
    live = make_completer(_config("registry:lm"), lm_registry.root)
    assert isinstance(live, LiveCompleter)
    live.live.watch_s = 0.1
    errors: list[BaseException] = []
    seen: list[tuple[str | None, str]] = []
    stop = threading.Event()

    def hammer() -> None:
        while not stop.is_set():
            try:
                seen.append((live.version, " | ".join(c.text for c in live.complete(["p"])[0])))
            except BaseException as exc:  # any failure is the finding
                errors.append(exc)

    try:
        live.warm_up()
        assert live.version == "lm-v1"
        worker = threading.Thread(target=hammer)
        worker.start()
        time.sleep(0.5)
        lm_registry.set_live("lm", "lm-v2", "test")
        deadline = time.time() + 30
        while live.version != "lm-v2" and time.time() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)
        stop.set()
        worker.join(30)
    finally:
        stop.set()
        live.close()
    assert not errors, errors[:3]
    assert live.version == "lm-v2"
    before = [t for v, t in seen if v == "lm-v1"]
    after = [t for v, t in seen[-3:]]
    assert before and "protein" in before[0], before[:2]
    assert all("python" in t for t in after), after


def test_no_live_version_means_no_lm_candidates(tmp_path: Path) -> None:
    live = make_completer(_config("registry:lm"), tmp_path / "empty-registry")
    assert live.complete(["prot"]) == [[]]
    with pytest.raises(ValueError, match="registry"):
        make_completer(_config("registry:lm"), None)


@pytest.fixture(scope="module")
def suggest_app(lm_registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    import ray
    from ray import serve

    from search.settings import Settings
    from serving.builder import build_app
    from serving.config import AppConfig, Resources
    from serving.ray_env import prepare_ray_env
    from tests.test_api_serve import free_port
    from tests.widget_server import wait_ready

    lm_registry.set_live("lm", "lm-v1", "test")
    tmp = tmp_path_factory.mktemp("lm-serve")
    small = Resources(num_cpus=0.1, max_batch_size=8).model_dump()
    cfg = AppConfig.model_validate(
        {
            "app_name": "lmreload",
            "data_dir": str(tmp),
            "search": {"default_index": "lmreload", "retrieval": {"mode": "bm25"}},
            "reranker": {"model": None},
            "ingress": small,
            "suggest_lm_resources": small,
            "suggest": {
                "deadline_ms": 10000,
                "check_results": False,
                "lm_min_chars": 1,
                "completion_cache_ttl_s": 0.5,
                "lm": {"lm": {"model": "registry:lm", "device": "cpu"}, "max_new_tokens": 6},
            },
            "summarizer": None,
        }
    )
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    prepare_ray_env()
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=200 * 1024 * 1024, log_to_driver=False)
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        serve.run(build_app(cfg, Settings(registry_dir=lm_registry.root)), name="lmreload", route_prefix="/")
        url = f"http://127.0.0.1:{port}"
        wait_ready(url)
        yield url
    finally:
        serve.shutdown()
        shutdown_ray()


async def _suggest_load(url: str, rate: float, seconds: float, at: float, action: Any) -> list[tuple[int, Any]]:
    out: list[tuple[int, Any]] = []
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:

        async def one() -> None:
            try:
                r = await client.get("/v1/suggest", params={"q": "p"})
                out.append((r.status_code, r.json() if r.status_code == 200 else r.text))
            except httpx.HTTPError as exc:
                out.append((0, repr(exc)))

        tasks, start, fired = [], time.perf_counter(), False
        for i in range(int(rate * seconds)):
            await asyncio.sleep(max(0.0, start + i / rate - time.perf_counter()))
            if not fired and time.perf_counter() - start >= at:
                await asyncio.to_thread(action)
                fired = True
            tasks.append(asyncio.create_task(one()))
        await asyncio.gather(*tasks)
    return out


@pytest.mark.slow
def test_suggest_endpoint_answers_through_an_lm_promotion(suggest_app: str, lm_registry: Registry) -> None:
    def texts(body: Any) -> str:
        return " | ".join(s["text"] for s in body["suggestions"])

    first = httpx.get(suggest_app + "/v1/suggest", params={"q": "p"}, timeout=60)
    assert first.status_code == 200 and "protein" in texts(first.json()), first.text
    rows = asyncio.run(
        _suggest_load(suggest_app, 10, 6, 2, lambda: lm_registry.set_live("lm", "lm-v2", "promoted in a test"))
    )
    assert len(rows) == 60
    failed = [r for r in rows if r[0] != 200]
    assert not failed, failed[:3]
    deadline, body = time.time() + 30, {}
    while time.time() < deadline:
        body = httpx.get(suggest_app + "/v1/suggest", params={"q": "p"}, timeout=60).json()
        if "python" in texts(body):
            break
        time.sleep(0.5)
    assert "python" in texts(body), body
