"""A tiny causal LM (GPT-2 architecture, 2 layers, 32 wide) built on the fly, optionally fitted to a few
lines of text in seconds, so suggestion tests exercise real `generate` calls without any download."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


def build_byte_bpe_tokenizer(out: Path, texts: Sequence[str], vocab_size: int = 600) -> Path:
    """Byte-level BPE (GPT-2 style, spaces kept as "Ġ") trained on `texts`, saved as a fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2TokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(texts, trainer=trainer)
    fast = GPT2TokenizerFast(tokenizer_object=tok, model_max_length=256)
    fast.eos_token = fast.bos_token = fast.unk_token = "<|endoftext|>"
    fast.pad_token = "<|endoftext|>"
    fast.save_pretrained(out)
    return out


def build_tiny_lm(out: Path, documents: Sequence[str] = (), steps: int = 0, seed: int = 0) -> Path:
    """Save a 2-layer GPT-2 with a tokenizer trained on `documents`; with `steps`, fit it to them first
    (a few hundred Adam steps make it reproduce their lines, so completions are predictable)."""
    from pydoc_data.topics import topics

    import torch
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    texts = [*documents, *list(topics.values())[:200]]
    build_byte_bpe_tokenizer(out, texts)
    tok = AutoTokenizer.from_pretrained(out)
    cfg = GPT2Config(
        vocab_size=len(tok),
        n_positions=256,
        n_embd=32,
        n_layer=2,
        n_head=2,
        bos_token_id=tok.eos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.eos_token_id,
    )
    model = GPT2LMHeadModel(cfg)
    if steps and documents:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # a tiny model: more threads only fight over a busy machine
        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
        enc = tok(list(documents), return_tensors="pt", padding=True, truncation=True, max_length=256)
        labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
        for _ in range(steps):
            loss = model(**enc, labels=labels).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        torch.set_num_threads(threads)
    model.save_pretrained(out)
    return out


# A tiny LM fitted to these query lines, prompted the way LMCompleter prompts (few-shot "- query" lines).
TINY_EXAMPLES = ["alpha query", "beta query"]
TINY_TARGETS = [
    "protein folding in cells",
    "protein folding diseases",
    "insulin resistance in mice",
    "vitamin d deficiency",
    "zebrafish heart regeneration",
]


def build_tiny_query_lm(out: Path, steps: int = 200) -> Path:
    """The tiny LM fitted to complete TINY_TARGETS after LMCompleter's prompt with TINY_EXAMPLES."""
    docs = ["Search queries:\n" + "".join(f"- {e}\n" for e in TINY_EXAMPLES) + f"- {t}\n" for t in TINY_TARGETS]
    return build_tiny_lm(out, docs, steps=steps)
