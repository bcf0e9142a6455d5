"""Suggester units: prefix index ordering and decay, normalisation and dedup, the safety and result filters,
the LM deadline (a deliberately slow LM), caches, prefetch, related searches, and a real tiny causal LM."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from logs.querylog import QueryEvent
from models.causal_lm import LMConfig
from search.suggest.indices import PrefixIndex
from search.suggest.lm_completer import (
    Completion,
    LMCompleter,
    LMCompleterConfig,
    Task,
    split_prefix,
    whole_words,
)
from search.suggest.safety import SafetyFilter, contains_pii
from search.suggest.schemas import DAY_S, SuggestConfig
from search.suggest.suggester import Suggester
from search.text import normalize_prefix, normalize_query
from tests.tiny_lm import TINY_EXAMPLES, build_tiny_query_lm

NOW = 1_750_000_000.0


def ev(query: str, ts: float = NOW, results: int = 3, session: str | None = None) -> QueryEvent:
    return QueryEvent(ts=datetime.fromtimestamp(ts, UTC), query=query, result_count=results, session_id=session)


class ScriptedLM:
    """An LM stand-in with fixed answers per prefix, counting calls (the real tiny LM is tested below)."""

    def __init__(self, answers: dict[str, list[tuple[str, float]]], delay_s: float = 0.0) -> None:
        self.answers = answers
        self.delay_s = delay_s
        self.calls: list[tuple[str, Task]] = []
        self.lock = threading.Lock()

    def __call__(self, text: str, task: Task) -> list[Completion]:
        with self.lock:
            self.calls.append((text, task))
        time.sleep(self.delay_s)
        return [Completion(text=t, score=s) for t, s in self.answers.get(text, [])]


class SlowLM:
    """A deliberately slow LM: any completer, delayed."""

    def __init__(self, inner: object, delay_s: float) -> None:
        self.inner = inner
        self.delay_s = delay_s

    def __call__(self, text: str, task: Task) -> list[Completion]:
        time.sleep(self.delay_s)
        return self.inner(text, task)  # type: ignore[operator, no-any-return]


def make(lm: object | None = None, has_results: object | None = None, **cfg: object) -> Suggester:
    config = SuggestConfig.model_validate({"prefetch_top": 0, **cfg})
    return Suggester(config, complete=lm, has_results=has_results, clock=lambda: NOW)  # type: ignore[arg-type]


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


# -- normalisation --------------------------------------------------------------------------------------
def test_normalisation_is_case_and_whitespace_insensitive() -> None:
    assert normalize_query("  Protein\tFOLDING   in  cells. ") == "protein folding in cells"
    assert normalize_query("Ｆｕｌｌ width?") == "full width"
    assert normalize_query("covid-19 p53") == "covid-19 p53"
    assert normalize_prefix("Protein  fold") == "protein fold"
    assert normalize_prefix("Protein  ") == "protein "  # the last word is complete
    assert normalize_prefix("   ") == ""


def test_split_prefix_for_token_healing() -> None:
    assert split_prefix("protein fold") == (" protein", " fold")
    assert split_prefix("protein ") == (" protein", " ")
    assert split_prefix("fold") == ("", " fold")


def test_a_line_cut_by_the_token_budget_ends_at_its_last_whole_word() -> None:
    assert whole_words("protein folding in yeast cel", "protein fold") == "protein folding in yeast"
    assert whole_words("protein folding in  ", "protein fold") == "protein folding in"
    # never back into what was typed: a line that only finished the typed word is kept as it is
    assert whole_words("protein folding", "protein fold") == "protein folding"
    assert whole_words("protein foldi", "protein fold") == "protein foldi"
    assert whole_words("vitamin d and bo", "") == "vitamin d and"


# -- prefix index --------------------------------------------------------------------------------------------
def test_prefix_index_orders_by_frequency_then_text() -> None:
    idx = PrefixIndex(half_life_s=7 * DAY_S)
    for q, n in [("protein folding", 3), ("protein structure", 5), ("protein aggregation", 3), ("prion", 9)]:
        for _ in range(n):
            idx.add(q, NOW)
    assert [q for q, _ in idx.top("protein", 10, NOW)] == [
        "protein structure",
        "protein aggregation",
        "protein folding",
    ]
    assert [q for q, _ in idx.top("pr", 2, NOW)] == ["prion", "protein structure"]
    assert idx.top("protein s", 5, NOW) == [("protein structure", pytest.approx(5.0))]
    assert idx.top("xyz", 5, NOW) == [] and idx.top("", 5, NOW) == []


def test_recency_decay_halves_per_half_life() -> None:
    idx = PrefixIndex(half_life_s=7 * DAY_S)
    for _ in range(3):
        idx.add("old favourite", NOW - 21 * DAY_S)  # 3 searches, 3 half-lives ago: worth 3/8
    idx.add("new thing", NOW - 7 * DAY_S)  # 1 search, 1 half-life ago: worth 1/2
    assert idx.score("old favourite", NOW) == pytest.approx(3 / 8)
    assert idx.score("new thing", NOW) == pytest.approx(0.5)
    assert [q for q, _ in idx.top("n", 5, NOW)] == ["new thing"]
    both = PrefixIndex(half_life_s=7 * DAY_S)
    for _ in range(3):
        both.add("x old", NOW - 21 * DAY_S)
    both.add("x new", NOW - 7 * DAY_S)
    assert [q for q, _ in both.top("x", 5, NOW)] == ["x new", "x old"]
    # With slow decay (half-life 60 days) frequency wins instead: the half-life decides, not insertion order.
    slow = PrefixIndex(half_life_s=60 * DAY_S)
    for _ in range(3):
        slow.add("x old", NOW - 21 * DAY_S)
    slow.add("x new", NOW - 7 * DAY_S)
    assert [q for q, _ in slow.top("x", 5, NOW)] == ["x old", "x new"]
    # A further search of the old one later puts it back on top (3/8 + 1 > 1/2).
    both.add("x old", NOW)
    assert [q for q, _ in both.top("x", 5, NOW)] == ["x old", "x new"]


def test_precomputed_top_lists_match_brute_force() -> None:
    rng = random.Random(7)
    words = ["pro", "protein", "prion", "proton", "fold", "folding", "a", "ab", "abc"]
    idx = PrefixIndex(half_life_s=3 * DAY_S, precompute_chars=4, top_n=5)
    for _ in range(3000):
        q = " ".join(rng.choice(words) for _ in range(rng.randint(1, 3)))
        idx.add(q, NOW - rng.uniform(0, 30 * DAY_S))
    all_q = list(idx._entries)
    for prefix in ["p", "pr", "pro", "prot", "protein", "protein f", "a", "ab", "abc ", "fold"]:
        expected = sorted((q for q in all_q if q.startswith(prefix)), key=lambda q: (-idx.score(q, NOW), q))[:5]
        got = [q for q, _ in idx.top(prefix, 5, NOW)]
        assert got == expected, prefix


def test_multi_word_prefix_completes_the_last_word() -> None:
    s = make()
    for q in ["Protein folding in cells", "protein  FOLDING diseases", "proteins", "fold change"]:
        s.record(ev(q))
    texts = [x.text for x in run(s.suggest("protein fold")).suggestions]
    assert texts == ["protein folding diseases", "protein folding in cells"]
    assert [x.text for x in run(s.suggest("PROTEIN ")).suggestions] == texts  # next word only: not "proteins"
    assert [x.text for x in run(s.suggest("protein")).suggestions] == [*texts, "proteins"]
    assert all(x.source == "log" for x in run(s.suggest("protein")).suggestions)


def test_searches_without_results_and_other_events_are_not_learnt() -> None:
    s = make()
    assert s.record(ev("nothing here", results=0)) is False
    assert s.record(QueryEvent(type="click", query="clicked", result_count=1, doc_id="d1")) is False
    assert s.load([ev("kept"), ev("kept")]) == 2
    assert [x.text for x in run(s.suggest("n")).suggestions] == []
    assert s.prefixes.count("kept") == 2


def test_blank_prefix_gives_nothing() -> None:
    s = make(ScriptedLM({}))
    s.record(ev("anything"))
    for q in ["", "   ", "\t"]:
        r = run(s.suggest(q))
        assert r.suggestions == [] and r.partial is False


# -- filters -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("contact jane.doe@example.org", "email"),
        ("mail a@b.co now", "email"),
        ("call +1 (555) 123-4567", "phone-like digits"),
        ("call 555-1234", "phone-like digits"),
        ("card 4111 1111 1111 1111", "card-like digits"),
        ("4111-1111-1111-1111", "card-like digits"),
        ("1 in 5 million people", None),
        ("covid-19 vaccine 2021", None),
        ("p53 mutations in 50% of tumours", None),
        ("ldl 130 mg/dl", None),
    ],
)
def test_pii_detection(text: str, kind: str | None) -> None:
    assert contains_pii(text) == kind


def test_blocklist_words_phrases_and_prefixes() -> None:
    f = SafetyFilter(["badword", "make a bomb", "porn*"], pii=True)
    assert f.reason("A BadWord here") == "blocklist"
    assert f.reason("how to make   a bomb") == "blocklist"
    assert f.reason("pornography sites") == "blocklist"
    assert f.allows("badwords are fine as another word") and f.allows("bombastic make a bombe")
    assert f.reason("write to x@y.org") == "email"


def test_blocklisted_and_email_completions_never_appear() -> None:
    lm = ScriptedLM(
        {
            "contact": [
                ("contact badword support", 0.9),
                ("contact john.smith@example.com", 0.8),
                ("contact 555 123 4567", 0.7),
                ("contact lens hygiene", 0.5),
            ]
        }
    )
    s = make(lm, blocklist=["badword"], deadline_ms=5000)
    s.record(ev("contact someone@example.org"))  # PII in the log is never learnt either
    s.record(ev("contact BADWORD now"))
    s.record(ev("contact tracing"))
    r = run(s.suggest("contact", k=20))
    texts = [x.text for x in r.suggestions]
    assert sorted(texts) == ["contact lens hygiene", "contact tracing"]
    assert not any("@" in t or "badword" in t or "555" in t for t in texts)
    assert s.stats["rejected"] == 2


def test_candidates_without_results_are_dropped_and_checks_cached() -> None:
    checked: list[str] = []

    def has_results(text: str, given: str = "", completes: bool = False) -> bool:
        checked.append(text)
        return "nothing" not in text

    lm = ScriptedLM({"vit": [("vitamin d", 0.6), ("vitamin nothing", 0.5)], "vita": [("vitamin d", 0.6)]})
    s = make(
        lm, has_results, deadline_ms=5000, lm_backoff_words=0, term_coverage_of="candidate", lm_min_shared_results=0
    )
    assert [x.text for x in run(s.suggest("vit")).suggestions] == ["vitamin d"]
    assert [x.text for x in run(s.suggest("vita")).suggestions] == ["vitamin d"]
    assert checked == ["vitamin d", "vitamin nothing"]  # "vitamin d" was checked once, then cached


def test_a_candidate_failing_the_result_check_is_cut_back_to_a_passing_query() -> None:
    def has_results(text: str, given: str = "", completes: bool = False) -> bool:
        return "quantum" not in text and "badword" not in text

    lines = [
        ("vitamin d levels in quantum yoga", 0.7),  # → "vitamin d levels" (not "... in": a stop word)
        ("vitamin quantum", 0.6),  # → "vitamin": finishing the typed word is a suggestion
        ("vit quantum", 0.5),  # → nothing: the cut would go back to what was typed
        ("vitamin d badword", 0.4),  # blocklisted: dropped whole, never cut back to a clean head
    ]
    lm = ScriptedLM({"vit": lines})
    s = make(lm, has_results, deadline_ms=5000, blocklist=["badword"])
    got = [(x.text, x.score) for x in run(s.suggest("vit")).suggestions]
    assert got == [("vitamin d levels", pytest.approx(0.35)), ("vitamin", pytest.approx(0.3))]
    # at most `lm_backoff_words` words are cut: two are not enough to reach "vitamin d levels"
    short = make(ScriptedLM({"vit": lines}), has_results, deadline_ms=5000, lm_backoff_words=2, blocklist=["badword"])
    assert [x.text for x in run(short.suggest("vit")).suggestions] == ["vitamin"]
    off = make(ScriptedLM({"vit": lines}), has_results, deadline_ms=5000, lm_backoff_words=0, blocklist=["badword"])
    assert run(off.suggest("vit")).suggestions == []


def test_the_drift_guard_wants_the_candidates_results_to_overlap_the_typed_texts(tmp_path: Path) -> None:
    """Against a real (embedded) index: with `min_shared`, a completion whose top results leave those of what was
    typed fails, one that narrows them passes; with nothing typed there is nothing to drift from."""
    import json

    from indexing.pipeline import IndexingConfig, IndexingPipeline
    from search.stores.embedded import EmbeddedStore
    from search.suggest.result_check import store_has_results

    vitamin = [f"Vitamin D {w} in adults." for w in ("deficiency", "levels", "supplements", "and sunlight")]
    folding = [f"Protein folding {w}: misfolded proteins aggregate in cells." for w in ("kinetics", "chaperones",
               "disease", "pathways")]  # fmt: skip
    src = tmp_path / "docs.jsonl"
    src.write_text(
        "\n".join(json.dumps({"id": str(i), "title": "", "text": t}) for i, t in enumerate(vitamin + folding))
    )
    store = EmbeddedStore(tmp_path / "indices")
    IndexingPipeline(store, None, IndexingConfig(embed=False, dead_letter_dir=tmp_path / "d", progress=False)).build(
        src, "docs"
    )
    guard = store_has_results(store, "docs", 0.0, min_shared=2, shared_depth=3)
    drifting = "vitamin d misfolded protein folding in cells"
    assert guard("vitamin d deficiency", "vitamin d", True)  # narrows the typed text's results
    assert not guard(drifting, "vitamin d", True)  # leads to other documents
    assert guard(drifting, "", True)  # nothing typed: no guard
    assert guard(drifting, "vitamin d", False)  # not a completion (a related search): no guard
    assert store_has_results(store, "docs", 0.0)(drifting, "vitamin d", True)  # min_shared 0: off
    strict = store_has_results(store, "docs", 0.0, min_shared=5, shared_depth=10)
    assert strict("vitamin d deficiency", "vitamin d", True)  # the typed text finds 4: all 4 must stay, and do
    assert not strict("protein folding kinetics", "vitamin d", True)
    store.close()


def test_the_result_check_is_given_what_was_typed_when_it_counts_only_the_added_words() -> None:
    checked: list[tuple[str, str, bool]] = []

    def has_results(text: str, given: str = "", completes: bool = False) -> bool:
        checked.append((text, given, completes))
        return True

    lines = {"lack of vit": [("lack of vitamin d", 0.6)], "lack of vita": [("lack of vitamin d", 0.6)]}
    s = make(ScriptedLM(lines), has_results, deadline_ms=5000, lm_min_shared_results=0)  # "added" (the default)
    for typed in ("lack of vit", "lack of vita"):
        assert [x.text for x in run(s.suggest(typed)).suggestions] == ["lack of vitamin d"]
    one_per_typing = [("lack of vitamin d", "lack of vit", False), ("lack of vitamin d", "lack of vita", False)]
    assert checked == one_per_typing
    whole = make(
        ScriptedLM(lines), has_results, deadline_ms=5000, term_coverage_of="candidate", lm_min_shared_results=0
    )
    checked.clear()
    for typed in ("lack of vit", "lack of vita"):
        run(whole.suggest(typed))
    assert checked == [("lack of vitamin d", "", False)]  # one per candidate
    # The drift guard (the default, 5) needs what was typed even when all the candidate's words count; a related
    # search is no completion of the query and is not guarded.
    guarded = make(ScriptedLM(lines), has_results, deadline_ms=5000, term_coverage_of="candidate")
    checked.clear()
    for typed in ("lack of vit", "lack of vita"):
        run(guarded.suggest(typed))
    assert checked == [("lack of vitamin d", "lack of vit", True), ("lack of vitamin d", "lack of vita", True)]
    related = make(ScriptedLM({"lack of vitamin": [("vitamin d deficiency", 0.6)]}), has_results, deadline_ms=5000)
    checked.clear()
    assert [r.text for r in run(related.related("lack of vitamin")).related] == ["vitamin d deficiency"]
    assert checked == [("vitamin d deficiency", "lack of vitamin", False)]


def test_lm_candidates_are_normalised_deduplicated_and_blended() -> None:
    lm = ScriptedLM(
        {
            "protein f": [
                ("Protein Folding.", 0.4),
                ("protein   folding", 0.6),
                ("protein folding in cells", 0.3),
                ("protein f", 0.9),  # the prefix itself is no suggestion
                ("proteins fold", 0.9),  # does not continue the prefix
            ]
        }
    )
    s = make(lm, deadline_ms=5000)
    s.record(ev("protein folding"))
    s.record(ev("protein function"))
    r = run(s.suggest("Protein  F"))
    assert r.partial is False
    got = {x.text: (x.source, x.score) for x in r.suggestions}
    assert got == {
        "protein folding": ("log+lm", pytest.approx(0.5 + 0.5 * 0.6)),
        "protein function": ("log", pytest.approx(0.5)),
        "protein folding in cells": ("lm", pytest.approx(0.5 * 0.3)),
    }
    assert [x.text for x in r.suggestions] == ["protein folding", "protein function", "protein folding in cells"]
    assert r.query == "Protein  F"


# -- deadline and caches ---------------------------------------------------------------------------------------
def test_slow_lm_never_holds_the_request_past_the_deadline() -> None:
    lm = SlowLM(ScriptedLM({"insulin r": [("insulin resistance", 0.7)]}), delay_s=0.5)
    s = make(lm, deadline_ms=30)
    s.record(ev("insulin receptor"))
    try:
        t = time.perf_counter()
        r = run(s.suggest("insulin r"))
        elapsed = time.perf_counter() - t
        assert r.partial is True
        assert [x.text for x in r.suggestions] == ["insulin receptor"]  # what was ready: the log
        assert elapsed < 0.25 and r.took_ms < 250  # 30 ms deadline, generous slack for a busy CI machine
        # The completion went on in the background and was cached: the next keystroke gets it at once.
        deadline = time.monotonic() + 10
        while ("complete", "insulin r") not in s.lm_cache:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        t = time.perf_counter()
        r = run(s.suggest("insulin r"))
        assert time.perf_counter() - t < 0.25
        assert r.partial is False
        assert {x.text: x.source for x in r.suggestions} == {"insulin resistance": "lm", "insulin receptor": "log"}
        # A longer prefix not yet completed shows the cached candidates that still match.
        r = run(s.suggest("insulin res"))
        assert r.partial is True and [x.text for x in r.suggestions] == ["insulin resistance"]
    finally:
        s.close()


def test_no_waiting_when_the_lm_cannot_make_the_deadline() -> None:
    """Once recent LM calls all took longer than the deadline, a cold prefix is answered at once."""
    lm = SlowLM(ScriptedLM({}), delay_s=0.3)
    s = make(lm, deadline_ms=200, workers=4)
    try:
        for f in [s.schedule(f"warm{i}", "complete") for i in range(4)]:
            f.result(5)  # type: ignore[union-attr]
        t = time.perf_counter()
        r = run(s.suggest("never seen"))
        assert r.partial is True and time.perf_counter() - t < 0.1  # not the 200 ms deadline
        fast = make(ScriptedLM({"quick": [("quick answer", 0.5)]}), deadline_ms=200)
        for i in range(4):
            fast.lm_candidates(f"q{i}", "complete")
        r = run(fast.suggest("quick"))
        assert r.partial is False and [x.text for x in r.suggestions] == ["quick answer"]  # fast LM: waited
        fast.close()
    finally:
        s.close()


def test_concurrent_requests_share_one_lm_job() -> None:
    lm = ScriptedLM({"zeb": [("zebrafish", 0.5)]}, delay_s=0.3)
    s = make(lm, deadline_ms=2000)

    async def many() -> list[object]:
        return await asyncio.gather(*(s.suggest("zeb") for _ in range(5)))

    try:
        results = run(many())
        assert all([x.text for x in r.suggestions] == ["zebrafish"] for r in results)  # type: ignore[attr-defined]
        assert lm.calls == [("zeb", "complete")]
    finally:
        s.close()


def test_pending_jobs_are_bounded_oldest_dropped() -> None:
    gate = threading.Event()

    def blocked(text: str, task: Task) -> list[Completion]:
        gate.wait(5)
        return [Completion(text=text + "x", score=0.5)]

    s = make(blocked, workers=1, max_pending=3, deadline_ms=1)
    try:
        futs = [s.schedule(f"p{i}", "complete") for i in range(6)]
        assert all(f is not None for f in futs)
        assert sum(f.cancelled() for f in futs if f is not None) >= 2
        assert s.stats["dropped_jobs"] >= 2
        assert not futs[-1].cancelled()  # type: ignore[union-attr]
    finally:
        gate.set()
        s.close()


def test_prefetch_fills_the_cache_for_frequent_prefixes() -> None:
    lm = ScriptedLM({"protein": [("protein folding", 0.5)], "protein folding": [("protein folding in cells", 0.5)]})
    s = make(lm)
    for _ in range(5):
        s.record(ev("protein folding"))
    s.record(ev("zebrafish"))
    top = s.prefixes.frequent_prefixes(3)
    assert top[0] in ("protein", "protein folding", "pro") and "zebrafish" not in top
    try:
        assert s.prefetch(["protein", "protein folding", "p"]) == 2  # "p" is too short for the LM
        assert s.prefetch(["protein"]) == 0  # cached already
        r = run(s.suggest("protein", deadline_ms=0.001))
        assert r.partial is False and "protein folding" in [x.text for x in r.suggestions]
    finally:
        s.close()


def test_related_searches_from_sessions_and_lm() -> None:
    lm = ScriptedLM({"insulin resistance": [("insulin sensitivity", 0.8), ("call me at 555 123 4567", 0.9)]})
    s = make(lm, deadline_ms=5000)
    s.record(ev("insulin resistance", session="a"))
    s.record(ev("type 2 diabetes", NOW + 60, session="a"))
    s.record(ev("insulin resistance", NOW + 100, session="b"))
    s.record(ev("type 2 diabetes", NOW + 160, session="b"))
    s.record(ev("metformin", NOW + 200, session="b"))
    s.record(ev("unrelated", NOW + 4000, session="b"))  # outside the 30-minute window
    r = run(s.related("Insulin Resistance", k=5))
    got = [(x.text, x.source) for x in r.related]
    assert got == [("type 2 diabetes", "session"), ("metformin", "session"), ("insulin sensitivity", "lm")]
    assert r.related[0].score > r.related[1].score


# -- a real (tiny) causal LM --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_lm_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_query_lm(tmp_path_factory.mktemp("tiny-lm"))


def tiny_completer(path: Path, **cfg: object) -> LMCompleter:
    return LMCompleter(
        LMCompleterConfig.model_validate(
            {"lm": LMConfig(model=str(path), device="cpu"), "examples": TINY_EXAMPLES, "max_new_tokens": 12, **cfg}
        )
    )


def test_tiny_lm_completes_unseen_prefixes(tiny_lm_path: Path) -> None:
    lm = tiny_completer(tiny_lm_path)
    out = lm.complete(["protein fo", "insul"])
    assert [len(c) for c in out] == [4, 4]
    for prefix, cands in zip(["protein fo", "insul"], out, strict=True):
        assert all(c.text.startswith(prefix) and 0 < c.score <= 1 for c in cands), cands
    # Token healing: the half-typed word is finished, not followed by a new one.
    assert "protein folding in cells" in {normalize_query(c.text) for c in out[0]}
    sampled = tiny_completer(tiny_lm_path, strategy="sample", num_candidates=3).complete(["vitamin"])
    assert len(sampled[0]) == 3 and all(c.text.startswith("vitamin") for c in sampled[0])
    related = lm.complete(["protein folding"], task="related")
    assert len(related[0]) == 4


def test_tiny_lm_lines_cut_by_the_token_budget_end_at_a_whole_word(tiny_lm_path: Path) -> None:
    full = {c.text for c in tiny_completer(tiny_lm_path).complete(["protein fo"])[0]}
    assert "protein folding in cells" in full
    short = tiny_completer(tiny_lm_path, max_new_tokens=4).complete(["protein fo"])[0]
    assert short, "every beam was cut, none dropped"
    assert len({c.text for c in short}) == len(short), "beams cut back to the same line are shown once"
    for c in short:
        assert c.text.startswith("protein fo")
        # each shown line is a whole-word prefix of a line the model writes with room to finish it
        assert any(f == c.text or f.startswith(c.text + " ") for f in full) or " " not in c.text[len("protein ") :]


def test_tiny_lm_behind_the_suggester_with_a_deadline(tiny_lm_path: Path) -> None:
    lm = tiny_completer(tiny_lm_path)

    def complete(text: str, task: Task) -> list[Completion]:
        return lm.complete([text], task)[0]

    s = make(SlowLM(complete, 0.3), deadline_ms=20)
    try:
        first = run(s.suggest("protein fol"))
        assert first.partial is True and first.suggestions == []
        deadline = time.monotonic() + 30
        while ("complete", "protein fol") not in s.lm_cache:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        second = run(s.suggest("protein fol"))
        assert second.partial is False
        assert "protein folding in cells" in [x.text for x in second.suggestions]
        assert all(x.source == "lm" and x.text.startswith("protein fol") for x in second.suggestions)
    finally:
        s.close()


def test_store_result_check_wants_the_words_found(tmp_path: Path) -> None:
    """Against a real (embedded) index: any BM25 hit passes at coverage 0; at 1 a top hit must hold every word."""
    import json

    from indexing.pipeline import IndexingConfig, IndexingPipeline
    from search.stores.embedded import EmbeddedStore
    from search.suggest.result_check import store_has_results

    src = tmp_path / "docs.jsonl"
    rows = [
        {"id": "1", "title": "Vitamin D", "text": "Vitamin D deficiency and bone fractures."},
        {"id": "2", "title": "Folding", "text": "Proteins fold in cells; misfolding causes diseases."},
    ]
    src.write_text("\n".join(json.dumps(r) for r in rows))
    store = EmbeddedStore(tmp_path / "indices")
    cfg = IndexingConfig(embed=False, dead_letter_dir=tmp_path / "dead", progress=False)
    IndexingPipeline(store, None, cfg).build(src, "docs")
    loose, strict = store_has_results(store, "docs", 0.0), store_has_results(store, "docs", 1.0)
    assert loose("vitamin quantum yoga") and not strict("vitamin quantum yoga")
    assert strict("vitamin d deficiency") and strict("protein folding in cells")  # word forms differ, stems match
    assert not loose("quantum yoga") and not strict("quantum yoga")
    assert store_has_results(store, "docs", 0.5)("vitamin fractures yoga")
    # "added": only the words the LM added to what was typed must be found; the user's own words are theirs
    added = store_has_results(store, "docs", 1.0, coverage_of="added")
    assert added("lack of vitamin d deficiency", "lack of vitamin d def") and not strict("lack of vitamin d deficiency")
    assert not added("vitamin d quantum yoga", "vitamin d")  # the LM's invention is still caught
    assert not added("vitamin d quantum", "vitamin d quant")  # finishing the typed word: the finished word counts
    store.close()
