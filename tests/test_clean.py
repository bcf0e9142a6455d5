"""Text cleaning: HTML to text, NFC, whitespace and invisible characters."""

from __future__ import annotations

from indexing.clean import clean_document, clean_text, clean_title, is_empty, looks_like_html
from search.documents import Document


def test_html_drops_script_style_head_and_unescapes_entities() -> None:
    page = (
        "<!DOCTYPE html><html><head><title>Page</title><style>p { color: red }</style></head>"
        "<body><h1>Heading</h1><p>Fish &amp; chips&nbsp;&lt;3 <b>today</b></p>"
        "<script>var x = '<p>not text</p>';</script>"
        "<ul>\n  <li>one</li>\n  <li>two</li>\n</ul><p>line<br>break</p>"
        "<table><tr><td>a</td><td>b</td></tr></table></body></html>"
    )
    assert clean_text(page) == "Heading\n\nFish & chips <3 today\n\none\ntwo\n\nline\nbreak\n\na b"


def test_html_source_newlines_are_spaces_except_in_pre() -> None:
    assert clean_text("<p>one\ntwo</p><pre>x = 1\ny = 2</pre>") == "one two\n\nx = 1\ny = 2"


def test_entities_without_tags_are_unescaped() -> None:
    assert clean_text("Tom &amp; Jerry &#8212; &quot;classic&quot;") == 'Tom & Jerry \u2014 "classic"'


def test_angle_brackets_in_plain_text_survive() -> None:
    text = "if a <b and c> d: return <class 'int'>"
    assert not looks_like_html(text)
    assert clean_text(text) == text


def test_nfc() -> None:
    assert clean_text("caf" + "e\u0301") == "caf\u00e9"
    assert clean_text("e\u0301") == "\u00e9"


def test_whitespace_and_control_characters() -> None:
    text = "  a \t\t b\u00a0 c  \r\n\r\n\r\n\n  next\x00para\u200b \x07\n\n\n\nlast\f  "
    assert clean_text(text) == "a b c\n\nnextpara\n\nlast"
    assert clean_text("") == ""
    assert clean_text(" \n\t ") == ""


def test_clean_document_and_title_single_line() -> None:
    doc = Document(id="1", title="  A <b>bold</b>\n title ", body="<p>x</p><p>y</p>", fields={"k": "v"})
    cleaned = clean_document(doc)
    assert cleaned.title == "A bold title"
    assert cleaned.body == "x\n\ny"
    assert cleaned.id == "1" and cleaned.fields == {"k": "v"}
    assert doc.title.startswith("  A")  # the original is untouched
    assert clean_title("one\n\ntwo") == "one two"


def test_is_empty() -> None:
    assert is_empty(Document(id="1"))
    assert is_empty(Document(id="1", title=" ", body="<p> </p><script>x()</script>"))
    assert not is_empty(Document(id="1", body="text"))
    assert not is_empty(Document(id="1", title="title only"))
    assert not is_empty(Document(id="1", deleted=True))  # a deletion must not be skipped
