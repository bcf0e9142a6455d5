"""Tiny, randomly initialised models built on the fly, so unit tests need no download and run in seconds."""

from __future__ import annotations

from pathlib import Path
from pydoc_data.topics import topics


def training_texts() -> list[str]:
    return [t for t in topics.values() if t]


def build_wordpiece_tokenizer(out: Path, vocab_size: int = 2000) -> Path:
    """Train a BERT-style WordPiece tokenizer on the interpreter's own docs and save it as a fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertTokenizerFast

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    )
    tok.train_from_iterator(training_texts(), trainer=trainer)
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    tok.decoder = decoders.WordPiece()
    fast = BertTokenizerFast(tokenizer_object=tok, model_max_length=128)
    fast.save_pretrained(out)
    return out


def build_tiny_embedder(out: Path, max_seq_length: int = 64) -> Path:
    """A 2-layer, 32-wide BERT with mean pooling, saved as a sentence-transformers model directory."""
    import torch
    from sentence_transformers import SentenceTransformer, models
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    base = out / "hf"
    build_wordpiece_tokenizer(base)
    from transformers import AutoTokenizer

    vocab = len(AutoTokenizer.from_pretrained(base))
    cfg = BertConfig(
        vocab_size=vocab,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    BertModel(cfg).save_pretrained(base)
    word = models.Transformer(str(base), max_seq_length=max_seq_length)
    dim_fn = getattr(word, "get_embedding_dimension", None) or word.get_word_embedding_dimension
    pool = models.Pooling(dim_fn(), pooling_mode="mean")
    st = SentenceTransformer(modules=[word, pool], device="cpu")
    st_dir = out / "st"
    st.save(str(st_dir))
    return st_dir


def build_tiny_cross_encoder(out: Path) -> Path:
    """A 2-layer BERT with a 1-logit head, loadable by sentence-transformers' CrossEncoder."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    torch.manual_seed(1)
    build_wordpiece_tokenizer(out)
    vocab = len(AutoTokenizer.from_pretrained(out))
    cfg = BertConfig(
        vocab_size=vocab,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=256,
        num_labels=1,
    )
    BertForSequenceClassification(cfg).save_pretrained(out)
    return out
