"""Personal data in query text: one set of patterns for the detector (`contains_pii`) and the scrubber
(`scrub_pii`), so what the query log stores, what suggestions may show and what the LM learns agree.

People type e-mail addresses and phone or card numbers in every shape: `555 - 123 - 4567`, `555—123—4567`,
`555_123_4567`, `4111 1111 / 1111 1111`, `jane.roe @ example.com`, `john.doe＠example.com`, `rick@localhost`,
`867-5309`, or half an address while typing (`mary.major@example`, `mary.major@`). So the text is first put in a
canonical form (`canonical`: NFKC, which turns fullwidth `＠` and digits into ASCII; every unicode dash to `-`,
middle dots to `.`, fraction slashes to `/`, every space to one blank, invisible format characters dropped, or
between two digits made a `-`, combining marks that follow no letter dropped: `5\u03015\u03015` is `555`), and the
patterns run on that.

- An e-mail is a word, `@` and a host word (`a@host`: no dot needed), or a word followed by `@` at the very end (a
  half-typed address). With spaces around the `@` (or `[at]`, `(at)`) the host must be dotted or `localhost`, or
  the word before must look like an address's local part (a dot, `_`, `+`, `-` or digit in it): `jane.roe @
  example.com` and `mary.major @ example` are addresses, `what is @ sign` stays a question.
- A number is digit groups joined by blanks or by runs of up to six of `- . _ / \\ ( ) [ ] , + : * | ~ #`, with
  blanks between and around them except beside `, + : * | ~ #` (`555 - - 123 - - 4567`, `4111,1111,1111,1111`,
  `555:123:4567`; but `0.80, 0.66`, `cycle 7: 1998` and `28 +/- 9` are lists and sums). It is personal when it
  has 9 or more digits (phones with an area code, cards of 13-19 digits, ids), a group of 6 or more digits, a
  leading `+` and 7 or more digits, or the shape of a local number: 3+4 digits (`867-5309`; not `top 100 2019`:
  blank-separated with a year last), 3+2+2, or 4+4 / 2+2+2+2 with a separator other than a blank (`2345-6789`;
  not a year range such as `1990-2000`, nor with `:`, `*` or `+`, a ratio, product or timecode: `1920:1080`).
- Not personal, whatever its length: a number grouped in thousands by commas (`1,000,000`, `8,000,000,000.00`:
  1-3 digits, then groups of exactly 3; or two joined by `-` or `/`: `10,000-15,000`), a clock time (`10:30`,
  `23:59:59.250`) and a date with an optional time (`2019-01-15 10:30`, `15/01/2019`). A 9-digit phone written
  as `612,345,678` is the price of that.

So years, versions, standards, small counts, times and ratios survive (`covid 19`, `python 3.12`, `ISO 8601`,
`1990-2000`, `top 10 results`, `16:9`); a list of years or a long decimal is a cheap false positive.
"""

from __future__ import annotations

import re
import unicodedata

PLACEHOLDERS = ("<email>", "<number>")
EMAIL, PHONE, CARD, DIGITS = "email", "phone-like digits", "card-like digits", "digit run"

# -- the canonical form ----------------------------------------------------------------------------------------
_DASHES = "\u2212\u2043\u02d7\u2796\u2010\u2011"  # minus, hyphen bullet, modifier minus, heavy minus, hyphens
_DOTS = "\u00b7\u2022\u2219\u30fb\u2027\u22c5"  # middle dots, bullets, katakana middle dot, hyphenation point
_SLASHES = "\u2044\u2215\u29f8"  # fraction slash, division slash, big solidus


def _tables() -> tuple[dict[int, str], str]:
    """Non-ASCII code points (basic plane) folded to the separators the patterns know, or dropped; and a regex
    class of the basic plane's combining marks (categories Mn, Mc, Me) and the variation selectors supplement.
    One pass: it runs at import."""
    table: dict[int, str] = {}
    marks: list[int] = []
    for cp in range(0x80, 0x10000):
        cat = unicodedata.category(chr(cp))
        if cat == "Pd":
            table[cp] = "-"
        elif cat in ("Zs", "Zl", "Zp"):
            table[cp] = " "
        elif cat == "Cf":
            table[cp] = ""
        elif cat[0] == "M":
            marks.append(cp)
    table.update({ord(c): "-" for c in _DASHES})
    table.update({ord(c): "." for c in _DOTS})
    table.update({ord(c): "/" for c in _SLASHES})
    table.update({cp: "" for cp in range(0xE0000, 0xE0080)})  # tag characters (format, invisible)
    ranges: list[list[int]] = [[0xE0100, 0xE01EF]]  # variation selectors 17-256 (Mn)
    for cp in reversed(marks):
        if ranges[-1][0] == cp + 1:
            ranges[-1][0] = cp
        else:
            ranges.append([cp, cp])
    return table, "[" + "".join(chr(a) if a == b else f"{chr(a)}-{chr(b)}" for a, b in ranges) + "]"


_FOLD, _MARK = _tables()
_INVISIBLE = "".join(chr(cp) for cp, to in _FOLD.items() if to == "")
# a combining mark belongs to the letter before it; after a digit, a blank, a separator (or at the start) it only
# hides digits from the patterns (`5\u034f5\u03015`): dropped, with the marks that follow it
_STRAY_MARKS = re.compile(f"(?<![^\\W\\d_])(?<!{_MARK}){_MARK}+")
_ASTRAL = "\U00010000"


def _drop_stray_marks(text: str) -> str:
    """`text` without combining marks that follow no letter (the regex knows the basic plane's; a text with
    characters beyond it, rare, is walked, so the supplementary planes' marks go too)."""
    if max(text) < _ASTRAL:
        return _STRAY_MARKS.sub("", text)
    out: list[str] = []
    for ch in text:
        if not (_is_mark(ch) and not (out and (out[-1].isalpha() or _is_mark(out[-1])))):
            out.append(ch)
    return "".join(out)


def _is_mark(ch: str) -> bool:
    return unicodedata.category(ch)[0] == "M"


# between two digits an invisible character separates groups (`867\u200b5309` is 3+4 digits); elsewhere it goes
_INVISIBLE_BETWEEN_DIGITS = re.compile(f"(?<=\\d)[{re.escape(_INVISIBLE)}]+(?=\\d)")
_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1f\x7f]")
_BLANKS = re.compile(r"\s+")


def canonical(text: str) -> str:
    """The form the patterns see: NFKC, combining marks after anything but a letter dropped, unicode
    dashes/dots/slashes folded to ASCII, invisible characters dropped (a `-` between two digits), every run of
    spaces one blank. Also what `scrub_pii` returns when it replaced anything."""
    t = text
    if not t.isascii():  # most queries are: NFKC and the folds would change nothing
        t = _drop_stray_marks(unicodedata.normalize("NFKC", t))
        t = _INVISIBLE_BETWEEN_DIGITS.sub("-", t).translate(_FOLD)
    return _BLANKS.sub(" ", _CONTROL.sub("", t))


# -- patterns --------------------------------------------------------------------------------------------------
_LOCAL = r"(?<![\w.+\-%])[\w.+\-%]+"  # starts at a token start: linear time on long words
# a local part that looks like an address's (a dot, `_`, `+`, `%`, `-` or a digit in it): `mary.major @ example`
_ADDRESS_LIKE = r"(?<![\w.+\-%])(?=[\w+\-%]*[._+%\-\d])[\w.+\-%]+"
_HOST = r"\w[\w\-]*"
_DOT = r"(?:\.|\s?(?:\[dot\]|\(dot\))\s?)"
_AT = r"\s?(?:@|\[at\]|\(at\))\s?"
_EMAIL = re.compile(
    rf"{_LOCAL}(?:"
    rf"@{_HOST}(?:{_DOT}{_HOST})*"  # jane@example.com, rick@localhost, mary.major@example
    rf"|@\s?$"  # mary.major@ (half-typed, at the end)
    rf"|{_AT}(?:{_HOST}(?:{_DOT}{_HOST})+|localhost\b))"  # jane.roe @ example.com, jane [at] example [dot] com
    rf"|{_ADDRESS_LIKE}{_AT}(?:{_HOST}|$)",  # mary.major @ example, mary.major @ (typing on)
    re.IGNORECASE,
)
_MARKS = r"[\-._/\\()\[\],+:*|~#]"
# `canonical` left at most one blank in a row; `, + : * | ~ #` take none beside them (`0.80, 0.66`, `cycle 7: 1998`
# and `28 +/- 9` are lists and sums, not one number)
_GAP = r"(?:(?<![,+:*|~#])\s(?![,+:*|~#]))?"
# one separator: up to six marks with blanks between them, or a blank
_SEP = rf"(?:{_GAP}{_MARKS}(?:{_GAP}{_MARKS}){{0,5}}{_GAP}|\s)"
_NUMBER = re.compile(rf"(?<!\d)(?:\+\s?)?(?:[(\[]\s?)?\d+(?:{_SEP}\d+)*")
_GROUP = re.compile(r"\d+")
_CANDIDATE = re.compile(r"\d|@|\[at\]|\(at\)", re.IGNORECASE)
_YEAR = re.compile(r"(?:1[89]|20)\d\d")
_THOUSAND = r"[1-9]\d{0,2}(?:,\d{3})+(?:\.\d{1,2})?"  # 1,000,000 and 8,000,000,000.00
_THOUSANDS = re.compile(rf"{_THOUSAND}(?: ?[\-/] ?{_THOUSAND})?")  # or two: 10,000-15,000, 971,232/2,750,000
_CLOCK = r"(?:[01]?\d|2[0-3]):[0-5]\d(?::[0-5]\d(?:[.,]\d{1,6})?)?"  # 10:30, 23:59:59.250
_DATE = r"(?:(?:1[89]|20)\d\d([\-/.])\d\d?\1\d\d?|\d\d?([\-/.])\d\d?\2(?:1[89]|20)\d\d)"  # 2019-01-15, 15/01/2019
_WHEN = re.compile(rf"{_DATE}(?: ?{_CLOCK})?|{_CLOCK}")
_RATIO = re.compile(r"\d\s?[:*+]")  # 1920:1080, 1024*1024, 12:34:56:78 (a timecode)


def _number_kind(run: str, after_letter: bool) -> str | None:
    """Whether one digit run (groups and separators, as `_NUMBER` matched it) is personal, and as what.
    `after_letter`: it is glued to a word (`sha256 1234`), which the local-number shapes do not count."""
    if _THOUSANDS.fullmatch(run) or _WHEN.fullmatch(run):
        return None
    groups = _GROUP.findall(run)
    sizes = [len(g) for g in groups]
    n = sum(sizes)
    if 13 <= n <= 19:
        return CARD
    if n > 19:
        return DIGITS
    if n >= 9 or max(sizes) >= 7 or (run.startswith("+") and n >= 7):
        return PHONE
    if max(sizes) >= 6:
        return DIGITS
    if after_letter or n not in (7, 8):
        return None
    blank_only = not re.search(r"[^\d\s]", run)
    if sizes == [3, 4]:
        return None if blank_only and _YEAR.fullmatch(groups[1]) else PHONE
    if sizes == [3, 2, 2]:
        return PHONE
    if sizes in ([4, 4], [2, 2, 2, 2]) and not blank_only and not _RATIO.search(run):
        years = sizes == [4, 4] and all(_YEAR.fullmatch(g) for g in groups)
        return None if years else PHONE
    return None


def _numbers(text: str) -> list[tuple[int, int, str]]:
    """(start, end, kind) of every personal digit run in canonical `text`."""
    out = []
    for m in _NUMBER.finditer(text):
        start = m.start()
        kind = _number_kind(m.group(), start > 0 and text[start - 1].isalpha())
        if kind is not None:
            out.append((start, m.end(), kind))
    return out


def contains_pii(text: str) -> str | None:
    """The kind of personal data in `text` (`email`, `phone-like digits`, `card-like digits`, `digit run`), or
    None. Placeholders the scrubber left are not personal data (see `was_scrubbed`)."""
    t = canonical(text)
    if not _CANDIDATE.search(t):
        return None
    if _EMAIL.search(t):
        return EMAIL
    found = _numbers(t)
    return found[0][2] if found else None


def scrub_pii(text: str) -> str:
    """`text` with every e-mail replaced by `<email>` and every personal number by `<number>`. Text without
    personal data comes back unchanged (not even normalised); text with some comes back in `canonical` form."""
    t = canonical(text)
    if not _CANDIDATE.search(t):  # no digit and no @: nothing to replace (most queries)
        return text
    scrubbed = t
    for _ in range(8):  # `a@b.@` leaves `<email>.@`: a replacement can expose an address a match overlapped
        again = _EMAIL.sub(PLACEHOLDERS[0], scrubbed)
        if again == scrubbed:
            break
        scrubbed = again
    spans = _numbers(scrubbed)
    if not spans and scrubbed == t:
        return text
    parts, last = [], 0
    for start, end, _ in spans:
        parts += [scrubbed[last:start], PLACEHOLDERS[1]]
        last = end
    return "".join([*parts, scrubbed[last:]])


# the scrubber's placeholders, also after query normalisation stripped a bracket at either end
_PLACEHOLDER = re.compile(r"<(?:email|number|phone|card)\b|\b(?:email|number|phone|card)>", re.IGNORECASE)


def was_scrubbed(text: str) -> bool:
    """`text` holds a scrubber placeholder: it had personal data, so it may not be suggested or learnt."""
    return bool(_PLACEHOLDER.search(text))
