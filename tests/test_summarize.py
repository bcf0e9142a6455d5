"""Summarizer core: prompt budget, citation parsing, grounding, extractive fallback, cache, streaming and
cancellation through a real (tiny) causal LM's generate()."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from models.causal_lm import LMConfig, load_lm
from search.documents import Document
from search.summarize.cache import SummaryCache, cache_key_query
from search.summarize.config import SummarizerConfig
from search.summarize.grounding import (
    GroundingChecker,
    GroundingConfig,
    ParsedSentence,
    parse_citations,
    split_sentences,
)
from search.summarize.schemas import SummaryEvent, TokenEvent
from search.summarize.summarizer import Summarizer, render

QUERY = "How does the for statement iterate over a sequence?"
DOCS = [
    Document(
        id="loops",
        title="Loops in Python",
        body=(
            "Python has two loop statements. The for statement iterates over the items of any sequence. "
            "It goes through a list or a string in order. The while statement repeats while a condition is true. "
            "Loops may have an else clause, which runs when the loop ends without break."
        ),
    ),
    Document(
        id="errors",
        title="Errors and exceptions",
        body=(
            "Exceptions are raised when errors occur at run time. Try and except statements handle them. "
            "A finally clause always runs, e.g. to close files. Python 3.11 added exception groups."
        ),
    ),
    Document(
        id="classes",
        title="Classes",
        body="Classes bundle data and functionality. Creating a class creates a new type of object.",
    ),
]
COPIED = "The for statement iterates over the items of any sequence."
FABRICATED = "The moon is made of green cheese according to a recent survey."


@pytest.fixture(scope="module")
def tiny_lm_path(tiny_chat_lm_path: Path) -> Path:
    return tiny_chat_lm_path


@pytest.fixture(scope="module")
def tiny_lm(tiny_lm_path: Path) -> tuple[Any, Any, str]:
    return load_lm(LMConfig(model=str(tiny_lm_path), device="cpu"))


def make(tiny_embedder: Any, tiny_lm: Any, tiny_lm_path: Path, **cfg: Any) -> Summarizer:
    grounding = cfg.pop("grounding", {"threshold": 0.999})  # the random tiny embedder puts everything near 0.97
    cfg.setdefault("max_sentences", None)  # the random LM may write sentence ends; tests choose when it stops
    config = SummarizerConfig.model_validate(
        {"lm": {"model": str(tiny_lm_path), "device": "cpu"}, "grounding": grounding, **cfg}
    )
    return Summarizer(config, tiny_embedder, lm=tiny_lm)


# -- sentences and citations ----------------------------------------------------------------------------------
def test_split_sentences_keeps_abbreviations_decimals_and_initials() -> None:
    text = (
        "Smith et al. found a 3.5-fold rise, i.e. a big one. Dr. Jones agreed! Was it J. R. R. Tolkien? "
        "Yes.\nNew line here"
    )
    assert split_sentences(text) == [
        "Smith et al. found a 3.5-fold rise, i.e. a big one.",
        "Dr. Jones agreed!",
        "Was it J. R. R. Tolkien?",
        "Yes.",
        "New line here",
    ]
    long = "word " * 300
    parts = split_sentences(long, max_chars=100)
    assert len(parts) > 10 and all(len(p) <= 100 for p in parts)


def test_parse_citations_forms() -> None:
    text = (
        "Loops iterate over sequences [1]. Exceptions are raised on errors. [2] "
        "Classes and loops both matter [1, 3]. Sources agree [Source 2][3]. Ranges work [1-3]. "
        "Out of range [7]. Trailing frag"
    )
    got = parse_citations(text, n_sources=3)
    assert [(s.text, s.citations) for s in got] == [
        ("Loops iterate over sequences.", [1]),
        ("Exceptions are raised on errors.", [2]),
        ("Classes and loops both matter.", [1, 3]),
        ("Sources agree.", [2, 3]),
        ("Ranges work.", [1, 2, 3]),
        ("Out of range.", []),
        ("Trailing frag", []),
    ]
    assert got[5].invalid_citations == [7]
    cut = parse_citations(text, n_sources=3, complete=False)  # generation was cut off: drop the fragment
    assert cut[-1].text == "Out of range."
    assert parse_citations("No citations at all here.") == [ParsedSentence(text="No citations at all here.")]
    listed = parse_citations("[1] Loops iterate\n[2] Errors are raised.\n1. Files close\n[3]\n- Done [2]", 3)
    assert [(s.text, s.citations) for s in listed] == [
        ("Loops iterate", [1]),
        ("Errors are raised.", [2]),
        ("Files close", [3]),
        ("Done", [2]),
    ]


def test_render_puts_citations_before_the_period() -> None:
    from search.summarize.schemas import SummarySentence

    s = [
        SummarySentence(text="Loops iterate.", citations=[1, 3], supported=True, support=1.0),
        SummarySentence(text="No period", citations=[2], supported=True, support=1.0),
    ]
    assert render(s) == "Loops iterate [1][3]. No period [2]."


# -- prompt ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("budget", [16, 40, 90, 400])
def test_prompt_stays_within_the_token_budget(
    tiny_embedder: Any, tiny_lm: Any, tiny_lm_path: Path, budget: int
) -> None:
    s = make(tiny_embedder, tiny_lm, tiny_lm_path, source_token_budget=budget, max_sentences_per_source=3)
    p = s.build_prompt(QUERY, DOCS)
    blocks = [src.block for src in p.sources if src.block]
    measured = sum(s.count_tokens(b) for b in blocks)
    assert measured == p.source_tokens <= budget
    assert all(len(src.selected) <= 3 for src in p.sources)
    user = p.messages[1]["content"]
    for src in p.sources:
        if src.block:  # numbered [n] in rank order, each selected sentence present
            assert f"[{src.n}] " in user
            assert all(src.sentences[j][:20] in user for j in src.selected)
    if budget >= 400:  # room for everything asked for
        assert [len(src.selected) for src in p.sources] == [3, 3, 2]
    # The whole prompt is the empty prompt (instructions, query, template) plus the budget and separators.
    empty = int(s.encode_prompt(s.build_prompt(QUERY, []))["input_ids"].shape[1])
    n = int(s.encode_prompt(p)["input_ids"].shape[1])
    assert n <= empty + budget + 2 * len(blocks)


def test_prompt_picks_the_most_query_relevant_sentence(tiny_embedder: Any, tiny_lm: Any, tiny_lm_path: Path) -> None:
    s = make(tiny_embedder, tiny_lm, tiny_lm_path, max_sentences_per_source=1)
    p = s.build_prompt(COPIED, DOCS)  # the query is a sentence of result 1: similarity 1.0, picked first
    first = p.sources[0]
    assert [first.sentences[j] for j in first.selected] == [COPIED]
    assert COPIED in p.messages[1]["content"]
    assert "Question: " + COPIED in p.messages[1]["content"]


# -- grounding ---------------------------------------------------------------------------------------------------
def _sources(s: Summarizer) -> list[Any]:
    sources = s.build_prompt(QUERY, DOCS).sources
    s.embed_sources(sources)
    return [src.grounding() for src in sources]


def test_grounding_flags_a_fabricated_sentence_and_passes_a_copied_one(
    tiny_embedder: Any, tiny_lm: Any, tiny_lm_path: Path
) -> None:
    s = make(tiny_embedder, tiny_lm, tiny_lm_path)
    checker = GroundingChecker(GroundingConfig(threshold=0.999), tiny_embedder)
    got = checker.check(
        [
            ParsedSentence(text=COPIED, citations=[1]),
            ParsedSentence(text=FABRICATED, citations=[1]),
            ParsedSentence(text=COPIED, citations=[2]),  # right words, wrong source
            ParsedSentence(text="Try and except statements handle them.", citations=[]),  # no citation
            ParsedSentence(text="Python 3.12 added exception groups.", citations=[2]),  # invented number
        ],
        _sources(s),
    )
    assert (got[0].supported, got[0].citations) == (True, [1])
    assert got[0].support == pytest.approx(1.0, abs=1e-4)
    assert got[1].supported is False and got[1].support < 0.999
    assert got[2].supported is False
    assert (got[3].supported, got[3].citations) == (True, [2])
    assert got[3].note == "citation added by the grounding check"
    assert got[4].supported is False and "3.12" in (got[4].note or "")


@pytest.mark.slow
def test_grounding_with_the_default_embedder() -> None:
    """The real MiniLM at the default threshold: copied and paraphrased pass, fabricated fails."""
    from models.embedder import EmbedderConfig, SentenceTransformerEmbedder
    from search.summarize.grounding import GroundingSource

    emb = SentenceTransformerEmbedder(EmbedderConfig(device="cpu"))
    checker = GroundingChecker(GroundingConfig(), emb)
    sents = split_sentences(DOCS[0].body)
    src = GroundingSource.from_text(1, DOCS[0].body, sents, emb.embed(sents))
    got = checker.check(
        [
            ParsedSentence(text=COPIED, citations=[1]),
            ParsedSentence(text="A for loop goes over every item of a sequence.", citations=[1]),
            ParsedSentence(text=FABRICATED, citations=[1]),
            ParsedSentence(text="Python has 7 loop statements.", citations=[1]),
        ],
        [src],
    )
    assert [g.supported for g in got] == [True, True, False, False]


def test_grounding_with_a_cross_encoder(tmp_path: Path) -> None:
    """The cross-encoder path scores (source sentence, claim) pairs; a one-logit model gives probabilities."""
    from search.summarize.grounding import GroundingSource
    from tests.tiny_models import build_tiny_cross_encoder

    ce = build_tiny_cross_encoder(tmp_path / "ce")
    checker = GroundingChecker(
        GroundingConfig(method="cross_encoder", cross_encoder=str(ce), device="cpu", threshold=0.0), None
    )
    src = GroundingSource.from_text(1, DOCS[0].body, split_sentences(DOCS[0].body))
    got = checker.check([ParsedSentence(text=COPIED, citations=[1])], [src])
    assert 0.0 < got[0].support < 1.0 and got[0].supported
    strict = GroundingChecker(
        GroundingConfig(method="cross_encoder", cross_encoder=str(ce), device="cpu", threshold=1.0), None
    )
    assert strict.check([ParsedSentence(text=COPIED, citations=[1])], [src])[0].supported is False


# -- finishing: keep, drop, flag, fall back -------------------------------------------------------------------------
def test_finish_keeps_grounded_sentences_and_drops_the_rest(
    tiny_embedder: Any, tiny_lm: Any, tiny_lm_path: Path
) -> None:
    s = make(tiny_embedder, tiny_lm, tiny_lm_path)
    p = s.build_prompt(QUERY, DOCS)
    out = s.finish(p, f"{COPIED[:-1]} [1]. {FABRICATED} [2]. Try and except statements handle them.", reason="eos")
    assert not out.extractive
    assert [(x.text, x.citations, x.supported) for x in out.sentences] == [
        (COPIED, [1], True),
        ("Try and except statements handle them.", [2], True),
    ]
    assert [x.text for x in out.dropped] == [FABRICATED]
    assert out.text == f"{COPIED[:-1]} [1]. Try and except statements handle them [2]."
    assert [src.id for src in out.sources] == ["loops", "errors", "classes"]

    # Grounded but no gist: a result's title echoed back, a sentence said twice.
    out = s.finish(p, f"[1] Loops in Python\n[2] Errors and exceptions\n{COPIED} [1] {COPIED} [1]", reason="eos")
    assert [x.text for x in out.sentences] == [COPIED]
    assert [x.note for x in out.dropped] == [
        "restates the title of [1]",
        "restates the title of [2]",
        "repeats an earlier sentence",
    ]

    flag = make(tiny_embedder, tiny_lm, tiny_lm_path, grounding={"threshold": 0.999, "unsupported": "flag"})
    out = flag.finish(flag.build_prompt(QUERY, DOCS), f"{COPIED} [1] {FABRICATED} [2]", reason="eos")
    assert [(x.text, x.supported) for x in out.sentences] == [(COPIED, True), (FABRICATED, False)]
    assert out.dropped == []


def test_extractive_fallback_when_nothing_is_grounded(tiny_embedder: Any, tiny_lm: Any, tiny_lm_path: Path) -> None:
    s = make(tiny_embedder, tiny_lm, tiny_lm_path, fallback_sentences=2)
    p = s.build_prompt(COPIED, DOCS)
    out = s.finish(p, f"{FABRICATED} [1]. Another invented claim about 42 things [3].", reason="eos")
    assert out.extractive
    assert len(out.sentences) == 2 and len(out.dropped) == 2
    assert out.sentences[0].text == COPIED and out.sentences[0].citations == [1]  # the most query-relevant
    bodies = {i + 1: d.body for i, d in enumerate(DOCS)}
    for x in out.sentences:  # verbatim result sentences, cited, never titles
        assert x.supported and len(x.citations) == 1 and x.text in bodies[x.citations[0]]
    assert s.finish(p, "", reason="eos").extractive


# -- cache -----------------------------------------------------------------------------------------------------
def test_cache_key_and_lru() -> None:
    a = Document(id="a", title="A", body="alpha")
    b = Document(id="b", title="B", body="beta")
    assert cache_key_query("  What IS  alpha?? ") == cache_key_query("what is alpha")
    k1 = SummaryCache.key("What is alpha?", [a, b], "m")
    assert k1 == SummaryCache.key("what is  ALPHA", [a, b], "m")
    assert k1 != SummaryCache.key("what is alpha", [b, a], "m")  # order is part of the citations
    assert k1 != SummaryCache.key("what is alpha", [a.model_copy(update={"body": "changed"}), b], "m")
    assert k1 != SummaryCache.key("what is alpha", [a, b], "other-model")
    cache = SummaryCache(size=2)
    from search.summarize.schemas import Summary

    summ = Summary(
        query="q", text="", sentences=[], sources=[], extractive=True, model_id="m", stop_reason="eos", total_ms=1
    )
    cache.put(k1, summ)
    k2 = SummaryCache.key("x", [b], "m")
    cache.put(k2, summ)
    assert cache.get(k1) is summ
    assert cache.get(k2) is summ
    cache.put(SummaryCache.key("y", [b], "m"), summ)
    cache.put(SummaryCache.key("z", [b], "m"), summ)
    assert len(cache) == 2 and cache.get(k2) is None  # least recently used went first


# -- streaming through the real tiny LM --------------------------------------------------------------------------
def test_stream_tokens_then_summary_and_cache(tiny_embedder: Any, tiny_lm: Any, tiny_lm_path: Path) -> None:
    s = make(tiny_embedder, tiny_lm, tiny_lm_path, max_new_tokens=6)
    events = list(s.stream(QUERY, DOCS))
    tokens = [e for e in events if isinstance(e, TokenEvent)]
    assert tokens and isinstance(events[-1], SummaryEvent) and sum(isinstance(e, SummaryEvent) for e in events) == 1
    summ = events[-1].summary
    assert summ.generated_text == "".join(t.text for t in tokens)
    assert (summ.stop_reason, summ.generated_tokens) == ("max_new_tokens", 6)
    assert summ.extractive  # the random LM writes nothing the grounding check accepts
    assert summ.ttft_ms is not None and 0 < summ.ttft_ms <= summ.total_ms
    assert summ.prompt_tokens > 0 and not summ.cached
    again = s.summarize(" how does the FOR statement iterate over a sequence ", DOCS)
    assert again.cached and again.sentences == summ.sentences
    changed = [DOCS[0].model_copy(update={"body": DOCS[0].body + " Changed."}), *DOCS[1:]]
    assert not s.summarize(QUERY, changed).cached  # a changed document misses


def test_deadline_stops_generation(tiny_embedder: Any, tiny_lm: Any, tiny_lm_path: Path) -> None:
    s = make(tiny_embedder, tiny_lm, tiny_lm_path, max_new_tokens=5000, deadline_s=0.5)
    t = time.monotonic()
    summ = s.summarize(QUERY, DOCS)
    assert summ.stop_reason == "deadline" and 0 < summ.generated_tokens < 5000
    assert time.monotonic() - t < 30
    assert len(s.cache) == 0  # a cut-short summary is not cached


@pytest.mark.parametrize("how", ["cancel_flag", "close_generator"])
def test_cancellation_stops_generate_promptly(tiny_embedder: Any, tiny_lm: Any, tiny_lm_path: Path, how: str) -> None:
    s = make(tiny_embedder, tiny_lm, tiny_lm_path, max_new_tokens=5000, deadline_s=None)
    cancel = threading.Event()
    gen = s.stream(QUERY, DOCS, cancel=cancel)
    first = next(gen)
    assert isinstance(first, TokenEvent)
    rec = s.generations[-1]
    assert s.active_generations == 1 and not rec.finished.is_set()
    if how == "cancel_flag":
        cancel.set()
        rest = list(gen)  # at most the token in flight, never a summary
        assert not any(isinstance(e, SummaryEvent) for e in rest)
    else:
        gen.close()
    assert rec.finished.wait(timeout=20)
    assert rec.reason == "cancelled" and rec.tokens < 1000
    assert s.active_generations == 0
    assert len(s.cache) == 0


class ScriptedLM:
    """Stands in for the model in generate(): emits a fixed text token by token through the real streamer
    and stopping criteria, so the end-to-end path can be checked on text that makes sense."""

    def __init__(self, tokenizer: Any, text: str) -> None:
        self.ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        self.emitted = 0

    def generate(self, input_ids: Any, streamer: Any, stopping_criteria: Any, max_new_tokens: int, **_: Any) -> Any:
        import torch

        seq = input_ids
        streamer.put(input_ids)  # the prompt, which skip_prompt drops
        for tok in self.ids[:max_new_tokens]:
            seq = torch.cat([seq, torch.tensor([[tok]])], dim=1)
            self.emitted += 1
            streamer.put(torch.tensor([tok]))
            if bool(stopping_criteria(seq, None).all()):
                break
        streamer.end()
        return seq


def test_end_to_end_grounded_summary_stops_after_max_sentences(
    tiny_embedder: Any, tiny_lm: Any, tiny_lm_path: Path
) -> None:
    text = (
        f"{COPIED[:-1]} [1]. {FABRICATED} [2] Try and except statements handle them. "
        "Classes bundle data and functionality [3]. This fourth sentence is never generated in full."
    )
    scripted = ScriptedLM(tiny_lm[1], text)
    s = make(tiny_embedder, (scripted, tiny_lm[1], "cpu"), tiny_lm_path, max_sentences=3, max_new_tokens=500)
    events = list(s.stream(QUERY, DOCS))
    summ = events[-1].summary
    assert isinstance(events[-1], SummaryEvent)
    assert summ.stop_reason == "max_sentences" and not summ.extractive
    assert "fourth" not in summ.text and "Classes" not in summ.text
    assert [(x.text, x.citations) for x in summ.sentences] == [
        (COPIED, [1]),
        ("Try and except statements handle them.", [2]),
    ]
    assert [x.text for x in summ.dropped] == [FABRICATED]
    assert summ.text == f"{COPIED[:-1]} [1]. Try and except statements handle them [2]."
    assert scripted.emitted < len(scripted.ids)  # generation stopped once a 4th sentence began
    assert "".join(e.text for e in events if isinstance(e, TokenEvent)) == summ.generated_text
