"""The summarizer's settings: one pydantic model, so servers, the CLI and the bench validate the same knobs.

Kept apart from the summarizer so configuration (serving/config.py) can import it without the generation code.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from models.causal_lm import LMConfig
from search.summarize.grounding import GroundingConfig

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
