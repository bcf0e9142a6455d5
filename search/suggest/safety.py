"""What may never be suggested: the blocklist (whole words or phrases, `word*` for word prefixes) and personal
data (e-mails, phone or card-like numbers: `search.pii`, the patterns the query log's scrubber uses, and the
scrubber's placeholders). Past queries and LM candidates both pass through `SafetyFilter`."""

from __future__ import annotations

import re
from collections.abc import Iterable

from search.pii import contains_pii, was_scrubbed
from search.text import normalize_query

__all__ = ["DEFAULT_BLOCKLIST", "SafetyFilter", "contains_pii"]

# A conservative default; deployments extend it with `blocklist` / `blocklist_file`. A trailing `*` matches
# any word that starts with the entry.
DEFAULT_BLOCKLIST = [
    "porn*",
    "xxx",
    "nude*",
    "hentai",
    "kill yourself",
    "suicide method*",
    "how to make a bomb",
    "child abuse material",
]


class SafetyFilter:
    """Blocklist (whole words or phrases, `word*` for word prefixes) plus the PII check."""

    def __init__(self, blocklist: Iterable[str] = (), pii: bool = True) -> None:
        self.pii = pii
        parts = []
        for raw in blocklist:
            entry = normalize_query(raw.rstrip("*"))
            if not entry:
                continue
            body = r"\s+".join(re.escape(w) for w in entry.split())
            parts.append(body + (r"\w*" if raw.strip().endswith("*") else ""))
        self._block = re.compile(r"(?<!\w)(?:" + "|".join(parts) + r")(?!\w)") if parts else None

    def reason(self, text: str) -> str | None:
        """Why `text` must never be suggested, or None when it may be."""
        norm = normalize_query(text)
        if self._block is not None and self._block.search(norm):
            return "blocklist"
        if self.pii:
            if was_scrubbed(text) or was_scrubbed(norm):
                return "scrubbed"
            return contains_pii(text) or contains_pii(norm)
        return None

    def allows(self, text: str) -> bool:
        return self.reason(text) is None
