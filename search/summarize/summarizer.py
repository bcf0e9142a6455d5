"""Result summaries: a small causal LM writes a cited overview of the top results, streamed token by token.

The prompt holds only the most query-relevant sentences of each result (`search.summarize.prompt`). The
finished text is split into sentences, each checked against the results it cites
(`search.summarize.grounding`); if none survives, the summary falls back to the most query-relevant sentences of
the results themselves, cited. Summaries are cached (`search.summarize.cache`) by (normalized query, result ids
and content hashes, model id), so a changed document misses the cache.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from models.causal_lm import load_lm
from models.embedder import Embedder
from search.documents import Document
from search.summarize.cache import SummaryCache, cache_key_query
from search.summarize.config import SummarizerConfig
from search.summarize.generation import GenerationRecord, start_generation
from search.summarize.grounding import GroundingChecker, content_terms, parse_citations
from search.summarize.prompt import (
    Source,
    SummaryPrompt,
    build_prompt,
    count_tokens,
    embed_sources,
    encode_prompt,
    select_sources,
)
from search.summarize.schemas import (
    StopReason,
    StreamEvent,
    Summary,
    SummaryEvent,
    SummarySentence,
    SummarySource,
    TokenEvent,
)


class Summarizer:
    """Prompt building, streamed generation, grounding and fallback. Light init; warm_up() loads the LM.

    `cache_dir` is where load_lm keeps converted models (the caller's Settings.cache_dir / "lm"); None: its default.
    """

    def __init__(
        self,
        config: SummarizerConfig | None,
        embedder: Embedder,
        *,
        lm: tuple[Any, Any, str] | None = None,
        cache: SummaryCache | None = None,
        cache_dir: Path | None = None,
    ) -> None:
        self.config = config or SummarizerConfig()
        self.embedder = embedder
        self.grounding = GroundingChecker(self.config.grounding, embedder)
        self.cache = cache if cache is not None else SummaryCache(self.config.cache_size)
        self._lm = lm
        self.cache_dir = cache_dir
        self._lock = threading.Lock()
        self.generations: deque[GenerationRecord] = deque(maxlen=64)

    # -- lifecycle
    def warm_up(self) -> None:
        with self._lock:
            if self._lm is None:
                self._lm = load_lm(self.config.lm, self.cache_dir)
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

    # -- prompt (search.summarize.prompt, with this summarizer's config, embedder and tokenizer)
    def count_tokens(self, text: str) -> int:
        return count_tokens(self.tokenizer, text)

    def sources(self, query: str, docs: Sequence[Document]) -> list[Source]:
        return select_sources(self.config, self.embedder, query, docs)

    def embed_sources(self, sources: Sequence[Source]) -> None:
        embed_sources(self.embedder, sources)

    def build_prompt(self, query: str, docs: Sequence[Document]) -> SummaryPrompt:
        return build_prompt(self.config, self.embedder, self.tokenizer, query, docs)

    def encode_prompt(self, prompt: SummaryPrompt) -> Any:
        return encode_prompt(self.tokenizer, prompt)

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
        cfg = self.config
        cap = min(max_new_tokens or cfg.max_new_tokens, cfg.max_new_tokens)
        cancel = cancel or threading.Event()
        enc = self.encode_prompt(prompt)
        device = self._lm[2] if self._lm else "cpu"
        enc = {k: v.to(device) for k, v in enc.items()}
        return start_generation(
            self.model,
            self.tokenizer,
            enc,
            cfg,
            source_text="\n".join(s.block for s in prompt.sources if s.block),
            cap=cap,
            cancel=cancel,
            deadline_s=deadline_s,
            records=self.generations,
        )

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
        norm = cache_key_query(v.text)  # equal as the cache compares queries: case, punctuation, spacing aside
        if any(cache_key_query(k.text) == norm for k in kept):
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
