"""What may never be suggested: the blocklist (whole words or phrases, `word*` for word prefixes) and personal
data (e-mails, phone or card-like numbers). Past queries and LM candidates both pass through `SafetyFilter`."""

from __future__ import annotations

import re
from collections.abc import Iterable

from search.text import normalize_query

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


_EMAIL = re.compile(r"[\w.+\-]+@[\w\-]+(?:\.[\w\-]+)*", re.UNICODE)
_DIGIT_RUN = re.compile(r"\+?\d(?:[\s().\-/]{0,2}\d)+")
_LOCAL_PHONE = re.compile(r"(?<!\d)\d{3}[\-.\s]\d{4}(?!\d)")


def contains_pii(text: str) -> str | None:
    """The kind of personal data in `text` (e-mail, phone/card-like digits), or None.

    Any run of 9+ digits (allowing spaces, dashes, dots, slashes, brackets between them) counts: that
    covers phone numbers with area codes, card numbers (13-19 digits) and id numbers. Cheap false
    positives (a list of years) are acceptable; a suggested phone number is not.
    """
    if _EMAIL.search(text):
        return "email"
    for m in _DIGIT_RUN.finditer(text):
        digits = sum(ch.isdigit() for ch in m.group())
        if digits >= 13:
            return "card-like digits"
        if digits >= 9:
            return "phone-like digits"
    if _LOCAL_PHONE.search(text):
        return "phone-like digits"
    return None


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
            return contains_pii(text) or contains_pii(norm)
        return None

    def allows(self, text: str) -> bool:
        return self.reason(text) is None
