"""What a summary call returns: the checked summary with its sentences and sources, and the stream events.

These are the shapes the HTTP routes serialize and the cache stores, independent of how they are produced.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, Field

StopReason = Literal["eos", "max_sentences", "max_new_tokens", "deadline", "cancelled"]


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
