"""The summary prompt: each result's most query-relevant sentences, numbered [1]..[k], within a token budget.

Sentences are chosen with the embedder and measured with the LM's own tokenizer, so the prompt stays short
and the first token comes quickly on a CPU. The sources keep all their sentences (and, after
`embed_sources`, their vectors) for the grounding check that follows generation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from models.embedder import Embedder
from search.documents import Document
from search.summarize.config import SummarizerConfig
from search.summarize.grounding import GroundingSource, content_terms, split_sentences


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


def count_tokens(tokenizer: Any, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def truncate(tokenizer: Any, text: str, max_tokens: int) -> str:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) <= max_tokens:
        return text
    return str(tokenizer.decode(ids[:max_tokens], skip_special_tokens=True)).rstrip() + "…"


def select_sources(config: SummarizerConfig, embedder: Embedder, query: str, docs: Sequence[Document]) -> list[Source]:
    """Split each result into sentences and score its candidates against the query (one embedder call).

    Candidates are the body sentences sharing the most words with the query; embedding only those keeps
    the work before the first token small. The rest are embedded after generation, for grounding.
    """
    cfg = config
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
    vecs = embedder.embed([query, *(src.sentences[j] for src, j in todo)])
    qv = vecs[0]
    for (src, j), v in zip(todo, vecs[1:], strict=True):
        src.scores[j] = float(v @ qv)
        src.known[j] = v
    return out


def embed_sources(embedder: Embedder, sources: Sequence[Source]) -> None:
    """Vectors for every sentence of every source (grounding needs them all); reuses the candidates'."""
    missing = [(s, j) for s in sources for j in range(len(s.sentences)) if j not in s.known]
    if missing:
        vecs = embedder.embed([s.sentences[j] for s, j in missing])
        for (s, j), v in zip(missing, vecs, strict=True):
            s.known[j] = v
    for s in sources:
        if s.sentences and s.vectors.shape[0] != len(s.sentences):
            s.vectors = np.vstack([s.known[j] for j in range(len(s.sentences))]).astype(np.float32)


def build_prompt(
    config: SummarizerConfig, embedder: Embedder, tokenizer: Any, query: str, docs: Sequence[Document]
) -> SummaryPrompt:
    """Numbered sources [1]..[k] holding each result's best sentences, all within the token budget."""
    cfg = config
    query = truncate(tokenizer, " ".join(query.split()), cfg.max_query_tokens)
    sources = select_sources(config, embedder, query, docs)
    budget = cfg.source_token_budget
    heads: dict[int, str] = {}
    used = 0
    kept: list[Source] = []
    for src in sources:  # every source gets its header first, in rank order, while the budget lasts
        title = truncate(tokenizer, src.doc.title.strip(), cfg.max_title_tokens) if cfg.max_title_tokens else ""
        head = f"[{src.n}] {title}".rstrip()
        t = count_tokens(tokenizer, head)
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
            sent = truncate(tokenizer, src.sentences[j], cfg.max_sentence_tokens)
            chosen = {**texts[src.n], j: sent}
            block = heads[src.n] + "\n" + " ".join(chosen[k] for k in sorted(chosen))
            t = count_tokens(tokenizer, block)
            if used - src.tokens + t > budget:
                continue
            texts[src.n] = chosen
            used += t - src.tokens
            src.block, src.tokens, src.selected = block, t, sorted(chosen)
    user = cfg.user_template.format(query=query, sources="\n\n".join(s.block for s in kept))
    messages = [{"role": "system", "content": cfg.system_prompt}, {"role": "user", "content": user}]
    return SummaryPrompt(query=query, messages=messages, sources=sources, source_tokens=used)


def encode_prompt(tokenizer: Any, prompt: SummaryPrompt) -> Any:
    """Token ids through the LM's chat template."""
    try:
        return tokenizer.apply_chat_template(
            prompt.messages, add_generation_prompt=True, return_dict=True, return_tensors="pt"
        )
    except Exception:  # templates without a system role: fold the instructions into the user turn
        merged = [{"role": "user", "content": prompt.messages[0]["content"] + "\n\n" + prompt.messages[1]["content"]}]
        return tokenizer.apply_chat_template(merged, add_generation_prompt=True, return_dict=True, return_tensors="pt")
