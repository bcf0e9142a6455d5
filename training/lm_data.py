"""Training examples for the causal LM, learnt from what users searched and clicked.

Three tasks, each phrased exactly as the server prompts the LM (`LMCompleter._prompt`), so a tuned model is
served unchanged:

- `suggest`: a successful query (its search was followed by a click or conversion) at every prefix length,
  prompt = the completer's few-shot header and the text before the word being typed, completion = the rest of
  the query from that word on, then a newline (the server's stop token) and EOS.
- `related`: within one session, a query with no click followed by a different query that got one.
- `doc2query`: (clicked document text, query) pairs; the document text comes from the store.

Privacy comes before anything is learnt: a query is used only when at least `min_sessions` distinct issuers
issued it (`QueryEvent.issuer`: the server-known client of what the API logged, else the session id or user
token), so the model cannot memorise one person's search, and queries holding personal data (`search.pii`: the
forms the query log's scrubber replaces, and its placeholders) or blocklisted words are dropped. Impressions
with no issuer count towards none. Splits are by time or by session, never by random line: held-out
occurrences come from later times or from sessions never trained on.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from indexing.doc2query import DOC2QUERY_HEADER, DocPart, doc2query_prompt, prompt_text
from logs.clicklog import ClickRecord
from logs.querylog import QueryEvent
from search.pii import contains_pii, was_scrubbed
from search.suggest.lm_completer import LMCompleter, LMCompleterConfig
from search.suggest.safety import DEFAULT_BLOCKLIST, SafetyFilter
from search.text import normalize_query

LMTask = Literal["suggest", "related", "doc2query"]
TextFetch = Callable[[Sequence[str]], dict[str, str]]


class LMDataConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    task: LMTask = Field(default="suggest", description="suggest (prefix completion), related or doc2query.")
    min_sessions: int = Field(
        default=3,
        ge=1,
        description="A query is used only when at least this many distinct issuers issued it (the server-known "
        "client of API impressions, else session ids or user tokens).",
    )
    blocklist: list[str] = Field(
        default_factory=lambda: list(DEFAULT_BLOCKLIST), description="Words or phrases never learnt (`word*`)."
    )
    split: Literal["time", "session"] = Field(
        default="time", description="Held-out side: the latest occurrences (time) or whole sessions (session)."
    )
    heldout_fraction: float = Field(default=0.2, ge=0.0, lt=1.0, description="Share of occurrences held out.")
    min_prefix_chars: int = Field(default=1, ge=1, description="Shortest prefix turned into a suggest example.")
    suggest_examples: Literal["line", "prefixes"] = Field(
        default="line",
        description="suggest: 'line', one example per query typed up to `min_prefix_chars` (its completion is the "
        "whole line, and under the causal mask its loss holds every later word boundary's example, at 1/n of the "
        "tokens); 'prefixes', one example per word boundary (later words weigh more, n times the compute).",
    )
    max_gap_s: float = Field(
        default=1800.0, gt=0, description="related: the clicked reformulation follows within this many seconds."
    )
    doc_chars: int = Field(default=600, ge=32, description="doc2query: characters of document text in the prompt.")
    doc_part: DocPart = Field(
        default="head",
        description="doc2query: which characters, the opening (head) or the title and the end of the body "
        "(title_tail); index with the same `Doc2QueryConfig.doc_part`.",
    )
    prompt_examples: list[str] | None = Field(
        default_factory=list,
        description="Few-shot query lines of the trained task's prompt (suggest; related: any list means none), "
        "saved with the model and served with it; the other task keeps the suggester's. [] (the default): a tuned "
        "model needs no examples, and short prompts train and serve faster; None: the suggester's examples.",
    )


@dataclass(frozen=True)
class LMExample:
    """One training sequence: `header` is tokenized with special tokens and `prompt` without, as the server
    does (its header KV cache is shared); only `completion` (plus EOS) is learnt."""

    header: str
    prompt: str
    completion: str
    weight: float


@dataclass
class LMData:
    task: str
    train: list[LMExample]
    heldout: list[LMExample]
    stats: dict[str, int] = field(default_factory=dict)
    data_hash: str = ""
    prompt: dict[str, Any] = field(default_factory=dict)  # LMCompleterConfig fields the examples were built with
    config: dict[str, Any] = field(default_factory=dict)  # the LMDataConfig (split, privacy) that built them


@dataclass(frozen=True)
class _Occurrence:
    """A search impression reduced to what the examples need."""

    query: str
    session: str | None
    issuer: str | None  # what the k-sessions rule and the weights count (`QueryEvent.issuer`); `session` splits
    ts: float
    query_id: str
    clicked: tuple[str, ...]
    success: bool
    raw: str


def has_personal_data(text: str, safety: SafetyFilter) -> bool:
    """Blocklisted or personal: the suggester's filter, and the shared PII patterns and scrub placeholders (also
    where the filter's PII check is off)."""
    return bool(safety.reason(text) or contains_pii(text) or was_scrubbed(text))


def _occurrences(impressions: Iterable[QueryEvent], clicks: Iterable[ClickRecord]) -> list[_Occurrence]:
    """Search impressions (any page: a click on page 2 is a success too) joined with the clicks and conversions
    that name their query id."""
    acted: dict[str, list[str]] = defaultdict(list)
    for c in clicks:
        if c.type in ("click", "conversion") and c.source == "search" and not c.flagged:  # flagged: past a click cap
            acted[c.query_id].extend(c.object_ids)
    out = []
    for imp in impressions:
        q = normalize_query(imp.query)
        if imp.type != "search" or not q or not imp.query_id:
            continue
        docs = tuple(dict.fromkeys(acted.get(imp.query_id, [])))
        session = imp.session_id or imp.user_token
        out.append(_Occurrence(q, session, imp.issuer, imp.ts.timestamp(), imp.query_id, docs, bool(docs), imp.query))
    return out


def allowed_queries(occs: Sequence[_Occurrence], cfg: LMDataConfig) -> set[str]:
    """Queries issued by at least `min_sessions` distinct issuers and free of personal or blocked text (checked
    on the text as logged too: normalisation must not hide a placeholder or a number's separators)."""
    sessions: dict[str, set[str]] = defaultdict(set)
    safety = SafetyFilter(cfg.blocklist)
    banned: set[str] = set()
    for o in occs:
        if o.issuer is not None:
            sessions[o.query].add(o.issuer)
        if o.query not in banned and (has_personal_data(o.raw, safety) or has_personal_data(o.query, safety)):
            banned.add(o.query)
    return {q for q, s in sessions.items() if len(s) >= cfg.min_sessions and q not in banned}


def _heldout_flags(occs: Sequence[_Occurrence], cfg: LMDataConfig) -> list[bool]:
    """True for held-out occurrences: the latest `heldout_fraction` by time, or whole sessions by hash."""
    if cfg.heldout_fraction <= 0 or not occs:
        return [False] * len(occs)
    if cfg.split == "time":
        # by rank in (time, query id) order: ties in time cannot push everything to one side
        order = sorted(range(len(occs)), key=lambda i: (occs[i].ts, occs[i].query_id))
        first_held = len(occs) - max(1, round(len(occs) * cfg.heldout_fraction))
        flags = [False] * len(occs)
        for i in order[first_held:]:
            flags[i] = True
        return flags

    def side(key: str) -> bool:
        h = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big")
        return h / 2**64 < cfg.heldout_fraction

    return [side(o.session or o.query_id) for o in occs]


def suggest_examples(
    query: str, weight: float, completer: LMCompleter, min_chars: int = 1, every: bool = True
) -> list[LMExample]:
    """The query typed up to every length (`every`; else only the shortest), each completed to the whole query in
    the server's prompt format.

    The server's prompt stops before the word being typed (the generation re-types it), so every prefix of
    one word gives the same example: kept once, one example per word boundary."""
    out: dict[tuple[str, str], LMExample] = {}
    last = len(query) if every else min(min_chars, len(query))
    for i in range(min_chars, last + 1):
        header, tail, heal, context = completer._prompt(query[:i], "complete")
        rest = query[len(context.strip()) :].lstrip() if context else query
        completion = " " + rest + "\n"
        if not completion.startswith(heal) or (tail, completion) in out:
            continue  # the first cannot happen for normalised queries: it guards the forced-prefix contract
        out[(tail, completion)] = LMExample(header, tail, completion, weight)
    return list(out.values())


def _suggest(occs: Sequence[_Occurrence], allowed: set[str]) -> dict[str, set[str]]:
    """query → distinct issuers of its successful searches (the example weight)."""
    by_query: dict[str, set[str]] = defaultdict(set)
    for o in occs:
        if o.success and o.query in allowed and o.issuer is not None:
            by_query[o.query].add(o.issuer)
    return by_query


def _related(occs: Sequence[_Occurrence], allowed: set[str], cfg: LMDataConfig) -> dict[str, set[str]]:
    """(failed query, clicked reformulation) → distinct sessions that made that move."""
    by_session: dict[str, list[_Occurrence]] = defaultdict(list)
    for o in occs:
        if o.session is not None:
            by_session[o.session].append(o)
    pairs: dict[str, set[str]] = defaultdict(set)
    for session, seq in by_session.items():
        seq.sort(key=lambda o: o.ts)
        for a, b in pairwise(seq):
            if a.success or not b.success or a.query == b.query or b.ts - a.ts > cfg.max_gap_s:
                continue
            if a.query in allowed and b.query in allowed:
                pairs[json.dumps([a.query, b.query])].add(session)
    return pairs


def _doc_pairs(occs: Sequence[_Occurrence], allowed: set[str]) -> dict[str, set[str]]:
    """(query, clicked doc id) → distinct issuers that clicked it."""
    pairs: dict[str, set[str]] = defaultdict(set)
    for o in occs:
        if o.query in allowed and o.issuer is not None:
            for d in o.clicked:
                pairs[json.dumps([o.query, d])].add(o.issuer)
    return pairs


def _examples(
    keyed: dict[str, set[str]], cfg: LMDataConfig, completer: LMCompleter, texts: dict[str, str]
) -> list[LMExample]:
    """Examples in the server's prompt format from aggregated (key → sessions); sorted keys: a stable order."""
    out: list[LMExample] = []
    for key in sorted(keyed):
        weight = float(len(keyed[key]))
        if cfg.task == "suggest":
            every = cfg.suggest_examples == "prefixes"
            out.extend(suggest_examples(key, weight, completer, cfg.min_prefix_chars, every=every))
        elif cfg.task == "related":
            a, b = json.loads(key)
            header, tail, heal, _ = completer._prompt(a, "related")
            out.append(LMExample(header, tail, heal + b + "\n", weight))
        else:
            q, doc = json.loads(key)
            if doc in texts:
                title, _, body = texts[doc].partition("\n")  # the title on one line (training.lm_run.doc_fetch)
                text = prompt_text(title, body, cfg.doc_chars, cfg.doc_part)
                out.append(LMExample(DOC2QUERY_HEADER, doc2query_prompt(text), " " + q + "\n", weight))
    return out


def build_lm_data(
    impressions: Iterable[QueryEvent],
    clicks: Iterable[ClickRecord],
    cfg: LMDataConfig | None = None,
    fetch: TextFetch | None = None,
    completer: LMCompleterConfig | None = None,
) -> LMData:
    """Train and held-out examples for `cfg.task`; `fetch` (doc id → text) is needed for doc2query.

    `completer` is the suggester's LM config: its few-shot examples are part of the prompt being learnt."""
    cfg = cfg or LMDataConfig()
    if cfg.task == "doc2query" and fetch is None:
        raise ValueError("doc2query needs the documents' texts (a store to read them from)")
    lm_cfg = completer or LMCompleterConfig()
    prompt: dict[str, Any] = {"examples": lm_cfg.examples, "related_examples": lm_cfg.related_examples}
    # only the trained task's few-shot lines change: a suggest-tuned model still writes related searches from the
    # configured pairs (without them, it lost half its related-search success on Cranfield)
    if cfg.prompt_examples is not None and cfg.task == "suggest":
        prompt["examples"] = list(cfg.prompt_examples)
    elif cfg.prompt_examples is not None and cfg.task == "related":
        prompt["related_examples"] = []
    lm = LMCompleter(lm_cfg.model_copy(update=prompt))  # only its prompt builder: no model is loaded
    occs = _occurrences(impressions, clicks)
    allowed = allowed_queries(occs, cfg)
    flags = _heldout_flags(occs, cfg)
    sides: dict[bool, list[_Occurrence]] = {False: [], True: []}
    for o, held in zip(occs, flags, strict=True):
        sides[held].append(o)
    texts: dict[str, str] = {}
    if cfg.task == "doc2query" and fetch is not None:
        docs = {json.loads(k)[1] for k in _doc_pairs(occs, allowed)}
        texts = fetch(sorted(docs))
    out: dict[bool, list[LMExample]] = {}
    for held, side_occs in sides.items():
        if cfg.task == "suggest":
            keyed = _suggest(side_occs, allowed)
        elif cfg.task == "related":
            keyed = _related(side_occs, allowed, cfg)
        else:
            keyed = _doc_pairs([o for o in side_occs if o.success], allowed)
        out[held] = _examples(keyed, cfg, lm, texts)
    stats = {
        "impressions": len(occs),
        "successful": sum(o.success for o in occs),
        "queries": len({o.query for o in occs}),
        "allowed_queries": len(allowed),
        "train_examples": len(out[False]),
        "heldout_examples": len(out[True]),
    }
    data = LMData(cfg.task, out[False], out[True], stats, prompt=prompt, config=cfg.model_dump(mode="json"))
    data.data_hash = lm_data_hash(data)
    return data


def lm_data_hash(data: LMData) -> str:
    """sha256 of every example on both sides: same log and settings, same hash."""
    h = hashlib.sha256(data.task.encode())
    for side, examples in (("train", data.train), ("heldout", data.heldout)):
        for e in examples:
            h.update(json.dumps([side, e.header, e.prompt, e.completion, e.weight]).encode())
    return h.hexdigest()


def split_queries(
    impressions: Iterable[QueryEvent], clicks: Iterable[ClickRecord], cfg: LMDataConfig
) -> tuple[list[str], list[str]]:
    """(train-side, held-out-side) successful queries that pass the privacy rules, distinct and sorted: what the
    LM gate types prefixes of (held-out) and what counts as already logged (train)."""
    occs = _occurrences(impressions, clicks)
    allowed = allowed_queries(occs, cfg)
    sides: dict[bool, set[str]] = {False: set(), True: set()}
    for o, held in zip(occs, _heldout_flags(occs, cfg), strict=True):
        if o.success and o.query in allowed:
            sides[held].add(o.query)
    return sorted(sides[False]), sorted(sides[True])
