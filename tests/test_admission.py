"""Admission control over HTTP (the in-process app, tiny encoder, embedded store): with every search slot busy,
the next search is answered 503 with Retry-After once it has waited `max_wait_s`, not queued until its deadline;
once the slot frees, searches run again. Also the gate on its own: FIFO slots, the shed count."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from fastapi.testclient import TestClient

from indexing.pipeline import IndexingConfig, IndexingPipeline
from search.stores.embedded import EmbeddedStore
from serving.admission import Admission, AdmissionConfig, Overloaded


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory, tiny_embedder: Any, tiny_embedder_path: Any) -> Iterator[Any]:
    from search.settings import Settings
    from serving.api import create_api
    from serving.config import AppConfig
    from serving.local import local_backend

    tmp = tmp_path_factory.mktemp("admission")
    src = tmp / "docs.jsonl"
    src.write_text(
        "".join(json.dumps({"id": f"d{i}", "title": t, "text": t}) + "\n" for i, t in enumerate(["a b", "c d"]))
    )
    cfg = IndexingConfig(dead_letter_dir=tmp / "dead", progress=False)
    IndexingPipeline(EmbeddedStore(tmp / "data" / "indices"), tiny_embedder, cfg).build(src, "docs")
    config = AppConfig.model_validate(
        {
            "data_dir": str(tmp / "data"),
            "embedder": {"model": str(tiny_embedder_path), "device": "cpu"},
            "reranker": {"model": None},
            "suggest": {"enabled": False},
            "summarizer": None,
            "search_admission": {"max_concurrent": 1, "max_wait_s": 0.3},
        }
    )
    backend = local_backend(config, Settings())
    with TestClient(create_api(backend, backend.metrics)) as client:
        yield backend, client
    backend.store.close()


def test_a_search_that_finds_no_free_slot_gets_503_at_once_and_the_next_one_runs(
    app: tuple[Any, TestClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    backend, client = app
    gate, entered = threading.Event(), threading.Event()
    real = backend.service.search

    async def held(req: Any) -> Any:
        entered.set()
        await asyncio.to_thread(gate.wait, 10)
        return await real(req)

    monkeypatch.setattr(backend.service, "search", held)
    body = {"query": "a b", "index": "docs"}
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(client.post, "/v1/search", json=body)
        assert entered.wait(10)
        t0 = time.monotonic()
        shed = client.post("/v1/search", json=body)
        waited = time.monotonic() - t0
        gate.set()
        assert first.result(10).status_code == 200
    assert shed.status_code == 503 and shed.headers["Retry-After"]
    assert "overloaded" in shed.json()["detail"]
    assert 0.25 <= waited < 5.0  # waited for a slot about max_wait_s, not the 10 s deadline
    monkeypatch.setattr(backend.service, "search", real)
    again = client.post("/v1/search", json=body)
    assert again.status_code == 200 and again.json()["results"]


def test_the_gate_queues_up_to_the_wait_then_sheds_and_counts() -> None:
    async def scenario() -> tuple[list[str], int]:
        gate = Admission(AdmissionConfig(max_concurrent=2, max_wait_s=0.2))
        order: list[str] = []
        release = asyncio.Event()

        async def job(name: str, hold: bool) -> None:
            try:
                async with gate.slot():
                    order.append(name)
                    if hold:
                        await release.wait()
            except Overloaded:
                order.append(f"shed:{name}")

        holders = [asyncio.create_task(job(n, True)) for n in ("a", "b")]
        await asyncio.sleep(0.05)
        await job("c", False)  # both slots held past the wait: shed
        waiter = asyncio.create_task(job("d", False))  # a slot frees within the wait: runs
        await asyncio.sleep(0.05)
        release.set()
        await asyncio.gather(*holders, waiter)
        return order, gate.shed

    order, shed = asyncio.run(scenario())
    assert order == ["a", "b", "shed:c", "d"] and shed == 1
