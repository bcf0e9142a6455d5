"""Corpus suggestions (prefix, infix, typo, tails), the blend with the log and the LM, precomputed LM completions,
and the per-version artifacts; no model, no Ray (the Ray Data job is exercised by its table step)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from logs.querylog import QueryEvent
from search.suggest.corpus import CorpusIndex, CorpusSuggestConfig, build_phrases, title_phrase
from search.suggest.lm_completer import Completion
from search.suggest.precomputed import PrecomputedCompletions, precompute, prefixes_that_matter
from search.suggest.schemas import SuggestConfig
from search.suggest.suggester import Suggester

DOCS = [
    ("argparse — Parser for command-line options", "The argparse module makes it easy to parse command line args."),
    ("json.dumps(obj, *, skipkeys=False)", "Serialize obj to a JSON formatted string. The json module encodes."),
    ("Regular expression operations", "This module provides regular expression matching operations."),
    ("csv — CSV File Reading and Writing", "Read a csv file. The csv module reads and writes tabular data."),
    ("datetime", "The datetime module supplies classes to parse command line dates; regular expression help."),
    ("class logging.Handler", "Parse command line options with a regular expression, then read a csv file."),
]


def run(coro: Any) -> Any:
    return asyncio.run(coro)


@pytest.fixture(scope="module")
def index() -> CorpusIndex:
    return CorpusIndex(build_phrases(DOCS, CorpusSuggestConfig(min_df=2)), CorpusSuggestConfig(min_df=2))


def test_titles_read_as_queries() -> None:
    assert title_phrase("json.dumps(obj, *, skipkeys=False)", 8) == "json.dumps"
    assert title_phrase("class logging.Handler", 8) == "logging.handler"
    assert title_phrase("the of and", 8) is None  # nothing searchable
    assert title_phrase(" ".join(["word"] * 9), 8) is None


def test_frequent_phrases_kept_rare_ones_and_stop_word_edges_dropped(index: CorpusIndex) -> None:
    assert "parse command line" in index.phrases  # in 3 documents
    assert "regular expression" in index.phrases
    assert "serialize obj" not in index.phrases  # one document, not a title
    assert "json.dumps" in index.phrases  # a title counts once
    stop = {"the", "a", "of"}
    assert not any(p.split(" ")[0] in stop or p.split(" ")[-1] in stop for p in index.phrases)
    assert all(0 < s < 1 for s in index.phrases.values())


def test_prefix_infix_typo_and_tail_lookup(index: CorpusIndex) -> None:
    assert [t for t, _ in index.top("parse com", 2)] == ["parse command", "parse command line"]
    infix = dict(index.top("expression", 5))  # a later word: below a prefix hit of the same score
    assert "regular expression" in infix
    assert dict(index.top("regular", 5))["regular expression"] > infix["regular expression"]
    fixed = [t for t, _ in index.top("reguler exp", 3)]  # one edit in the last word
    assert "regular expression" not in fixed  # the typo is in an earlier word: no correction of it
    assert next(t for t, _ in index.top("regulra", 3)).startswith("regular")
    tail = [t for t, _ in index.top("how do i parse comm", 3)]  # the user's own words, then a phrase
    assert tail and all(t.startswith("how do i parse comm") for t in tail)
    assert index.top("zzzz qqqq", 3) == []
    assert index.top("", 3) == [] and index.top("   ", 3) == []


def test_a_custom_corrector_is_used_on_misses(index: CorpusIndex) -> None:
    seen: list[str] = []

    def correct(prefix: str) -> str | None:
        seen.append(prefix)
        return "csv"

    got = index.top("xsvq", 3, correct=correct)
    assert seen == ["xsvq"] and got and got[0][0].startswith("csv")


def test_short_prefix_top_lists_match_a_full_scan(index: CorpusIndex) -> None:
    for p in ("r", "pa", "csv", "j"):
        scan = sorted(((t, s) for t, s in index.phrases.items() if t.startswith(p)), key=lambda kv: (-kv[1], kv[0]))
        assert [t for t, _ in index.top(p, 4) if t.startswith(p)] == [t for t, _ in scan[:4]]


def test_corpus_index_round_trips_and_refuses_bad_files(index: CorpusIndex, tmp_path: Path) -> None:
    path = tmp_path / "v1.corpus.json"
    index.save(path)
    loaded = CorpusIndex.load(path)
    assert loaded is not None and loaded.phrases == index.phrases
    path.write_text("{not json")
    assert CorpusIndex.load(path) is None
    path.write_text('{"format": 99, "phrases": {}}')
    assert CorpusIndex.load(path) is None
    assert CorpusIndex.load(tmp_path / "missing.json") is None


def _event(q: str, n: int = 3) -> QueryEvent:
    return QueryEvent(ts=datetime.now(UTC), query=q, result_count=n, type="search", issuer="c1")


def test_blend_puts_past_searches_first_and_names_every_source(index: CorpusIndex) -> None:
    s = Suggester(SuggestConfig(lm={"enabled": False}))
    s.corpus = index
    cold = run(s.suggest("parse com", 5)).suggestions
    assert cold and all(x.source == "corpus" for x in cold)
    s.record(_event("parse command line arguments"))
    s.record(_event("parse command line"))
    got = run(s.suggest("parse com", 5)).suggestions
    assert got[0].source in ("log", "log+corpus")
    both = {x.text: x for x in got}["parse command line"]
    assert both.source == "log+corpus"
    assert both.score == pytest.approx(0.5 + s.config.corpus.weight * index.phrases["parse command line"])
    s.config.corpus.enabled = False
    assert all("corpus" not in x.source for x in run(s.suggest("parse com", 5)).suggestions)


def test_precomputed_completions_serve_without_the_online_lm(tmp_path: Path) -> None:
    calls: list[str] = []

    def online(text: str, task: str) -> list[Completion]:
        calls.append(text)
        return [Completion(text=text + "xx online", score=0.9)]

    table = PrecomputedCompletions({"prot": [("protein folding", 0.8)]}, "v1")
    s = Suggester(SuggestConfig(lm={"enabled": True}), complete=online)
    s.precomputed = table
    got = run(s.suggest("prot", 5))
    assert [(x.text, x.source) for x in got.suggestions] == [("protein folding", "lm")] and not got.partial
    assert [x.text for x in run(s.suggest("protein f", 5)).suggestions] == ["protein folding"]  # a shorter prefix's
    assert calls == []  # every answer came from the table
    s.close(1)
    offline = Suggester(SuggestConfig(lm={"enabled": False}))
    offline.precomputed = table
    assert [x.text for x in run(offline.suggest("prot", 5)).suggestions] == ["protein folding"]
    path = tmp_path / "v1.lm.json"
    table.save(path)
    loaded = PrecomputedCompletions.load(path)
    assert loaded is not None and loaded.get("prot") == [("protein folding", 0.8)] and loaded.version == "v1"
    path.write_text("[]")
    assert PrecomputedCompletions.load(path) is None


def test_precompute_passes_lines_through_the_suggesters_checks() -> None:
    def has_results(text: str, given: str = "", completes: bool = False) -> bool:
        return "nothing" not in text

    s = Suggester(SuggestConfig(lm={"enabled": True}, lm_backoff_words=0), has_results=has_results)
    raw = {
        "prot": [Completion(text="Protein folding", score=0.7), Completion(text="protein nothing", score=0.9)],
        "zz": [Completion(text="zz nothing", score=0.5)],
    }
    table = precompute(["prot", "zz", "absent"], raw, s.lm_candidates, "v2")
    assert table.table == {"prot": [("protein folding", 0.7)]}  # normalised; the one finding nothing dropped
    assert table.version == "v2"


def test_prefixes_that_matter_come_from_the_log_head_and_the_corpus(index: CorpusIndex) -> None:
    s = Suggester(SuggestConfig(lm={"enabled": False}))
    for _ in range(3):
        s.record(_event("zebrafish heart"))
    got = prefixes_that_matter(s.prefixes, index, n_log=5, n_corpus=20)
    assert "zebrafish" in got
    best = max(index.phrases.items(), key=lambda kv: (kv[1], kv[0]))[0]
    assert best[:3] in got and best in got
    assert all(len(p) >= 3 for p in got) and len(set(got)) == len(got)


def test_the_cpu_config_keeps_lm_suggestions_on_with_precomputed_completions() -> None:
    from serving.config import AppConfig

    cfg = AppConfig.load(Path(__file__).resolve().parents[1] / "configs" / "cpu.yaml")
    assert cfg.suggest.lm.enabled and cfg.suggest.precomputed_lm and cfg.suggest.corpus.enabled


@pytest.mark.slow
def test_the_ray_data_job_completes_every_prefix_with_the_lm(tiny_chat_lm_path: Path) -> None:
    from models.causal_lm import LMConfig
    from search.suggest.lm_completer import LMCompleterConfig
    from search.suggest.precomputed import ray_generate

    cfg = LMCompleterConfig(lm=LMConfig(model=str(tiny_chat_lm_path), device="cpu"), nice=0, max_new_tokens=3)
    raw = ray_generate(["prot", "insul", "zebra"], cfg, None, batch_size=2)
    assert set(raw) == {"prot", "insul", "zebra"}
    assert all(isinstance(c, Completion) and 0 < c.score <= 1 for cs in raw.values() for c in cs)  # lines, scored
