"""Typo tolerance (search/typo.py): which words are corrected and to what, the off switch, prefixes for
suggestions, and the response fields through the HTTP API (in-process app over an embedded index)."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from search.typo import Corrector, TypoConfig, TypoTolerance, VocabIndex
from search.typo_popularity import QueryWordPopularity
from search.vocabulary import CachedVocabulary, Vocabulary, vocabulary_words

DF = {
    "receive": 50,
    "received": 20,
    "recieve": 1,  # a typo that also occurs in one document
    "python": 30,
    "argparse": 5,
    "running": 9,
    "protein": 40,
    "proteins": 10,
    "cells": 100,
    "cell": 60,
    "ceil": 2,
    "cat": 40,
    "hat": 40,
    "information": 80,
    "informative": 3,
    "distribution": 12,
}


def corrector(**cfg: Any) -> Corrector:
    return Corrector(VocabIndex(Vocabulary("v1", DF, 100)), TypoConfig(**cfg))


def test_vocabulary_words_are_bm25_words_without_numbers_codes_or_stop_words() -> None:
    words = vocabulary_words("The Cells, the cells! 2024 X200 snake_case a b café " + "x" * 41)
    assert words == {"cells", "café"}


def test_distance_grows_with_length() -> None:
    c = corrector()
    assert [c.allowed(w) for w in ("cat", "cell", "cells", "proteins", "receiving")] == [0, 0, 1, 1, 2]
    assert c.correct("celsl").searched == "cells"  # 5 letters: one typo (a swap counts as one)
    assert c.correct("protien").searched == "protein"
    assert c.correct("prtien").searched == "prtien"  # 6 letters, two typos: out of reach
    assert c.correct("infromatoin").searched == "information"  # 11 letters: two typos
    assert c.correct("distrbution").searched == "distribution"
    wide = corrector(one_typo_from=3, two_typos_from=5)
    assert wide.correct("cta prtien").searched == "cat protein"


def test_short_words_known_words_and_stems_are_untouched() -> None:
    c = corrector()
    for q in ("cet hta", "cell", "receive", "runs", "proteins and cells"):
        fix = c.correct(q)
        assert fix.searched == q and fix.corrected_query is None and fix.did_you_mean is None


def test_numbers_and_codes_are_untouched() -> None:
    c = corrector()
    for q in ("12345", "protien2", "x2000", "ab_cde", "3.14159"):
        assert c.correct(q).searched == q
    assert c.correct("protien 12345 x2000").searched == "protein 12345 x2000"


def test_case_and_punctuation_are_kept() -> None:
    fix = corrector().correct("Pyhton: PROTIEN, (argprase)?")
    assert fix.searched == "Python: PROTEIN, (argparse)?"
    assert fix.changes == [("Pyhton", "Python"), ("PROTIEN", "PROTEIN"), ("argprase", "argparse")]


def test_ties_go_to_the_more_frequent_word() -> None:
    # "celll": "cells" (df 100) and "cell" (df 60) are one edit away; the more frequent wins
    assert corrector().correct("celll").searched == "cells"


def test_a_rare_indexed_word_is_only_suggested() -> None:
    fix = corrector().correct("recieve")
    assert fix.searched == "recieve" and fix.corrected_query is None and fix.did_you_mean == "receive"
    assert corrector(rare_df=0).correct("recieve").did_you_mean is None


def test_off_switch_suggests_without_applying() -> None:
    c = corrector()
    fix = c.correct("pyhton protien", apply=False)
    assert fix.searched == "pyhton protien" and fix.corrected_query is None
    assert fix.did_you_mean == "python protein"


def test_config_is_checked() -> None:
    with pytest.raises(ValidationError):
        TypoConfig(one_typo_from=6, two_typos_from=4)
    with pytest.raises(ValidationError):
        TypoConfig(nope=1)  # type: ignore[call-arg]


def test_correct_prefix() -> None:
    c = corrector()
    assert c.correct_prefix("pyhto") == ["pytho"]
    assert c.correct_prefix("pyth") == []  # a vocabulary prefix
    assert c.correct_prefix("pyt") == []  # short
    assert c.correct_prefix("Pyhton argpa") == ["python argpa"]  # a complete word corrected, the partial one kept
    assert c.correct_prefix("protien ") == ["protein "]  # a trailing space: the word is complete
    assert c.correct_prefix("infromati")[0] == "informati"
    assert c.correct_prefix("12345") == [] and c.correct_prefix("") == []


def test_popularity_hook_reorders_candidates() -> None:
    vi = VocabIndex(Vocabulary("v1", DF, 100))
    assert Corrector(vi, TypoConfig()).correct("celll").searched == "cells"
    boosted = Corrector(vi, TypoConfig(), popularity=lambda w: 1000.0 if w == "cell" else 0.0)
    assert boosted.correct("celll").searched == "cell"


class _Source:
    def __init__(self) -> None:
        self.reads = 0
        self.version = "idx-v1"

    def stamp(self, target: str) -> tuple[object, ...]:
        return (self.version,)

    def vocabulary(self, target: str) -> Vocabulary:
        self.reads += 1
        return Vocabulary(self.version, {"word": self.reads}, 1)


def test_cached_vocabulary_is_read_again_only_when_the_stamp_moves() -> None:
    now = [0.0]
    src = _Source()
    cache = CachedVocabulary(src, recheck_s=10, clock=lambda: now[0], wait_s=5)
    assert cache.get("idx").df == {"word": 1}  # type: ignore[union-attr]
    now[0] = 5
    assert cache.get("idx").df == {"word": 1}  # type: ignore[union-attr]
    now[0] = 20  # rechecked: same stamp, not read again
    assert cache.get("idx").df == {"word": 1} and src.reads == 1  # type: ignore[union-attr]
    src.version = "idx-v2"
    now[0] = 25  # within recheck_s of the last check: not noticed yet
    assert cache.get("idx").version == "idx-v1"  # type: ignore[union-attr]
    now[0] = 31
    assert cache.get("idx").version == "idx-v2" and src.reads == 2  # type: ignore[union-attr]


class _SlowSource(_Source):
    def __init__(self) -> None:
        super().__init__()
        self.go = threading.Event()

    def vocabulary(self, target: str) -> Vocabulary:
        assert self.go.wait(10)
        return super().vocabulary(target)


def test_a_search_never_waits_for_a_vocabulary_scan(caplog: pytest.LogCaptureFixture) -> None:
    src = _SlowSource()
    cache = CachedVocabulary(src, recheck_s=0)
    started = time.perf_counter()
    with caplog.at_level(logging.INFO, logger="sift.typo"):
        assert cache.get("idx") is None and cache.get("idx") is None  # one scan running, nobody waits for it
    assert time.perf_counter() - started < 2 and "until its vocabulary is read" in caplog.text
    src.go.set()
    cache._scans["idx"].join(10)
    assert cache.get("idx").df == {"word": 1} and src.reads == 1  # type: ignore[union-attr]
    src.go.clear()  # the same version updated: its old vocabulary serves while it is read again
    src.stamp = lambda target: ("idx-v1", "moved")  # type: ignore[method-assign]
    assert cache.get("idx").df == {"word": 1}  # type: ignore[union-attr]
    src.go.set()
    cache._scans["idx"].join(10)
    assert cache.get("idx").df == {"word": 2}  # type: ignore[union-attr]
    typos = TypoTolerance(object())
    assert typos.vocabularies is None and typos.correct("idx", "protien").searched == "protien"


# -- through the HTTP API ------------------------------------------------------------------------------------
INDEX = "typo-docs"
DOCS = [
    ("d1", "Receiving a package", "How to receive a package when you are away from home."),
    ("d2", "Python argparse", "Parse command line arguments with argparse in Python."),
    ("d3", "Protein folding", "Proteins fold into shapes that decide their function."),
    ("d4", "Sleep and memory", "Several studies show sleep helps memory."),
]


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    from indexing.pipeline import IndexingConfig, IndexingPipeline
    from search.settings import Settings
    from search.stores.embedded import EmbeddedStore
    from serving.api import create_api
    from serving.config import AppConfig
    from serving.local import local_backend

    tmp = tmp_path_factory.mktemp("typo-api")
    src = tmp / "docs.jsonl"
    src.write_text("".join(json.dumps({"id": i, "title": t, "text": b}) + "\n" for i, t, b in DOCS))
    cfg = IndexingConfig(embed=False, dead_letter_dir=tmp / "dead", progress=False)
    data = tmp / "data"
    assert IndexingPipeline(EmbeddedStore(data / "indices"), None, cfg).build(src, INDEX).indexed == len(DOCS)
    config = AppConfig.model_validate(
        {
            "data_dir": str(data),
            "search": {"default_index": INDEX, "retrieval": {"mode": "bm25"}},
            "reranker": {"model": None},
            "suggest": {"lm": {"enabled": False}, "prefetch_top": 0},
            "summarizer": None,
        }
    )
    backend = local_backend(config, Settings())
    with TestClient(create_api(backend, backend.metrics)) as c:
        yield c
    backend.suggest.close()
    backend.store.close()


def _search(client: TestClient, query: str, **body: Any) -> dict[str, Any]:
    resp = client.post("/v1/search", json={"query": query, **body})
    assert resp.status_code == 200, resp.text
    return resp.json()


def test_api_corrects_before_retrieval(client: TestClient) -> None:
    out = _search(client, "protien foldnig")
    assert out["query"] == "protien foldnig"
    assert out["corrected_query"] == "protein folding" and out["did_you_mean"] is None
    assert [r["id"] for r in out["results"]][:1] == ["d3"]
    clean = _search(client, "protein folding")
    assert clean["corrected_query"] is None and clean["did_you_mean"] is None
    assert [r["id"] for r in clean["results"]] == [r["id"] for r in out["results"]]


def test_api_off_switch(client: TestClient) -> None:
    out = _search(client, "protien foldnig", typo_tolerance=False)
    assert out["results"] == [] and out["corrected_query"] is None
    assert out["did_you_mean"] == "protein folding"
    bad = client.post("/v1/search", json={"query": "x", "typo_tolerance": "maybe"})
    assert bad.status_code == 422


def test_api_untouched_query_has_no_fields(client: TestClient) -> None:
    out = _search(client, "argparse 2024")
    assert out["corrected_query"] is None and out["did_you_mean"] is None
    assert [r["id"] for r in out["results"]] == ["d2"]


@dataclass
class _Logged:
    query: str
    issuer: str | None
    type: str = "search"
    result_count: int = 3
    index: str | None = "idx"
    session_id: str | None = None
    ts: datetime = datetime(2026, 1, 1, tzinfo=UTC)


def test_query_log_popularity_wins_near_ties_only_past_k_anonymity() -> None:
    vi = VocabIndex(Vocabulary("v1", {"cells": 12, "cell": 10, "protein": 5}, 30))  # a near-tie
    pop = QueryWordPopularity(min_sessions=3, index="idx")
    c = Corrector(vi, TypoConfig(), popularity=pop)
    assert c.correct("celll").searched == "cells"  # by document frequency
    pop.load([_Logged("cell biology", "a"), _Logged("Cell", "b"), _Logged("cell", "b")])
    assert pop("cell") == 0.0  # two issuers: not counted yet
    pop.record(_Logged("cell", "c", result_count=0))  # no results: does not count
    pop.record(_Logged("cell", "d", index="other"))  # another index
    pop.record(_Logged("my cell is <phone>", "e"))  # scrubbed (PII): does not count
    assert pop("cell") == 0.0
    pop.record(_Logged("cell", "f"))
    assert 0 < pop("cell") <= pop.max_bonus
    assert Corrector(vi, TypoConfig(), popularity=pop).correct("celll").searched == "cell"
    far = VocabIndex(Vocabulary("v1", DF, 100))  # cells 100, cell 60: the capped bonus does not overturn it
    assert Corrector(far, TypoConfig(), popularity=pop).correct("celll").searched == "cells"
    small = QueryWordPopularity(min_sessions=1, max_words=1)
    small.load([_Logged("alpha", "a"), _Logged("beta", "a")])
    assert small("alpha") == 1.0 and small("beta") == 0.0  # bounded
