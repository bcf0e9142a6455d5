"""Query completions and related-query rewrites from a causal LM (SmolLM2 by default, any HF causal LM).

A few-shot list prompt ("- query" lines) works with base and instruct models alike. The prompt stops
before the word being typed and generation is *forced* to re-type it ("token healing"): a prompt ending
in a half word ("protein fold") tokenizes unlike anything seen in training, so the model would start a
new word instead of finishing "folding". Generation stops at the end of the line. Beam search gives n
deterministic candidates (cacheable); sampling is there for variety.
"""

from __future__ import annotations

import bisect
import copy
import math
import os
import threading
from collections.abc import Sequence
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from models.causal_lm import LMConfig, load_lm, model_prompt, resolve_lm

Task = Literal["complete", "related"]

DEFAULT_EXAMPLES = [
    "vitamin d deficiency and bone fractures",
    "effects of smoking on lung cancer risk",
    "crispr gene editing in mice",
    "how to read a csv file in python",
    "symptoms of iron deficiency",
]
DEFAULT_RELATED = [
    ("vitamin d deficiency", "vitamin d and bone health"),
    ("python read csv file", "pandas read_csv example"),
    ("lung cancer smoking", "smoking and cancer risk"),
]


class Completion(BaseModel):
    """A raw LM candidate: the whole query line and a confidence in (0, 1] (exp of mean token log-prob)."""

    text: str
    score: float


class LMCompleterConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    lm: LMConfig = Field(default_factory=LMConfig, description="The causal LM; any HF causal LM id or path.")
    enabled: bool = Field(default=True, description="False: log-based suggestions only.")
    num_candidates: int = Field(default=4, ge=1, le=16, description="Candidates per prefix (beams or samples).")
    max_new_tokens: int = Field(default=8, ge=1, le=64, description="Tokens generated per candidate.")
    strategy: Literal["beam", "sample"] = Field(default="beam", description="Beam search (deterministic) or sampling.")
    temperature: float = Field(default=0.8, gt=0, le=2.0, description="Sampling temperature.")
    seed: int = Field(default=0, description="Sampling seed, so a prefix's candidates are reproducible.")
    examples: list[str] = Field(default_factory=lambda: list(DEFAULT_EXAMPLES), description="Few-shot query lines.")
    related_examples: list[tuple[str, str]] = Field(
        default_factory=lambda: list(DEFAULT_RELATED), description="Few-shot (query, related query) pairs."
    )
    nice: int = Field(
        default=10,
        ge=0,
        le=19,
        description="OS niceness of the generating thread: on a shared CPU, request handling wins over the LM.",
    )


class Completer(Protocol):
    """Generates query lines for prefixes (task complete) or related queries (task related)."""

    def complete(self, texts: Sequence[str], task: Task = "complete") -> list[list[Completion]]:
        """One candidate list per input text."""
        ...


def split_prefix(prefix: str) -> tuple[str, str]:
    """(context, heal): the prompt continues with `context`; generation must start with `heal`.

    "protein fold" → (" protein", " fold"); "protein " → (" protein", " "); "fold" → ("", " fold").
    """
    if prefix.endswith(" "):
        return " " + prefix.strip(), " "
    i = prefix.rfind(" ")
    if i < 0:
        return "", " " + prefix
    return " " + prefix[:i].strip(), " " + prefix[i + 1 :]


def whole_words(line: str, typed: str) -> str:
    """A line cut by the token budget, back to its last whole word: the word it was typing when the budget ran
    out may be unfinished ("... in patients with diab"), and a suggestion must not end in a word nobody types.
    The cut never goes back into what was typed; a line with no whole word after it is kept as it is."""
    end = line.rfind(" ")
    return line[:end].rstrip() if end > len(typed.rstrip()) else line


class LMCompleter:
    """Plain class around a causal LM; the Serve deployment and the eval both call `complete`."""

    def __init__(self, config: LMCompleterConfig | None = None) -> None:
        self.config = config or LMCompleterConfig()
        self._model: Any = None
        self._tok: Any = None
        self.device = "cpu"
        self._lock = threading.Lock()
        self._strings: list[str] = []
        self._sorted: list[str] = []
        self._sorted_ids: list[int] = []
        self._by_string: dict[str, list[int]] = {}
        self._stop_ids: list[int] = []
        self._headers: dict[str, tuple[list[int], Any]] = {}

    def warm_up(self) -> None:
        with self._lock:
            if self._model is not None:
                return
            model, tok, device = load_lm(self.config.lm)
            prompt = model_prompt(resolve_lm(self.config.lm.model))
            if prompt:  # a tuned model is served with the prompt it learnt, whatever the config's few-shot lines
                self.config = self.config.model_copy(update=prompt)
            tok.padding_side = "left"
            vocab = len(tok)
            strings = tok.batch_decode([[i] for i in range(vocab)], skip_special_tokens=False)
            order = sorted(range(vocab), key=lambda i: strings[i])
            by_string: dict[str, list[int]] = {}
            for i, s in enumerate(strings):
                by_string.setdefault(s, []).append(i)
            stop = {i for i, s in enumerate(strings) if "\n" in s}
            if tok.eos_token_id is not None:
                stop.add(int(tok.eos_token_id))
            self._strings, self._by_string = strings, by_string
            self._sorted = [strings[i] for i in order]
            self._sorted_ids = order
            self._stop_ids = sorted(stop)
            self._tok, self.device = tok, device
            self._model = model

    # -- prompts ----------------------------------------------------------------------------------------
    def _prompt(self, text: str, task: Task) -> tuple[str, str, str, str]:
        """(fixed header, per-text tail, forced start of the generation, text the generation continues).

        The header is the same for every text, so its KV cache is computed once and reused by every call.
        """
        if task == "related":
            shots = "".join(f"{a} => {b}\n" for a, b in self.config.related_examples)
            return f"For each search query, a related search query:\n{shots}", f"{text.strip()} =>", " ", ""
        context, heal = split_prefix(text)
        shots = "".join(f"- {q}\n" for q in self.config.examples)
        return f"Search queries:\n{shots}", f"-{context}", heal, context

    def _header(self, header: str) -> tuple[list[int], Any]:
        """Token ids and KV cache (batch 1) of a prompt header, computed once."""
        hit = self._headers.get(header)
        if hit is None:
            import torch

            ids = self._tok(header, add_special_tokens=True)["input_ids"]
            with torch.inference_mode():
                out = self._model(input_ids=torch.tensor([ids], device=self.device), use_cache=True)
            hit = (ids, out.cache)
            self._headers[header] = hit
        return hit

    def _allowed(self, heal: str, generated: str) -> list[int] | None:
        """Token ids that keep the generation consistent with `heal`; None once it has been typed."""
        if len(generated) >= len(heal):
            return None
        rest = heal[len(generated) :]
        lo = bisect.bisect_left(self._sorted, rest)
        hi = bisect.bisect_left(self._sorted, rest + "\U0010ffff")
        ids = self._sorted_ids[lo:hi]
        for j in range(1, len(rest)):
            ids = ids + self._by_string.get(rest[:j], [])
        return ids

    # -- generation -------------------------------------------------------------------------------------
    def complete(self, texts: Sequence[str], task: Task = "complete") -> list[list[Completion]]:
        if not texts:
            return []
        self.warm_up()
        import torch

        cfg = self.config
        _renice_thread(cfg.nice)
        prompts = [self._prompt(t, task) for t in texts]
        tok, model = self._tok, self._model
        n = cfg.num_candidates
        all_ids = torch.arange(len(self._strings), device=self.device)
        heals = [h for _, _, h, _ in prompts]
        tails = tok([tail for _, tail, _, _ in prompts], add_special_tokens=False)["input_ids"]
        width = max(len(t) for t in tails)
        pad = tok.pad_token_id

        def allowed(batch_id: int, input_ids: Any) -> Any:
            heal = heals[batch_id]  # batch_id is the input's index: rows are grouped n per input
            gen = "".join(self._strings[i] for i in input_ids[plen:].tolist())
            if not heal.startswith(gen[: len(heal)]):
                return all_ids
            ids = self._allowed(heal, gen)
            return all_ids if not ids else ids

        kwargs: dict[str, Any] = {
            "max_new_tokens": cfg.max_new_tokens,
            "num_return_sequences": n,
            "eos_token_id": self._stop_ids,
            "pad_token_id": tok.pad_token_id,
            "prefix_allowed_tokens_fn": allowed,
            "return_dict_in_generate": True,
            "output_scores": True,
        }
        if cfg.strategy == "beam":
            kwargs.update(num_beams=n, do_sample=False, early_stopping=True)
        else:
            kwargs.update(do_sample=True, temperature=cfg.temperature, top_k=0, top_p=1.0)
            torch.manual_seed(cfg.seed)
        with self._lock, torch.inference_mode():
            # header (cached) + left-padded tail: padding sits between them, masked out.
            head_ids, head_cache = self._header(prompts[0][0])
            rows = [head_ids + [pad] * (width - len(t)) + t for t in tails]
            mask = [[1] * len(head_ids) + [0] * (width - len(t)) + [1] * len(t) for t in tails]
            input_ids = torch.tensor(rows, device=self.device)
            plen = input_ids.shape[1]
            cache = copy.deepcopy(head_cache)
            cache.batch_repeat_interleave(len(texts) * n)
            out = model.generate(
                input_ids=input_ids,
                attention_mask=torch.tensor(mask, device=self.device),
                cache=cache,
                **kwargs,
            )
            if cfg.strategy == "beam":
                seq_scores = out.sequences_scores.tolist()
            else:
                trans = model.compute_transition_scores(out.sequences, out.scores, normalize_logits=True)
                gen_ids = out.sequences[:, plen:]
                live = torch.ones_like(gen_ids, dtype=torch.bool)
                for stop in self._stop_ids:
                    hits = (gen_ids == stop).int().cumsum(1)
                    live &= (hits - (gen_ids == stop).int()) == 0  # up to and including the first stop token
                lengths = live.sum(1).clamp(min=1)
                seq_scores = ((trans.masked_fill(~live, 0).sum(1)) / lengths).tolist()
        gen_rows = out.sequences[:, plen:]
        decoded = tok.batch_decode(gen_rows, skip_special_tokens=True)
        stopped = torch.isin(gen_rows, torch.tensor(self._stop_ids, device=gen_rows.device)).any(1).tolist()
        results: list[list[Completion]] = []
        for t, (_, _, _, context) in enumerate(prompts):
            cands: list[Completion] = []
            for j in range(n):
                row = t * n + j
                line = (context + decoded[row]).split("\n", 1)[0].strip()
                if not stopped[row]:
                    line = whole_words(line, texts[t] if task == "complete" else "")
                if line and all(c.text != line for c in cands):  # beams cut back to one line: keep the best
                    cands.append(Completion(text=line, score=math.exp(min(0.0, float(seq_scores[row])))))
            results.append(cands)
        return results


def _renice_thread(nice: int) -> None:
    """Lower this thread's CPU priority (Linux applies niceness per thread; threads it starts inherit it)."""
    if nice <= 0 or not hasattr(os, "setpriority"):
        return
    try:
        tid = threading.get_native_id()
        if os.getpriority(os.PRIO_PROCESS, tid) < nice:
            os.setpriority(os.PRIO_PROCESS, tid, nice)
    except OSError:  # not permitted here: run at normal priority
        pass
