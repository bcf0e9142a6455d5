"""Text cleaning before chunking and indexing: HTML to text, Unicode NFC, whitespace.

Cleaning makes equal text compare (and hash, and tokenize) equal, and keeps markup and invisible characters
out of BM25 terms and embeddings.
"""

from __future__ import annotations

import html
import re
import unicodedata
from html.parser import HTMLParser

from search.documents import Document

# HTML is assumed only on clear evidence (a closing or typical block tag, a comment, a doctype), so that
# text such as "a <b and c> d" or "<class 'int'>" is not mistaken for markup and eaten.
_KNOWN_TAGS = (
    "a|abbr|address|article|aside|b|blockquote|body|br|caption|center|code|dd|del|details|div|dl|dt|em|"
    "figcaption|figure|font|footer|form|h[1-6]|head|header|hr|html|i|iframe|img|ins|label|li|link|main|"
    "mark|meta|nav|noscript|ol|p|pre|q|s|script|section|small|span|strike|strong|style|sub|summary|sup|"
    "table|tbody|td|tfoot|th|thead|title|tr|tt|u|ul"
)
_HTML_EVIDENCE = re.compile(
    rf"</(?:{_KNOWN_TAGS})\s*>"
    r"|<(?:br|hr|p|div|li|tr|td|img|meta|link|html|body|head|table|ul|ol|h[1-6])(?:\s[^<>]*)?/?>"
    r"|<!--|<!doctype\s",
    re.IGNORECASE,
)
_ENTITY = re.compile(r"&(?:#\d{1,7}|#x[0-9a-f]{1,6}|[a-z][a-z0-9]{1,31});", re.IGNORECASE)

_SKIP_TAGS = frozenset({"script", "style", "head", "noscript", "template"})
_PARAGRAPH_TAGS = frozenset(
    {"p", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "pre", "table", "ul", "ol", "dl", "hr", "figure"}
)
_LINE_TAGS = frozenset(
    {
        "div", "li", "tr", "dt", "dd", "section", "article", "header", "footer", "nav", "aside", "main",
        "address", "form", "caption", "figcaption", "details", "summary", "title", "body", "html",
    }
)  # fmt: skip
_CELL_TAGS = frozenset({"td", "th"})

_LINE_BREAKS = re.compile(r"\r\n?|[\v\f\x1c-\x1e\x85\u2028\u2029]")
# Control characters (except tab and newline), zero-width space, soft hyphen, BOM, lone surrogates.
_INVISIBLE = re.compile(r"[\x00-\x08\x0e-\x1f\x7f-\x9f\u200b\xad\ufeff\ud800-\udfff]")
_HSPACE = re.compile(r"[^\S\n]+")
_BLANK_LINES = re.compile(r"\n{3,}")


class _TextExtractor(HTMLParser):
    """Collects visible text, turning block structure into line breaks."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip: dict[str, int] = {}
        self._pre = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "body":
            self._skip.pop("head", None)  # an unclosed <head> ends where the body starts
        if tag in _SKIP_TAGS:
            self._skip[tag] = self._skip.get(tag, 0) + 1
        elif tag == "pre":
            self._pre += 1
        self._break(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._break(tag)  # <br/>, <hr/>: nothing to skip or close

    def handle_endtag(self, tag: str) -> None:
        if tag in self._skip:
            self._skip[tag] -= 1
            if self._skip[tag] <= 0:
                del self._skip[tag]
        elif tag == "pre":
            self._pre = max(0, self._pre - 1)
        self._break(tag)

    def handle_data(self, data: str) -> None:
        if self._skip:
            return
        # Outside <pre>, source line breaks are just spaces in HTML.
        self.parts.append(data if self._pre else _HSPACE.sub(" ", data.replace("\n", " ")))

    def _break(self, tag: str) -> None:
        if tag in _CELL_TAGS:
            self.parts.append(" ")
            return
        if tag == "br":  # explicit, so <br><br> stays a blank line
            self.parts.append("\n")
            return
        newlines = 2 if tag in _PARAGRAPH_TAGS else 1 if tag in _LINE_TAGS else 0
        if not newlines:
            return
        # Adjacent breaks (</li><li>, </p>\n<p>) merge into the strongest one instead of adding up.
        while self.parts and not self.parts[-1].strip():
            newlines = max(newlines, self.parts.pop().count("\n"))
        self.parts.append("\n" * newlines)

    def text(self) -> str:
        return "".join(self.parts)


def looks_like_html(text: str) -> bool:
    """Whether text carries markup worth parsing (typical tags, comments, doctype)."""
    return "<" in text and _HTML_EVIDENCE.search(text) is not None


def html_to_text(markup: str) -> str:
    """Visible text of an HTML fragment or page, with block elements as line breaks (not yet normalised)."""
    parser = _TextExtractor()
    parser.feed(markup)
    parser.close()
    return parser.text()


def clean_text(text: str) -> str:
    """HTML to text when it looks like HTML, entities unescaped, NFC, invisible characters dropped,
    runs of spaces collapsed, at most one blank line between paragraphs, stripped."""
    if not text:
        return ""
    if looks_like_html(text):
        text = html_to_text(text)
    elif "&" in text and _ENTITY.search(text):
        text = html.unescape(text)
    if not unicodedata.is_normalized("NFC", text):
        text = unicodedata.normalize("NFC", text)
    text = _LINE_BREAKS.sub("\n", text)
    text = _INVISIBLE.sub("", text)
    text = _HSPACE.sub(" ", text)
    text = "\n".join(line.strip() for line in text.split("\n"))
    return _BLANK_LINES.sub("\n\n", text).strip()


def clean_title(text: str) -> str:
    """Like clean_text, on one line: titles are shown and matched as a single line."""
    return " ".join(clean_text(text).split())


def clean_document(doc: Document) -> Document:
    """A copy with cleaned title and body; id, url, dates and fields are left as the source gave them."""
    title, body = clean_title(doc.title), clean_text(doc.body)
    if title == doc.title and body == doc.body:
        return doc
    return doc.model_copy(update={"title": title, "body": body})


def is_empty(doc: Document) -> bool:
    """No title and no body text after cleaning, so there is nothing to index and the doc is skipped.

    A deleted document is never empty: its id alone carries the deletion, and skipping it would lose it.
    """
    if doc.deleted:
        return False
    return not (_has_text(doc.title) or _has_text(doc.body))


def _has_text(text: str) -> bool:
    return bool(text.strip()) and bool(clean_text(text))
