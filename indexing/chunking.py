"""Token-aware chunking: windows that fit the embedder, overlapping so no sentence is cut off unseen."""

from __future__ import annotations

from typing import Any

from search.documents import Chunk, Document


def document_text(doc: Document) -> str:
    """The text that gets embedded: title, then body."""
    return f"{doc.title}\n{doc.body}".strip() if doc.title else doc.body.strip()


def chunk_document(doc: Document, tokenizer: Any, max_tokens: int, overlap: int) -> list[Chunk]:
    """Split title + body into windows of at most `max_tokens` tokens (special tokens excluded).

    Offsets come from the fast tokenizer, so chunk text is an exact slice of the original text.
    """
    text = document_text(doc)
    if not text:
        return []
    if max_tokens <= 0:
        raise ValueError("max_tokens must be positive")
    overlap = max(0, min(overlap, max_tokens // 2))
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, truncation=False, verbose=False)
    words = enc.word_ids() if hasattr(enc, "word_ids") else [None] * len(enc["offset_mapping"])
    toks = [(s, e, w) for (s, e), w in zip(enc["offset_mapping"], words, strict=True) if e > s]
    if len(toks) <= max_tokens:
        return [Chunk(parent_id=doc.id, index=0, text=text, start=0, end=len(text))]

    def word_start(i: int) -> int:
        """Move back to the first token of the word, so a slice never starts mid-word."""
        while i > 0 and toks[i][2] is not None and toks[i - 1][2] == toks[i][2]:
            i -= 1
        return i

    chunks: list[Chunk] = []
    start = 0
    while start < len(toks):
        end = min(start + max_tokens, len(toks))
        if end < len(toks):
            snapped = word_start(end)  # end before a word that would be cut
            if snapped > start:
                end = snapped
        s, e = toks[start][0], toks[end - 1][1]
        chunks.append(Chunk(parent_id=doc.id, index=len(chunks), text=text[s:e], start=s, end=e))
        if end == len(toks):
            break
        nxt = word_start(max(end - overlap, start + 1))
        start = nxt if nxt > start else end
    return chunks
