"""Streamed generation: transformers' generate() in a thread, stopped by token count, sentence count,
deadline or cancellation, with a live record of each call (tokens so far, why it stopped).

Sources' tokens get a small logit bonus (copy bias) so a small LM copies rather than invents.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from search.summarize.config import SummarizerConfig
from search.summarize.grounding import parse_citations
from search.summarize.schemas import StopReason


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


def start_generation(
    model: Any,
    tokenizer: Any,
    enc: dict[str, Any],
    config: SummarizerConfig,
    *,
    source_text: str,
    cap: int,
    cancel: threading.Event,
    deadline_s: float | None,
    records: deque[GenerationRecord],
) -> tuple[Iterator[str], GenerationRecord]:
    """Start generate() on the encoded prompt in a thread; the record is appended to `records` first."""
    from transformers import LogitsProcessorList, StoppingCriteriaList, TextIteratorStreamer

    cfg = config
    prompt_len = int(enc["input_ids"].shape[1])
    rec = GenerationRecord(max_new_tokens=cap, prompt_tokens=prompt_len)
    deadline = time.monotonic() + deadline_s if deadline_s else None
    tok = tokenizer
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
        ids = tok(source_text, add_special_tokens=False)["input_ids"]
        kwargs["logits_processor"] = LogitsProcessorList([_copy_bias(ids, cfg.copy_bias)])
    records.append(rec)

    def run() -> None:
        _generate(model, kwargs, streamer, rec, cancel=cancel, deadline=deadline, cap=cap, prompt_len=prompt_len)

    threading.Thread(target=run, name="sift-summarize", daemon=True).start()
    return iter(streamer), rec


def _generate(
    model: Any,
    kwargs: dict[str, Any],
    streamer: Any,
    rec: GenerationRecord,
    *,
    cancel: threading.Event,
    deadline: float | None,
    cap: int,
    prompt_len: int,
) -> None:
    """The generating thread: runs generate(), then records why it stopped (also when it failed)."""
    import torch

    failed = False
    try:
        with torch.inference_mode():
            out = model.generate(**kwargs)
        rec.tokens = int(out.shape[1]) - prompt_len
    except BaseException:
        failed = True
        raise
    finally:
        if failed:
            streamer.end()
        rec.reason = _stop_reason(rec, cancel, deadline, cap)
        rec.ended = time.monotonic()
        rec.finished.set()


def _stop_reason(rec: GenerationRecord, cancel: threading.Event, deadline: float | None, cap: int) -> StopReason:
    if cancel.is_set():
        return "cancelled"
    if rec.enough.is_set():
        return "max_sentences"
    if deadline is not None and time.monotonic() >= deadline:
        return "deadline"
    if rec.tokens >= cap:
        return "max_new_tokens"
    return "eos"
