"""Admission control over HTTP (the in-process app, tiny encoder, embedded store): with every search slot busy,
the next search is answered 503 with Retry-After once it has waited `max_wait_s`, not queued until its deadline;
once the slot frees, searches run again. A search admitted while the replica is busy runs lighter (BM25 alone,
with a note). Also the gate on its own: FIFO slots, the shed count."""

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
        "".join(
            json.dumps({"id": f"d{i}", "title": t, "text": t}) + "\n"
            for i, t in enumerate(["zebrafish hearts", "sleep memory"])
        )
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
            "search_admission": {"max_concurrent": 2, "lighter_from": 0.5, "max_wait_s": 0.3},
        }
    )
    backend = local_backend(config, Settings())
    with TestClient(create_api(backend, backend.metrics)) as client:
        yield backend, client
    backend.store.close()


class Held:
    """Makes the app's searches wait at a gate (holding their slots) until released."""

    def __init__(self, backend: Any, monkeypatch: pytest.MonkeyPatch) -> None:
        self.gate, self.entered, real = threading.Event(), threading.Semaphore(0), backend.service.search

        async def held(req: Any, lighter: bool = False) -> Any:
            if req.query.startswith("hold"):
                self.entered.release()
                await asyncio.to_thread(self.gate.wait, 10)
            return await real(req, lighter=lighter)

        monkeypatch.setattr(backend.service, "search", held)


def test_a_search_that_finds_no_free_slot_gets_503_at_once_and_the_next_one_runs(
    app: tuple[Any, TestClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    backend, client = app
    held = Held(backend, monkeypatch)
    with ThreadPoolExecutor(2) as pool:
        holders = [pool.submit(client.post, "/v1/search", json={"query": f"hold {i}", "index": "docs"}) for i in (1, 2)]
        assert held.entered.acquire(timeout=10) and held.entered.acquire(timeout=10)
        t0 = time.monotonic()
        shed = client.post("/v1/search", json={"query": "zebrafish hearts", "index": "docs"})
        waited = time.monotonic() - t0
        held.gate.set()
        assert [f.result(10).status_code for f in holders] == [200, 200]
    assert shed.status_code == 503 and shed.headers["Retry-After"]
    assert "overloaded" in shed.json()["detail"]
    assert 0.25 <= waited < 5.0  # waited for a slot about max_wait_s, not the 10 s deadline
    again = client.post("/v1/search", json={"query": "zebrafish hearts", "index": "docs"})
    assert again.status_code == 200 and again.json()["results"]
    shed_lines = [x for x in client.get("/metrics").text.splitlines() if x.startswith("sift_search_admission_total")]
    assert any('outcome="shed"' in x and float(x.split()[-1]) >= 1 for x in shed_lines), shed_lines


def test_a_search_admitted_while_the_replica_is_busy_runs_lighter_with_a_note(
    app: tuple[Any, TestClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    backend, client = app
    full = client.post("/v1/search", json={"query": "zebrafish hearts", "index": "docs"}).json()
    assert "dense" in full["stages"] and full["retrieval_note"] is None
    held = Held(backend, monkeypatch)
    with ThreadPoolExecutor(1) as pool:
        holder = pool.submit(client.post, "/v1/search", json={"query": "hold", "index": "docs"})
        assert held.entered.acquire(timeout=10)
        light = client.post("/v1/search", json={"query": "zebrafish hearts", "index": "docs"})
        held.gate.set()
        assert holder.result(10).status_code == 200
    assert light.status_code == 200, light.text
    body = light.json()
    assert body["results"] and "dense" not in body["stages"] and "bm25" in body["stages"]
    assert "under load" in body["retrieval_note"]
    assert body["model_versions"]["retrieval"] == "bm25"  # the impression says what ran, for the click models
    alone = client.post("/v1/search", json={"query": "zebrafish hearts", "index": "docs"}).json()
    assert alone["retrieval_note"] is None and "dense" in alone["stages"]


def test_the_gate_queues_up_to_the_wait_then_sheds_and_counts() -> None:
    async def scenario() -> tuple[list[str], int]:
        gate = Admission(AdmissionConfig(max_concurrent=2, max_wait_s=0.2, lighter_from=0.5))
        order: list[str] = []
        release = asyncio.Event()

        async def job(name: str, hold: bool) -> None:
            try:
                async with gate.slot() as lighter:
                    order.append(f"{name}{'-light' if lighter else ''}")
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
        await job("e", False)  # alone: full weight
        return order, gate.shed

    order, shed = asyncio.run(scenario())
    assert order[:3] == ["a", "b-light", "shed:c"] and order[3].startswith("d") and order[4] == "e" and shed == 1


def test_a_lighter_searchs_impression_names_only_what_ran() -> None:
    from types import SimpleNamespace

    from search.service import SearchRequest, SearchResponse
    from serving.backend import logged_search

    recorded: list[Any] = []
    resp = SearchResponse(
        request_id="r", query="q", index="docs", offset=0, limit=10, results=[], stages=["bm25"], reranked=False,
        took_ms=1.0, model_versions={"retrieval": "bm25"},
    )  # fmt: skip

    async def search(req: Any, lighter: bool = False) -> SearchResponse:
        return resp

    served = {"retrieval": "hybrid-rrf", "embedder": "minilm", "reranker": "ce-v1", "interleave": "a=x,b=y"}
    backend = SimpleNamespace(
        service=SimpleNamespace(search=search), versions=served, suggest=SimpleNamespace(record=recorded.append)
    )
    asyncio.run(logged_search(backend, SearchRequest(query="q"), lighter=True))  # type: ignore[arg-type]
    asyncio.run(logged_search(backend, SearchRequest(query="q")))  # type: ignore[arg-type]
    light, full = (dict(e.versions) for e in recorded)
    assert light["retrieval"] == "bm25" and not {"embedder", "reranker", "interleave"} & light.keys()
    assert full["embedder"] == "minilm" and full["reranker"] == "ce-v1"
