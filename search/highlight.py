"""Highlighted snippets, computed the same way for every store.

Words are matched on their Snowball stems, so "running" in a query lights up "runs" in a result,
close to what the index's own stemming matched. Text is HTML-escaped; only <em> tags are added.

The work is bounded whatever the document: only its first `MAX_TEXT_CHARS` characters are scanned, at most
`MAX_FRAGMENTS` windows are returned, and choosing them is linear in the matches. It is still CPU work of a few
milliseconds per page, so the service runs `highlight_page` in a worker thread, never on the event loop.
"""

from __future__ import annotations

import bisect
import html
import re
from collections.abc import Sequence

from search.documents import Document
from search.text import query_terms, snowball_stem

_WORD = re.compile(r"\w+", re.UNICODE)
MAX_TEXT_CHARS = 50_000  # a snippet comes from the start of a huge body: scanning megabytes blocks a replica
MAX_FRAGMENTS = 5


def _matches(text: str, stems: set[str]) -> list[tuple[int, int]]:
    """Spans of the words whose stem is a query stem. Each distinct word is stemmed once (a stem call per word
    of every result body cost milliseconds per search); most bodies then match nothing and stop there."""
    lower = text.lower()
    words = _WORD.findall(lower)
    hit = {w for w in set(words) if snowball_stem(w) in stems}
    if not hit:
        return []
    if len(lower) != len(text):  # a few characters change length when lowercased: positions from the original
        return [(m.start(), m.end()) for m in _WORD.finditer(text) if m.group().lower() in hit]
    return [(m.start(), m.end()) for m in _WORD.finditer(lower) if m.group() in hit]


def _mark(text: str, spans: list[tuple[int, int]]) -> str:
    out, pos = [], 0
    for s, e in spans:
        out.append(html.escape(text[pos:s]))
        out.append(f"<em>{html.escape(text[s:e])}</em>")
        pos = e
    out.append(html.escape(text[pos:]))
    return "".join(out)


def highlight(query: str, text: str, fragment_chars: int = 200, fragments: int = 1) -> list[str]:
    """Up to `fragments` windows of `text` with the most query-word matches, matches wrapped in <em>.

    With no match, the start of the text (unmarked) so the result still shows something.
    """
    if not text:
        return []
    fragments = max(1, min(fragments, MAX_FRAGMENTS))
    truncated = len(text) > MAX_TEXT_CHARS
    if truncated:
        text = text[:MAX_TEXT_CHARS]
    stems = {snowball_stem(t) for t in query_terms(query)}
    spans = _matches(text, stems) if stems else []
    if len(text) <= fragment_chars and not truncated:
        return [_mark(text, spans)]
    if not spans:
        return [html.escape(_trim(text, 0, fragment_chars)) + "…"]
    # Slide a window anchored at each match; keep the windows covering the most matches. Spans do not overlap,
    # so their ends are sorted: the matches a window covers are found by bisection, not by a scan of all.
    ends = [e for _, e in spans]
    windows = []
    for i, (s, _) in enumerate(spans):
        start = max(0, s - fragment_chars // 4)
        end = start + fragment_chars
        covered = spans[i : bisect.bisect_right(ends, end, lo=i)]
        windows.append((len({text[a:b].lower() for a, b in covered}), len(covered), -start, start))
    chosen: list[int] = []
    for *_, start in sorted(windows, reverse=True):
        if all(abs(start - c) >= fragment_chars for c in chosen):
            chosen.append(start)
        if len(chosen) >= fragments:
            break
    out = []
    starts = [a for a, _ in spans]
    for start in sorted(chosen):
        s, e = _word_bounds(text, start, start + fragment_chars)
        lo, hi = bisect.bisect_left(starts, s), bisect.bisect_right(ends, e)
        inner = [(a - s, b - s) for a, b in spans[lo:hi] if a >= s and b <= e]
        prefix = "…" if s > 0 else ""
        suffix = "…" if e < len(text) or truncated else ""
        out.append(prefix + _mark(text[s:e], inner) + suffix)
    return out


def highlight_page(query: str, docs: Sequence[Document | None], fragment_chars: int) -> list[dict[str, list[str]]]:
    """Title and body snippets of a page of results (empty for a missing document), in one call so the service
    hands the whole page to one worker thread."""
    return [
        {"title": highlight(query, d.title, fragment_chars), "body": highlight(query, d.body, fragment_chars)}
        if d is not None
        else {}
        for d in docs
    ]


def _word_bounds(text: str, start: int, end: int) -> tuple[int, int]:
    """Widen/shrink a window so it does not cut words."""
    while start > 0 and text[start - 1].isalnum():
        start -= 1
    end = min(end, len(text))
    while end < len(text) and end > start and text[end - 1].isalnum() and text[end].isalnum():
        end -= 1
    return start, end


def _trim(text: str, start: int, length: int) -> str:
    s, e = _word_bounds(text, start, start + length)
    return text[s:e]
