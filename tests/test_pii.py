"""`search.pii` against the shared corpus (tests/pii_corpus.py) and generated forms, and each of its users: the
query log's scrubber (`QueryEvent`), the suggestion filter (`SafetyFilter`, `Suggester`) and the LM's training
data (`build_lm_data`). The HTTP side (/v1/suggest, /v1/related) is in tests/test_log_privacy.py."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from logs.clicklog import ClickRecord
from logs.querylog import QueryEvent
from logs.querylog import scrub_pii as querylog_scrub_pii
from search.pii import canonical, contains_pii, scrub_pii, was_scrubbed
from search.suggest.safety import SafetyFilter
from search.suggest.schemas import SuggestConfig
from search.suggest.suggester import Suggester
from tests.pii_corpus import NOT_PII, PII_FORMS
from training.lm_data import LMDataConfig, build_lm_data

FORMS = [t for t, _, _ in PII_FORMS]
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
NO_DIGITS = re.compile(r"\d")


# -- the corpus -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("text", "scrubbed", "kind"), PII_FORMS)
def test_every_form_is_detected_and_scrubbed(text: str, scrubbed: str, kind: str) -> None:
    assert contains_pii(text) == kind
    assert scrub_pii(text) == scrubbed
    assert contains_pii(scrubbed) is None and was_scrubbed(scrubbed)


@pytest.mark.parametrize("text", NOT_PII)
def test_what_is_no_personal_data_passes_unchanged(text: str) -> None:
    assert contains_pii(text) is None
    assert scrub_pii(text) == text
    assert QueryEvent(query=text).query == text
    assert SafetyFilter().allows(text)


def test_the_query_log_keeps_its_scrubber_importable() -> None:
    assert querylog_scrub_pii is scrub_pii


# -- the three users, on the corpus -----------------------------------------------------------------------------
@pytest.mark.parametrize(("text", "scrubbed", "kind"), PII_FORMS)
def test_the_query_log_stores_every_form_scrubbed(text: str, scrubbed: str, kind: str) -> None:
    ev = QueryEvent(query=text)
    assert ev.query == scrubbed
    assert QueryEvent.model_validate_json(ev.model_dump_json()).query == scrubbed  # a replayed line stays so


@pytest.mark.parametrize("text", FORMS)
def test_the_suggestion_filter_refuses_every_form(text: str) -> None:
    safety = SafetyFilter()
    assert safety.reason(text) is not None
    assert safety.reason(scrub_pii(text)) == "scrubbed"  # what the log kept is refused too
    assert safety.reason(text.lower().strip("<>")) is not None


def test_the_suggester_learns_no_form_and_the_lm_may_not_propose_one() -> None:
    s = Suggester(SuggestConfig.model_validate({"lm": {"enabled": False}, "check_results": False}))
    for i, text in enumerate(FORMS):
        for n in range(5):  # five distinct issuers each
            assert not s.record(QueryEvent(query=text, result_count=3, session_id=f"s{n}", client=f"c{n}-{i}"))
    assert len(s.prefixes) == 0
    assert all(s._checked(text, "", "related") is None for text in FORMS)  # an LM candidate: refused


def _occurrences(queries: list[str], issuers: int) -> tuple[list[QueryEvent], list[ClickRecord]]:
    """Each query searched and clicked by `issuers` distinct clients."""
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    imps, clicks = [], []
    for i, q in enumerate(queries):
        for n in range(issuers):
            qid = f"q{i}-{n}"
            ts = t0 + timedelta(minutes=i * issuers + n)
            imps.append(QueryEvent(ts=ts, query=q, result_count=1, query_id=qid, shown=["d1"], client=f"c{n}"))
            clicks.append(
                ClickRecord(
                    event_id=f"e{i}-{n}",
                    type="click",
                    event_name="click",
                    query_id=qid,
                    object_ids=["d1"],
                    ts=ts,
                    received_at=ts,
                )
            )
    return imps, clicks


def test_the_lm_training_data_holds_no_form() -> None:
    imps, clicks = _occurrences([*FORMS, "sleep apnea"], issuers=4)
    cfg = LMDataConfig(task="suggest", min_sessions=3, heldout_fraction=0.0)
    data = build_lm_data(imps, clicks, cfg)
    assert data.stats["allowed_queries"] == 1  # sleep apnea only
    texts = " ".join(e.prompt + e.completion for e in data.train)
    assert "sleep apnea" in texts and "@" not in texts and not NO_DIGITS.search(texts)
    assert "email" not in texts and "number" not in texts


# -- generated forms --------------------------------------------------------------------------------------------
WORDS = st.lists(st.text(alphabet="abcdefghijklmnopqrstuvwxyzéøß", min_size=1, max_size=8), max_size=3)
BLANK_SEPS = [" ", "\u00a0", "\u2009", "\u3000"]
MARK_SEPS = ["-", ".", "_", "/", " - ", " . ", " / ", " _ ", "—", "–", "‑", "−", "―", " — ", "·", "－", "\u200b"]
MARK_SEPS += [",", "+", ":", "*", "|", "~", "#", "\\", "()", "[]"]  # no blank beside `, + : * | ~ #`
MARK_SEPS += [" - - ", "--", " -- ", " . . ", "-/-", " / - ", "-,-", " _ - ", "- - - -", "—·—", ",-", "-:"]
# combining marks, which canonical drops after anything but a letter: grapheme joiner, acute, grave, keycap,
# variation selectors (one of the basic plane, one beyond it), a Devanagari vowel sign, a mark beyond the basic plane
DIGIT_MARKS = ["\u034f", "\u0301", "\u0300", "\u20e3", "\ufe0f", "\U000e0100", "\u093f", "\U0001d167", "\u0301\u034f"]
# digit-group shapes: phone numbers with and without area codes, local numbers, cards (13-19 digits), ids
SHAPES = [[3, 3, 4], [2, 3, 4], [3, 2, 2], [2, 2, 2, 2, 2], [3, 3, 2, 2], [4, 4, 4, 4], [4, 6, 5], [4, 4, 4, 4, 3]]
SHAPES += [[3, 4], [7], [10], [16]]


@st.composite
def phone_or_card(draw: st.DrawFn) -> str:
    shape = draw(st.sampled_from(SHAPES))
    groups = [draw(st.text(alphabet="0123456789", min_size=n, max_size=n)) for n in shape]
    # a blank-separated 3+4 ending in a year reads as "top 100 2019": only other separators make it a number
    seps = MARK_SEPS if shape == [3, 4] else MARK_SEPS + BLANK_SEPS
    out = groups[0]
    for g in groups[1:]:
        out += draw(st.sampled_from(seps)) + g
    if draw(st.booleans()):
        out = draw(st.sampled_from(["+1 ", "+44 ", "+", "+1 ("] + (["(0) "] if sum(shape) >= 9 else []))) + out
    if draw(st.booleans()):
        out = "".join(chr(ord(c) + 0xFEE0) if c.isdigit() else c for c in out)  # fullwidth digits
    if draw(st.booleans()):  # a combining mark after every `every`-th digit, or after every separator mark too
        mark, every = draw(st.sampled_from(DIGIT_MARKS)), draw(st.integers(1, 4))
        after = "0123456789０１２３４５６７８９" + ("-._/,+:*|~#" if draw(st.booleans()) else "")
        out = "".join(c + mark if c in after and i % every == 0 else c for i, c in enumerate(out))
    return out


LABEL = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=8)


@st.composite
def email(draw: st.DrawFn) -> str:
    parts = draw(st.lists(LABEL, min_size=1, max_size=3))
    local = parts[0] + "".join(draw(st.sampled_from([".", "_", "+", "-"])) + p for p in parts[1:])
    at = draw(st.sampled_from(["@", "＠", "﹫"]))
    host = draw(st.lists(LABEL, min_size=1, max_size=3))
    spaced = draw(st.booleans())
    if spaced:  # `user @ host`: the host is dotted (or the local part looks like an address's, or it is localhost)
        host = host if len(host) > 1 else [*host, "com"]
        at = draw(st.sampled_from([" ", ""])) + at + draw(st.sampled_from([" ", ""]))
    half = draw(st.sampled_from(["whole", "whole", "host", "none"]))
    if half == "host" and not spaced:
        return local + at + host[0]  # half-typed: no dot yet
    if half == "none" and not spaced:
        return local + at  # half-typed: nothing after the @ (only at the end of the text)
    return local + at + ".".join(host)


def _embedded(before: list[str], form: str, after: list[str]) -> str:
    return " ".join([*before, form, *after])


@SETTINGS
@given(WORDS, phone_or_card(), WORDS)
def test_generated_numbers_are_detected_and_scrubbed(before: list[str], form: str, after: list[str]) -> None:
    text = _embedded(before, form, after)
    assert contains_pii(text) is not None
    scrubbed = scrub_pii(text)
    assert scrubbed == _embedded(before, "<number>", after)
    assert not NO_DIGITS.search(scrubbed)


@SETTINGS
@given(WORDS, email(), WORDS)
def test_generated_emails_are_detected_and_scrubbed(before: list[str], form: str, after: list[str]) -> None:
    if canonical(form).endswith("@"):
        after = []  # a bare `name@` is an address only while it is being typed, at the end
    text = _embedded(before, form, after)
    assert contains_pii(text) == "email"
    scrubbed = scrub_pii(text)
    assert scrubbed == _embedded(before, "<email>", after)
    assert "@" not in scrubbed


PLAIN = st.text(
    alphabet=st.characters(categories=["L", "M", "Zs", "Pc", "Pd", "Po", "Ps", "Pe"], exclude_characters="@"),
    max_size=60,
)


@SETTINGS
@given(PLAIN)
def test_plain_words_without_digits_or_at_pass_unchanged(text: str) -> None:
    folded = canonical(text).lower()
    if NO_DIGITS.search(folded) or "@" in folded or "(at)" in folded or "[at]" in folded:
        return  # NFKC made a digit or an @ of it (`⑴`, `﹫`): not plain
    assert contains_pii(text) is None
    assert scrub_pii(text) == text


@SETTINGS
@given(st.text(alphabet="0123456789 -._/()[]@＠—–+,:*|~#\u00a0\u200b\u0301\u034fabcxyz.éat%·", max_size=50))
def test_the_scrubbed_text_holds_no_personal_data(text: str) -> None:
    scrubbed = scrub_pii(text)
    assert contains_pii(scrubbed) is None
    assert scrub_pii(scrubbed) == scrubbed
