"""Result summaries: a small causal LM writes a cited overview of the top results, streamed token by token.

The prompt holds only the most query-relevant sentences of each result (chosen with the embedder) within
a token budget measured with the LM's own tokenizer, so the prompt stays short and the first token comes
quickly on a CPU. The finished text is split into sentences, each checked against the results it cites
(`search.summarize.grounding`); if none survives, the summary falls back to the most query-relevant sentences of
the results themselves, cited. Summaries are cached by (normalized query, result ids and content hashes,
model id), so a changed document misses the cache.
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
import unicodedata
from collections import OrderedDict, deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from models.causal_lm import LMConfig, load_lm
from models.embedder import Embedder
from search.documents import Document
from search.summarize.grounding import (
    GroundingChecker,
    GroundingConfig,
    GroundingSource,
    ParsedSentence,
    content_terms,
    parse_citations,
    split_sentences,
)

StopReason = Literal["eos", "max_sentences", "max_new_tokens", "deadline", "cancelled"]

DEFAULT_USER_TEMPLATE = "Question: {query}\n\nSources:\n{sources}\n\nSummary:"
DEFAULT_SYSTEM_PROMPT = (
    "You summarize search results for a question. Use only facts stated in the sources. Write one short "
    "paragraph of 2 or 3 sentences, not a list. End every sentence with the number of its source in brackets, "
    "like [1]."
)


class SummarizerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    lm: LMConfig = Field(default_factory=LMConfig, description="The causal LM (any HF model with a chat template).")
    top_k: int = Field(default=5, ge=1, le=20, description="Results summarized.")
    source_token_budget: int = Field(
        default=160,
        ge=16,
        le=8192,
        description="LM tokens of source text in the prompt (titles and selected sentences); TTFT grows with it.",
    )
    max_sentences_per_source: int = Field(default=2, ge=1, le=20, description="Selected sentences per result.")
    max_sentence_tokens: int = Field(default=48, ge=8, description="Longer selected sentences are cut to this.")
    max_title_tokens: int = Field(default=12, ge=0, description="Titles are cut to this many tokens (0: no titles).")
    max_query_tokens: int = Field(default=64, ge=4, description="The query is cut to this many tokens.")
    max_source_sentences: int = Field(
        default=48, ge=1, description="Sentences of a result considered for selection and grounding."
    )
    candidates_per_source: int | None = Field(
        default=4,
        ge=1,
        description="Body sentences per result, those sharing the most words with the query, that the embedder "
        "scores before generation (the rest are embedded afterwards, for grounding); None scores all.",
    )
    max_new_tokens: int = Field(default=96, ge=1, le=8192, description="Cap on generated tokens.")
    max_sentences: int | None = Field(
        default=3,
        ge=1,
        le=50,
        description="Stop once this many sentences are written (small LMs ramble); None: no cap.",
    )
    deadline_s: float | None = Field(default=20.0, gt=0, description="Wall-clock cap on generation; None: no cap.")
    repetition_penalty: float = Field(
        default=1.0,
        ge=1.0,
        le=2.0,
        description="transformers' repetition penalty. It counts the prompt too, so above 1 it steers the LM away "
        "from the sources' words.",
    )
    copy_bias: float = Field(
        default=1.0,
        ge=0.0,
        le=20.0,
        description="Added to the logits of tokens that occur in the sources: nudges a small LM to copy rather than "
        "invent (0 disables).",
    )
    system_prompt: str = Field(default=DEFAULT_SYSTEM_PROMPT, description="Instructions to the LM.")
    user_template: str = Field(
        default=DEFAULT_USER_TEMPLATE, description="The user turn; {query} and {sources} are filled in."
    )
    grounding: GroundingConfig = Field(default_factory=GroundingConfig)
    drop_title_restatements: bool = Field(
        default=True, description="Drop generated sentences that only restate a result's title (not a summary)."
    )
    fallback_sentences: int = Field(default=3, ge=1, le=20, description="Sentences of the extractive fallback.")
    cache_size: int = Field(default=512, ge=0, description="Summaries kept in memory (0 disables the cache).")
    cache_sentence_vectors: bool = Field(
        default=True,
        description="Servers keep sentence vectors in the embedding cache (SQLite under the cache dir): a result "
        "summarized before costs no encoder time before the first token.",
    )


# -- typed results ------------------------------------------------------------------------------------------
class SummarySentence(BaseModel):
    text: str = Field(description="The sentence, citation markers removed.")
    citations: list[int] = Field(description="1-based numbers of the results it rests on (see Summary.sources).")
    supported: bool = Field(description="Whether it passed the grounding check.")
    support: float = Field(description="Best similarity to a sentence of a cited result (1.0 when copied).")
    coverage: float = Field(default=1.0, description="Share of its content words found in the cited results.")
    citation_added: bool = Field(default=False, description="The LM gave no citation; the check attributed it.")
    note: str | None = Field(default=None, description="Why it failed, or what the check changed.")


class SummarySource(BaseModel):
    n: int = Field(description="Citation number.")
    id: str
    title: str
    url: str | None = None
    content_hash: str


class Summary(BaseModel):
    query: str
    text: str = Field(description="The overview as shown: kept sentences with their [n] citations.")
    sentences: list[SummarySentence]
    dropped: list[SummarySentence] = Field(
        default_factory=list, description="Generated sentences that failed the grounding check and were left out."
    )
    sources: list[SummarySource]
    extractive: bool = Field(description="True when no generated sentence survived and result sentences are shown.")
    cached: bool = False
    model_id: str
    stop_reason: StopReason
    generated_text: str = Field(default="", description="The LM's raw output, for inspection.")
    prompt_tokens: int = 0
    generated_tokens: int = 0
    prompt_ms: float = Field(default=0.0, description="Building the prompt: sentence split, embedding, selection.")
    ttft_ms: float | None = Field(default=None, description="Call start to first streamed text.")
    total_ms: float


@dataclass
class TokenEvent:
    """A piece of generated text, as it comes."""

    text: str


@dataclass
class SummaryEvent:
    """The checked summary; always the last event of a stream that was not cancelled."""

    summary: Summary


StreamEvent = TokenEvent | SummaryEvent


# -- prompt ------------------------------------------------------------------------------------------------
@dataclass
class Source:
    """One result as the summarizer sees it: all its sentences (for grounding) and the ones in the prompt."""

    n: int
    doc: Document
    sentences: list[str]  # the title first (when there is one), then the body's sentences
    vectors: np.ndarray  # one per sentence once embed_sources() ran
    scores: np.ndarray  # similarity of each candidate sentence to the query; -inf for the others
    known: dict[int, np.ndarray] = field(default_factory=dict)  # vectors computed so far
    selected: list[int] = field(default_factory=list)  # indices into sentences, document order
    block: str = ""
    tokens: int = 0

    def ranked(self) -> list[int]:
        """Candidate body sentences, most query-relevant first."""
        order = np.argsort(-self.scores, kind="stable")
        return [int(j) for j in order if np.isfinite(self.scores[j]) and not (j == 0 and self.doc.title.strip())]

    def grounding(self) -> GroundingSource:
        return GroundingSource.from_text(self.n, f"{self.doc.title}\n{self.doc.body}", self.sentences, self.vectors)


@dataclass
class SummaryPrompt:
    query: str
    messages: list[dict[str, str]]
    sources: list[Source]
    source_tokens: int  # sum of the source blocks' token counts, ≤ the budget


def normalize_query(query: str) -> str:
    q = unicodedata.normalize("NFKC", query).casefold()
    return " ".join(re.sub(r"[^\w\s]", " ", q).split())


# -- cache -------------------------------------------------------------------------------------------------
CacheKey = tuple[str, tuple[tuple[str, str], ...], str]


class SummaryCache:
    """LRU of summaries keyed by (normalized query, ((id, content hash), ...), model id); thread-safe.

    A document that changes gets a new content hash, so its old summaries are never served again;
    `invalidate(ids)` also evicts them at once (call it when indexing reports changed or deleted ids).
    """

    def __init__(self, size: int = 512) -> None:
        self.size = size
        self._items: OrderedDict[CacheKey, Summary] = OrderedDict()
        self._by_doc: dict[str, set[CacheKey]] = {}
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(query: str, docs: Sequence[Document], model_id: str) -> CacheKey:
        return normalize_query(query), tuple((d.id, d.content_hash()) for d in docs), model_id

    def get(self, key: CacheKey) -> Summary | None:
        with self._lock:
            s = self._items.get(key)
            if s is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return s

    def put(self, key: CacheKey, summary: Summary) -> None:
        if self.size <= 0:
            return
        with self._lock:
            self._items[key] = summary
            self._items.move_to_end(key)
            for doc_id, _ in key[1]:
                self._by_doc.setdefault(doc_id, set()).add(key)
            while len(self._items) > self.size:
                old, _ = self._items.popitem(last=False)
                self._forget(old)

    def invalidate(self, ids: Sequence[str]) -> int:
        """Evict every summary that used one of these documents; returns how many."""
        n = 0
        with self._lock:
            for doc_id in ids:
                for key in list(self._by_doc.get(doc_id, ())):
                    if self._items.pop(key, None) is not None:
                        n += 1
                    self._forget(key)
        return n

    def _forget(self, key: CacheKey) -> None:
        for doc_id, _ in key[1]:
            keys = self._by_doc.get(doc_id)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._by_doc[doc_id]

    def __len__(self) -> int:
        return len(self._items)


# -- generation bookkeeping ----------------------------------------------------------------------------------
@dataclass
class GenerationRecord:
    """One generate() call, observable from other threads (tests, /stats): tokens so far and why it stopped."""

    max_new_tokens: int
    prompt_tokens: int = 0
    tokens: int = 0
    reason: StopReason | None = None
    enough: threading.Event = field(default_factory=threading.Event)  # the reader has all the sentences it wants
    started: float = field(default_factory=time.monotonic)
    ended: float | None = None
    finished: threading.Event = field(default_factory=threading.Event)


def _copy_bias(token_ids: Sequence[int], bias: float) -> Any:
    import torch
    from transformers import LogitsProcessor

    ids = torch.tensor(sorted(set(token_ids)), dtype=torch.long)

    class _CopyBias(LogitsProcessor):
        def __call__(self, input_ids: Any, scores: Any) -> Any:
            scores = scores.clone()
            scores[:, ids.to(scores.device)] += bias
            return scores

    return _CopyBias()


def _stopping_criteria(
    prompt_len: int,
    cancel: threading.Event,
    deadline: float | None,
    rec: GenerationRecord,
    tokenizer: Any,
    max_sentences: int | None,
) -> Any:
    import torch
    from transformers import StoppingCriteria

    class _Stop(StoppingCriteria):
        """Called after every token: counts it; stops on cancellation, past the deadline, or once a sentence
        beyond max_sentences has begun (checked here, in the generating thread, so it never lags)."""

        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            rec.tokens = int(input_ids.shape[1]) - prompt_len
            if max_sentences and not rec.enough.is_set():
                text = tokenizer.decode(input_ids[0, prompt_len:], skip_special_tokens=True)
                if len(parse_citations(text)) > max_sentences:
                    rec.enough.set()
            stop = cancel.is_set() or rec.enough.is_set() or (deadline is not None and time.monotonic() >= deadline)
            return torch.full((input_ids.shape[0],), stop, dtype=torch.bool, device=input_ids.device)

    return _Stop()


# -- the summarizer ------------------------------------------------------------------------------------------
class Summarizer:
    """Prompt building, streamed generation, grounding and fallback. Light init; warm_up() loads the LM."""

    def __init__(
        self,
        config: SummarizerConfig | None,
        embedder: Embedder,
        *,
        lm: tuple[Any, Any, str] | None = None,
        cache: SummaryCache | None = None,
    ) -> None:
        self.config = config or SummarizerConfig()
        self.embedder = embedder
        self.grounding = GroundingChecker(self.config.grounding, embedder)
        self.cache = cache if cache is not None else SummaryCache(self.config.cache_size)
        self._lm = lm
        self._lock = threading.Lock()
        self.generations: deque[GenerationRecord] = deque(maxlen=64)

    # -- lifecycle
    def warm_up(self) -> None:
        with self._lock:
            if self._lm is None:
                self._lm = load_lm(self.config.lm)
        self.embedder.warm_up()
        self.grounding.warm_up()

    @property
    def model(self) -> Any:
        self.warm_up()
        assert self._lm is not None
        return self._lm[0]

    @property
    def tokenizer(self) -> Any:
        self.warm_up()
        assert self._lm is not None
        return self._lm[1]

    @property
    def model_id(self) -> str:
        """LM plus every setting that changes the output, so a config change misses the cache."""
        c = self.config
        knobs = c.model_dump_json(exclude={"cache_size", "deadline_s", "lm"})
        return f"{c.lm.model}#{hashlib.sha256(knobs.encode()).hexdigest()[:12]}"

    @property
    def active_generations(self) -> int:
        return sum(1 for r in list(self.generations) if not r.finished.is_set())

    # -- prompt
    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _truncate(self, text: str, max_tokens: int) -> str:
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) <= max_tokens:
            return text
        return str(self.tokenizer.decode(ids[:max_tokens], skip_special_tokens=True)).rstrip() + "…"

    def sources(self, query: str, docs: Sequence[Document]) -> list[Source]:
        """Split each result into sentences and score its candidates against the query (one embedder call).

        Candidates are the body sentences sharing the most words with the query; embedding only those keeps
        the work before the first token small. The rest are embedded after generation, for grounding.
        """
        cfg = self.config
        qterms = set(content_terms(query))
        out: list[Source] = []
        todo: list[tuple[Source, int]] = []
        for n, d in enumerate(docs[: cfg.top_k], start=1):
            sents = split_sentences(d.body)[: cfg.max_source_sentences]
            first = 0
            if d.title.strip():
                sents, first = [d.title.strip(), *sents], 1
            body = list(range(first, len(sents)))
            if cfg.candidates_per_source is not None and len(body) > cfg.candidates_per_source:
                overlap = {j: len(qterms.intersection(content_terms(sents[j]))) for j in body}
                body = sorted(sorted(body, key=lambda j: -overlap[j])[: cfg.candidates_per_source])
            src = Source(
                n=n,
                doc=d,
                sentences=sents,
                vectors=np.zeros((0, 0), dtype=np.float32),
                scores=np.full(len(sents), -np.inf, dtype=np.float32),
            )
            out.append(src)
            todo.extend((src, j) for j in body)
        vecs = self.embedder.embed([query, *(src.sentences[j] for src, j in todo)])
        qv = vecs[0]
        for (src, j), v in zip(todo, vecs[1:], strict=True):
            src.scores[j] = float(v @ qv)
            src.known[j] = v
        return out

    def embed_sources(self, sources: Sequence[Source]) -> None:
        """Vectors for every sentence of every source (grounding needs them all); reuses the candidates'."""
        missing = [(s, j) for s in sources for j in range(len(s.sentences)) if j not in s.known]
        if missing:
            vecs = self.embedder.embed([s.sentences[j] for s, j in missing])
            for (s, j), v in zip(missing, vecs, strict=True):
                s.known[j] = v
        for s in sources:
            if s.sentences and s.vectors.shape[0] != len(s.sentences):
                s.vectors = np.vstack([s.known[j] for j in range(len(s.sentences))]).astype(np.float32)

    def build_prompt(self, query: str, docs: Sequence[Document]) -> SummaryPrompt:
        """Numbered sources [1]..[k] holding each result's best sentences, all within the token budget."""
        cfg = self.config
        query = self._truncate(" ".join(query.split()), cfg.max_query_tokens)
        sources = self.sources(query, docs)
        budget = cfg.source_token_budget
        heads: dict[int, str] = {}
        used = 0
        kept: list[Source] = []
        for src in sources:  # every source gets its header first, in rank order, while the budget lasts
            title = self._truncate(src.doc.title.strip(), cfg.max_title_tokens) if cfg.max_title_tokens else ""
            head = f"[{src.n}] {title}".rstrip()
            t = self.count_tokens(head)
            if used + t > budget:
                break
            heads[src.n], src.block, src.tokens = head, head, t
            used += t
            kept.append(src)
        ranked = {s.n: s.ranked() for s in kept}
        texts: dict[int, dict[int, str]] = {s.n: {} for s in kept}
        for r in range(cfg.max_sentences_per_source):  # round robin: each source's r-th best sentence
            for src in kept:
                if r >= len(ranked[src.n]):
                    continue
                j = ranked[src.n][r]
                sent = self._truncate(src.sentences[j], cfg.max_sentence_tokens)
                chosen = {**texts[src.n], j: sent}
                block = heads[src.n] + "\n" + " ".join(chosen[k] for k in sorted(chosen))
                t = self.count_tokens(block)
                if used - src.tokens + t > budget:
                    continue
                texts[src.n] = chosen
                used += t - src.tokens
                src.block, src.tokens, src.selected = block, t, sorted(chosen)
        user = cfg.user_template.format(query=query, sources="\n\n".join(s.block for s in kept))
        messages = [{"role": "system", "content": cfg.system_prompt}, {"role": "user", "content": user}]
        return SummaryPrompt(query=query, messages=messages, sources=sources, source_tokens=used)

    def encode_prompt(self, prompt: SummaryPrompt) -> Any:
        tok = self.tokenizer
        try:
            return tok.apply_chat_template(
                prompt.messages, add_generation_prompt=True, return_dict=True, return_tensors="pt"
            )
        except Exception:  # templates without a system role: fold the instructions into the user turn
            merged = [
                {"role": "user", "content": prompt.messages[0]["content"] + "\n\n" + prompt.messages[1]["content"]}
            ]
            return tok.apply_chat_template(merged, add_generation_prompt=True, return_dict=True, return_tensors="pt")

    # -- generation
    def generate_stream(
        self,
        prompt: SummaryPrompt,
        *,
        max_new_tokens: int | None = None,
        cancel: threading.Event | None = None,
        deadline_s: float | None = None,
    ) -> tuple[Iterator[str], GenerationRecord]:
        """Start generate() in a thread; returns the text iterator and the live record."""
        from transformers import LogitsProcessorList, StoppingCriteriaList, TextIteratorStreamer

        cfg = self.config
        cap = min(max_new_tokens or cfg.max_new_tokens, cfg.max_new_tokens)
        cancel = cancel or threading.Event()
        enc = self.encode_prompt(prompt)
        device = self._lm[2] if self._lm else "cpu"
        enc = {k: v.to(device) for k, v in enc.items()}
        prompt_len = int(enc["input_ids"].shape[1])
        rec = GenerationRecord(max_new_tokens=cap, prompt_tokens=prompt_len)
        deadline = time.monotonic() + deadline_s if deadline_s else None
        tok = self.tokenizer
        streamer = TextIteratorStreamer(tok, skip_prompt=True, skip_special_tokens=True)
        kwargs = {
            **enc,
            "streamer": streamer,
            "max_new_tokens": cap,
            "do_sample": False,
            "repetition_penalty": cfg.repetition_penalty,
            "stopping_criteria": StoppingCriteriaList(
                [_stopping_criteria(prompt_len, cancel, deadline, rec, tok, cfg.max_sentences)]
            ),
            "pad_token_id": tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id,
        }
        if cfg.copy_bias:
            ids = tok("\n".join(s.block for s in prompt.sources if s.block), add_special_tokens=False)["input_ids"]
            kwargs["logits_processor"] = LogitsProcessorList([_copy_bias(ids, cfg.copy_bias)])
        self.generations.append(rec)

        def run() -> None:
            import torch

            failed = False
            try:
                with torch.inference_mode():
                    out = self.model.generate(**kwargs)
                rec.tokens = int(out.shape[1]) - prompt_len
            except BaseException:
                failed = True
                raise
            finally:
                if failed:
                    streamer.end()
                if cancel.is_set():
                    rec.reason = "cancelled"
                elif rec.enough.is_set():
                    rec.reason = "max_sentences"
                elif deadline is not None and time.monotonic() >= deadline:
                    rec.reason = "deadline"
                elif rec.tokens >= cap:
                    rec.reason = "max_new_tokens"
                else:
                    rec.reason = "eos"
                rec.ended = time.monotonic()
                rec.finished.set()

        threading.Thread(target=run, name="sift-summarize", daemon=True).start()
        return iter(streamer), rec

    def stream(
        self,
        query: str,
        docs: Sequence[Document],
        *,
        max_new_tokens: int | None = None,
        cancel: threading.Event | None = None,
        use_cache: bool = True,
    ) -> Iterator[StreamEvent]:
        """Token events as generated, then one SummaryEvent. Stops (without a summary) once `cancel` is set."""
        t0 = time.perf_counter()
        cancel = cancel or threading.Event()
        docs = list(docs)[: self.config.top_k]
        if not docs:
            raise ValueError("no results to summarize")
        cap = min(max_new_tokens or self.config.max_new_tokens, self.config.max_new_tokens)
        key = SummaryCache.key(query, docs, f"{self.model_id}/{cap}")
        if use_cache:
            hit = self.cache.get(key)
            if hit is not None:
                ms = round((time.perf_counter() - t0) * 1000, 2)
                yield TokenEvent(hit.text)
                yield SummaryEvent(hit.model_copy(update={"cached": True, "ttft_ms": ms, "total_ms": ms}))
                return
        self.warm_up()
        prompt = self.build_prompt(query, docs)
        prompt_ms = (time.perf_counter() - t0) * 1000
        if cancel.is_set():
            return
        chunks, rec = self.generate_stream(prompt, max_new_tokens=cap, cancel=cancel, deadline_s=self.config.deadline_s)
        pieces: list[str] = []
        ttft: float | None = None
        completed = False
        try:
            for chunk in chunks:
                if not chunk:
                    continue
                if ttft is None:
                    ttft = (time.perf_counter() - t0) * 1000
                pieces.append(chunk)
                yield TokenEvent(chunk)
                if cancel.is_set():
                    break
            completed = True
        finally:
            if not completed:  # the consumer went away (generator closed, exception): stop generating too
                cancel.set()
        if cancel.is_set():
            return
        rec.finished.wait()
        summary = self.finish(
            prompt,
            "".join(pieces),
            reason=rec.reason or "eos",
            prompt_tokens=rec.prompt_tokens,
            generated_tokens=rec.tokens,
            ttft_ms=ttft,
            started=t0,
        )
        summary.prompt_ms = round(prompt_ms, 2)
        if use_cache and summary.stop_reason in ("eos", "max_sentences", "max_new_tokens"):
            self.cache.put(key, summary)
        yield SummaryEvent(summary)

    def summarize(self, query: str, docs: Sequence[Document], *, max_new_tokens: int | None = None) -> Summary:
        """The whole stream, returned at once."""
        for ev in self.stream(query, docs, max_new_tokens=max_new_tokens):
            if isinstance(ev, SummaryEvent):
                return ev.summary
        raise RuntimeError("summary stream ended without a summary")

    # -- checking
    def finish(
        self,
        prompt: SummaryPrompt,
        text: str,
        *,
        reason: StopReason,
        prompt_tokens: int = 0,
        generated_tokens: int = 0,
        ttft_ms: float | None = None,
        started: float | None = None,
    ) -> Summary:
        """Parse citations, check grounding, fall back to extractive if nothing survives."""
        sources = prompt.sources
        parsed = parse_citations(text, len(sources), complete=reason == "eos")
        if parsed:
            self.embed_sources(sources)
        if reason == "max_sentences" and self.config.max_sentences:
            parsed = parsed[: self.config.max_sentences]
        checked = self.grounding.check(parsed, [s.grounding() for s in sources])
        verdicts = [SummarySentence.model_validate(c.model_dump()) for c in checked]
        keep_flagged = self.config.grounding.unsupported == "flag"
        kept: list[SummarySentence] = []
        dropped: list[SummarySentence] = []
        for v in verdicts:
            useless = self._useless(v, sources, kept)
            if useless:
                v.note = f"{v.note}; {useless}" if v.note else useless
                dropped.append(v)
            elif v.supported or keep_flagged:
                kept.append(v)
            else:
                dropped.append(v)
        extractive = not any(v.supported for v in kept)
        if extractive:
            dropped = verdicts
            kept = self.extractive(sources)
        total = (time.perf_counter() - started) * 1000 if started is not None else 0.0
        return Summary(
            query=prompt.query,
            text=render(kept),
            sentences=kept,
            dropped=dropped,
            sources=[
                SummarySource(n=s.n, id=s.doc.id, title=s.doc.title, url=s.doc.url, content_hash=s.doc.content_hash())
                for s in sources
            ],
            extractive=extractive,
            model_id=self.model_id,
            stop_reason=reason,
            generated_text=text,
            prompt_tokens=prompt_tokens,
            generated_tokens=generated_tokens,
            ttft_ms=round(ttft_ms, 2) if ttft_ms is not None else None,
            total_ms=round(total, 2),
        )

    def _useless(self, v: SummarySentence, sources: Sequence[Source], kept: Sequence[SummarySentence]) -> str | None:
        """Grounded but no gist: a repeat of a kept sentence, or a restated result title (small LMs echo them)."""
        norm = normalize_query(v.text)
        if any(normalize_query(k.text) == norm for k in kept):
            return "repeats an earlier sentence"
        if self.config.drop_title_restatements:
            terms = content_terms(v.text)
            for src in sources:
                title = set(content_terms(src.doc.title))
                if len(title) >= 2 and terms and sum(t in title for t in terms) / len(terms) >= 0.8:
                    return f"restates the title of [{src.n}]"
        return None

    def extractive(self, sources: Sequence[Source]) -> list[SummarySentence]:
        """The most query-relevant body sentences, at most one per result per round, each cited."""
        n = self.config.fallback_sentences
        ranked = {s.n: s.ranked() for s in sources}
        picks: list[tuple[float, Source, int]] = []
        r = 0
        while len(picks) < n and any(r < len(v) for v in ranked.values()):
            round_ = [(float(s.scores[ranked[s.n][r]]), s, ranked[s.n][r]) for s in sources if r < len(ranked[s.n])]
            round_.sort(key=lambda x: -x[0])
            picks.extend(round_[: n - len(picks)])
            r += 1
        picks.sort(key=lambda x: -x[0])
        return [
            SummarySentence(text=s.sentences[j], citations=[s.n], supported=True, support=1.0, note="extractive")
            for _, s, j in picks
        ]


def render(sentences: Sequence[SummarySentence]) -> str:
    """`Sentence text [1][3].` — citations before the end punctuation."""
    out = []
    for s in sentences:
        text = s.text.rstrip()
        end = ""
        if text and text[-1] in ".!?":
            text, end = text[:-1].rstrip(), text[-1]
        cites = "".join(f"[{n}]" for n in s.citations)
        out.append(f"{text} {cites}{end or '.'}".replace("  ", " ") if cites else f"{text}{end}")
    return " ".join(out)


__all__ = [
    "GroundingConfig",
    "ParsedSentence",
    "Source",
    "StreamEvent",
    "Summarizer",
    "SummarizerConfig",
    "Summary",
    "SummaryCache",
    "SummaryEvent",
    "SummaryPrompt",
    "SummarySentence",
    "SummarySource",
    "TokenEvent",
    "normalize_query",
    "render",
]
