"""Highlighting is bounded whatever a document holds, and the service runs it in a worker thread, never on the
event loop that serves every other request of the replica."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import search.service as service_module
from search.documents import Document, StoredRecord
from search.highlight import MAX_FRAGMENTS, MAX_TEXT_CHARS, highlight
from search.schema import IndexSchema
from search.service import SearchConfig, SearchRequest
from search.stores.embedded import EmbeddedStore
from search.wiring import build_service


def test_a_huge_matching_body_is_highlighted_quickly_and_within_bounds() -> None:
    body = "sleep memory consolidation " * 300_000 + " zebra"  # ~8 MB, every word a match
    t = time.perf_counter()
    out = highlight("sleep memory zebra", body, fragment_chars=200, fragments=50)
    took = time.perf_counter() - t
    assert took < 2.0, f"highlighting took {took:.2f} s"
    assert 1 <= len(out) <= MAX_FRAGMENTS
    for frag in out:
        assert "<em>sleep</em>" in frag
        assert len(frag.replace("<em>", "").replace("</em>", "")) <= 200 + 40  # the window, widened to whole words
    assert not any("zebra" in f for f in out)  # past MAX_TEXT_CHARS: never scanned
    assert len(body) > 100 * MAX_TEXT_CHARS


def test_short_texts_are_unchanged_by_the_bounds() -> None:
    assert highlight("sleeping", "Sleep & memory") == ["<em>Sleep</em> &amp; memory"]
    long = "filler words here. " * 40 + "the sleep study. " + "more filler. " * 40
    (frag,) = highlight("sleep", long, fragment_chars=80)
    assert "<em>sleep</em>" in frag and frag.startswith("…") and frag.endswith("…")


@pytest.fixture
def store(tmp_path: Path) -> EmbeddedStore:
    s = EmbeddedStore(tmp_path)
    v = s.create_version("hl", 2, IndexSchema())
    recs = [
        StoredRecord(
            doc=Document(id=f"d{i}", title=f"Sleep {i}", body="sleep and memory " * (i + 1)),
            vectors=[[float(np.cos(i)), float(np.sin(i))]],
        )
        for i in range(5)
    ]
    s.upsert(v, recs)
    s.mark_complete(v)
    s.switch_alias("hl", v)
    return s


def test_the_service_highlights_in_a_worker_thread(store: EmbeddedStore, monkeypatch: pytest.MonkeyPatch) -> None:
    threads: list[int] = []
    real = service_module.highlight_page

    def spy(*args: object, **kwargs: object) -> object:
        threads.append(threading.get_ident())
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(service_module, "highlight_page", spy)
    svc = build_service(store, SearchConfig(default_index="hl", retrieval={"mode": "bm25"}))  # type: ignore[arg-type]

    async def go() -> tuple[int, object]:
        resp = await svc.search(SearchRequest(query="sleep memory", limit=3))
        return threading.get_ident(), resp

    loop_thread, resp = asyncio.run(go())
    assert threads and all(t != loop_thread for t in threads)
    results = resp.results  # type: ignore[attr-defined]
    assert len(results) == 3 and all("<em>" in r.highlights["body"][0] for r in results)
    plain = asyncio.run(svc.search(SearchRequest(query="sleep memory", limit=3, highlight=False)))
    assert len(threads) == 1 and all(r.highlights == {} for r in plain.results)
