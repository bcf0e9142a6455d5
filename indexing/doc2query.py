"""doc2query expansion: the fine-tuned causal LM writes a few queries each document answers; they are stored in
the document's `doc2query` field and scored by BM25 only (`search.documents.bm25_text`), never embedded or shown
as the text. Users' words that the document does not use become matchable, the way doc2query/docTTTTTquery
expand passages (Nogueira et al., 2019).

Generation is the expensive part of a reindex, so each document's queries are cached by (model version, content
hash of the unexpanded document, settings): a rebuild regenerates only new or changed documents. The prompt is
the one `sift train lm --task doc2query` learns (training/lm_data.py builds it with `prompt_text`).

A small LM also writes queries its document does not answer ("hallucinated"); they add foreign words that pull
the document up for other queries. With `filter_model`, a sentence embedder scores each query against its
document and those under `min_relevance` are dropped, as Doc2Query-- does (Gospodinov et al., 2023). The filter
runs after the cache, so changing the threshold never regenerates.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from models.causal_lm import LMConfig, load_lm, resolve_lm, sample_shared_prompts
from models.embedder import Embedder, EmbedderConfig, SentenceTransformerEmbedder
from models.references import DEFAULT_EMBEDDER
from models.registry import CARD
from search.documents import EXPANSION_FIELD, Document
from search.text import normalize_query

log = logging.getLogger("sift.doc2query")
DocPart = Literal["head", "title_tail"]
DOC2QUERY_HEADER = "For each document, a search query it answers:\n"


def doc2query_prompt(text: str) -> str:
    """The per-document part of the prompt (after DOC2QUERY_HEADER), the same in training and indexing."""
    return f"Document: {text}\nQuery:"


def prompt_text(title: str, body: str, doc_chars: int, part: DocPart = "head") -> str:
    """What of a document the LM sees, at most `doc_chars` characters: its opening (`head`), or its title and the
    end of its body (`title_tail`: an abstract states its findings last, and findings are what claims and
    questions ask about). Training (training/lm_data.py) and indexing both build it here."""
    if part == "head":
        return " ".join(f"{title} {body}".split())[:doc_chars]
    title, body = " ".join(title.split()), " ".join(body.split())
    if len(title) + 1 + len(body) <= doc_chars:  # it all fits: no cut
        return f"{title} {body}".strip()
    room, tail, used = doc_chars - len(title) - len(" ... "), [], -1
    for word in reversed(body.split(" ")):  # whole words from the end, as many as fit
        if used + 1 + len(word) > room:
            break
        tail.append(word)
        used += 1 + len(word)
    return f"{title} ... {' '.join(reversed(tail))}".strip() if tail else title[:doc_chars]


def _prompt_text(doc: Document, config: Doc2QueryConfig) -> str:
    return prompt_text(doc.title, doc.body, config.doc_chars, config.doc_part)


def prompt(doc: Document, config: Doc2QueryConfig) -> str:
    return doc2query_prompt(_prompt_text(doc, config))


class Doc2QueryConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(description="The doc2query LM: a folder, `registry:lm@VERSION` or an HF id.")
    num_queries: int = Field(default=3, ge=1, le=20, description="Queries written per document.")
    max_new_tokens: int = Field(default=24, ge=4, le=128, description="Longest query, in tokens.")
    doc_chars: int = Field(default=600, ge=32, description="Characters of title and body in the prompt.")
    doc_part: DocPart = Field(
        default="head",
        description="Which characters: the document's opening (head) or its title and the end of its body "
        "(title_tail); the model must have been trained with the same (`sift train lm`'s `data.doc_part`).",
    )
    dtype: Literal["auto", "float32", "bfloat16"] = Field(
        default="auto",
        description="The LM's weights: auto (the resolver's), float32 or bfloat16 (about 1.6x faster on CPUs "
        "with AVX512-BF16; samples differ slightly, so it is part of the cache key).",
    )
    top_k: int = Field(default=10, ge=1, description="Sampling from the k likeliest tokens (docTTTTTquery's).")
    seed: int = Field(default=0, description="Sampling seed: the same document gets the same queries.")
    batch_size: int = Field(default=16, ge=1, le=256, description="Documents per generate call.")
    device: str | None = Field(default=None, description="Torch device; None: the resolver's choice.")
    cache: Path | None = Field(default=None, description="SQLite cache of generated queries; None: no cache.")
    filter_model: str | None = Field(
        default=DEFAULT_EMBEDDER,
        description="Sentence embedder (HF id or path) scoring each query against its document; None: keep all.",
    )
    min_relevance: float = Field(
        default=0.5,
        ge=-1.0,
        le=1.0,
        description="Queries whose cosine (filter_model) to the document is lower go; 0.5 was chosen for the "
        "default embedder on SciFact train (bench/doc2query.py --validate): choose again for another model.",
    )


def check_prompt_shape(model_dir: Path, config: Doc2QueryConfig) -> None:
    """A registry version's card says which document text it learnt from; writing from another shape of prompt
    gives poorer queries without any error, so a different `doc_part` is refused and other `doc_chars` warned of."""
    try:
        card = json.loads((model_dir / CARD).read_text())
        data = card["config"]["data"]
        learnt_part, learnt_chars = data.get("doc_part", "head"), data.get("doc_chars")
    except (OSError, ValueError, KeyError, TypeError):
        return  # not a registry version (a stock or hub model), or a card without doc2query data settings
    if card["config"].get("task") != "doc2query":
        return
    if learnt_part != config.doc_part:
        raise ValueError(
            f"doc2query model {model_dir.name} learnt from `{learnt_part}` prompts; this index asks for "
            f"`{config.doc_part}`: set doc2query.doc_part to {learnt_part!r} or train with the same doc_part"
        )
    if learnt_chars is not None and learnt_chars != config.doc_chars:
        log.warning("doc2query model %s learnt from %d-character prompts; indexing with %d", model_dir.name,
                    learnt_chars, config.doc_chars)  # fmt: skip


class QueryCache:
    """(key) → generated queries, in SQLite; a corrupt row reads as a miss."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False)
        self._db.execute("CREATE TABLE IF NOT EXISTS d2q (key TEXT PRIMARY KEY, queries TEXT NOT NULL)")
        self._lock = threading.Lock()

    def get_many(self, keys: Sequence[str]) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        with self._lock:
            for i in range(0, len(keys), 500):
                part = list(keys[i : i + 500])
                marks = ",".join("?" * len(part))
                for key, raw in self._db.execute(f"SELECT key, queries FROM d2q WHERE key IN ({marks})", part):
                    try:
                        out[key] = [str(q) for q in json.loads(raw)]
                    except (ValueError, TypeError):
                        log.warning("doc2query cache entry %s is unreadable; regenerating it", key[:12])
        return out

    def put_many(self, items: dict[str, list[str]]) -> None:
        with self._lock:
            self._db.executemany(
                "INSERT OR REPLACE INTO d2q (key, queries) VALUES (?, ?)",
                [(k, json.dumps(v)) for k, v in items.items()],
            )
            self._db.commit()

    def close(self) -> None:
        self._db.close()


class Doc2QueryExpander:
    """Adds `fields["doc2query"]` to documents; light `__init__`, the model loads in `warm_up`."""

    def __init__(self, config: Doc2QueryConfig, scorer: Embedder | None = None) -> None:
        """`scorer`: the filter's embedder when the caller already holds one; else `filter_model` loads it."""
        self.config = config
        self._scorer = scorer
        self._model: Any = None
        self._tok: Any = None
        self._device = "cpu"
        self._stops: list[int] = []
        self._cache = QueryCache(config.cache) if config.cache is not None else None
        self._lock = threading.Lock()
        self.stats = {"generated": 0, "cached": 0, "filtered_out": 0}

    def warm_up(self) -> None:
        self._warm_lm()
        self._warm_scorer()

    def _warm_lm(self) -> None:
        with self._lock:
            if self._model is None:
                c = self.config
                check_prompt_shape(Path(resolve_lm(c.model)), c)
                model, tok, self._device = load_lm(LMConfig(model=c.model, device=c.device, dtype=c.dtype))
                tok.padding_side = "left"
                newline = tok("\n", add_special_tokens=False)["input_ids"]
                self._stops = [i for i in (tok.eos_token_id, *newline) if i is not None]
                self._tok, self._model = tok, model

    def _warm_scorer(self) -> None:
        """The filter's embedder only: a rebuild whose queries are all cached never loads the LM."""
        with self._lock:
            if self._scorer is None and self.config.filter_model is not None:
                self._scorer = SentenceTransformerEmbedder(
                    EmbedderConfig(model=self.config.filter_model, device=self.config.device)
                )
            if self._scorer is not None:
                self._scorer.warm_up()

    def _key(self, doc: Document) -> str:
        c = self.config
        model = Path(resolve_lm(c.model)).name if Path(resolve_lm(c.model)).exists() else c.model
        settings: list[Any] = [model, c.num_queries, c.max_new_tokens, c.doc_chars, c.top_k, c.seed]
        settings += [c.doc_part] if c.doc_part != "head" else []  # the keys of head prompts stay as they were
        settings += [c.dtype] if c.dtype != "auto" else []
        return hashlib.sha256(json.dumps([settings, doc.content_hash()]).encode()).hexdigest()

    def generate(self, docs: Sequence[Document]) -> list[list[str]]:
        """`num_queries` distinct normalised queries per document (fewer when the samples repeat)."""
        import torch

        self._warm_lm()
        c, tok = self.config, self._tok
        texts = [DOC2QUERY_HEADER + prompt(d, c) for d in docs]
        torch.manual_seed(c.seed)
        new = sample_shared_prompts(
            self._model,
            tok,
            texts,
            c.num_queries,
            self._device,
            do_sample=True,
            top_k=c.top_k,
            max_new_tokens=c.max_new_tokens,
            pad_token_id=tok.pad_token_id,
            eos_token_id=self._stops,
        )
        decoded = tok.batch_decode(new, skip_special_tokens=True)
        result = []
        for i in range(len(docs)):
            lines = [normalize_query(t.split("\n", 1)[0]) for t in decoded[i * c.num_queries : (i + 1) * c.num_queries]]
            result.append([q for q in dict.fromkeys(lines) if q])
        return result

    def expand(self, docs: Sequence[Document]) -> list[Document]:
        """The documents with their queries in `fields["doc2query"]` (cached ones are not regenerated)."""
        keys = [self._key(d) for d in docs]
        found = self._cache.get_many(keys) if self._cache is not None else {}
        todo = [i for i, k in enumerate(keys) if k not in found]
        fresh: dict[str, list[str]] = {}
        for s in range(0, len(todo), self.config.batch_size):
            part = todo[s : s + self.config.batch_size]
            for i, queries in zip(part, self.generate([docs[i] for i in part]), strict=True):
                fresh[keys[i]] = queries
        if self._cache is not None and fresh:
            self._cache.put_many(fresh)
        self.stats["generated"] += len(fresh)
        self.stats["cached"] += len(docs) - len(fresh)
        every = {**found, **fresh}
        kept = self._relevant(docs, [every[k] for k in keys])
        return [
            d.model_copy(update={"fields": {**d.fields, EXPANSION_FIELD: q}}) for d, q in zip(docs, kept, strict=True)
        ]

    def _relevant(self, docs: Sequence[Document], queries: list[list[str]]) -> list[list[str]]:
        """Each document's queries at or over `min_relevance` (cosine to the prompt's text); all without a scorer."""
        if self._scorer is None and self.config.filter_model is None:
            return queries
        self._warm_scorer()
        assert self._scorer is not None
        flat = [q for qs in queries for q in qs]
        if not flat:
            return queries
        doc_vecs = self._scorer.embed([_prompt_text(d, self.config) for d in docs])
        query_vecs = iter(self._scorer.embed(flat))
        out = []
        for dv, qs in zip(doc_vecs, queries, strict=True):
            kept = [q for q in qs if float(next(query_vecs) @ dv) >= self.config.min_relevance]
            self.stats["filtered_out"] += len(qs) - len(kept)
            out.append(kept)
        return out

    def close(self) -> None:
        if self._cache is not None:
            self._cache.close()


def expand_stream(items: Iterable[Any], expander: Doc2QueryExpander, batch: int = 64) -> Iterator[Any]:
    """ReadItems (indexing/readers.py) with their documents expanded, in order, `batch` documents at a time;
    records without a document (read errors, deletions) pass through untouched."""
    pending: list[Any] = []

    def flush() -> Iterator[Any]:
        docs = [it for it in pending if it.doc is not None and not it.doc.deleted]
        expanded = iter(expander.expand([it.doc for it in docs])) if docs else iter(())
        for it in pending:
            if it.doc is not None and not it.doc.deleted:
                it.doc = next(expanded)
            yield it
        pending.clear()

    for it in items:
        pending.append(it)
        if len(pending) >= batch:
            yield from flush()
    yield from flush()
