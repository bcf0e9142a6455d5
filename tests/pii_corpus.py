"""The shared corpus of personal-data forms (issue 34 and more): every user of `search.pii` (the query log's
scrubber, the suggestion filter, the LM training data) is tested against the same lists.

`PII_FORMS` are (text, what the scrubber must turn it into, the kind the detector must name); `NOT_PII` must
pass the detector and the scrubber unchanged. The texts are query-shaped: a few words around the personal part.
"""

from __future__ import annotations

from search.pii import CARD, DIGITS, EMAIL, PHONE

PII_FORMS: list[tuple[str, str, str]] = [
    # phone numbers, every separator people type (issue 34: logged raw and served)
    ("call 555 - 123 - 4567", "call <number>", PHONE),
    ("call 555—123—4567", "call <number>", PHONE),  # em dash
    ("call 555–123–4567", "call <number>", PHONE),  # en dash
    ("call 555‑123‑4567", "call <number>", PHONE),  # non-breaking hyphen
    ("call 555−123−4567", "call <number>", PHONE),  # minus sign
    ("call 555 ― 123 ― 4567", "call <number>", PHONE),  # horizontal bar, spaced
    ("call 555_123_4567", "call <number>", PHONE),
    ("call 555.123.4567", "call <number>", PHONE),
    ("call 555 . 123 . 4567", "call <number>", PHONE),
    ("call 555/123/4567", "call <number>", PHONE),
    ("call 555·123·4567", "call <number>", PHONE),  # middle dot
    ("call 555 123 4567", "call <number>", PHONE),
    ("call 555\u00a0123\u00a04567", "call <number>", PHONE),  # no-break spaces
    ("call 555\u200b123\u200b4567", "call <number>", PHONE),  # zero-width spaces
    ("call ５５５－１２３－４５６７", "call <number>", PHONE),  # fullwidth digits and hyphen
    ("call +1 (555) 123-4567", "call <number>", PHONE),
    ("call (555)123-4567", "call <number>", PHONE),
    ("call +44 20 7946 0958", "call <number>", PHONE),
    ("call +49 30 1234567", "call <number>", PHONE),
    ("ph 030/123 45 67", "ph <number>", PHONE),
    ("call 5551234567 now", "call <number> now", PHONE),
    # more separators (review of issue 34): commas, plus, colons, stars, bars, tildes, hashes, repeated marks
    ("call 555,123,4567", "call <number>", PHONE),
    ("call 555+123+4567", "call <number>", PHONE),
    ("call 555:123:4567", "call <number>", PHONE),
    ("call 555*123*4567", "call <number>", PHONE),
    ("call 555|123|4567", "call <number>", PHONE),
    ("call 555~123~4567", "call <number>", PHONE),
    ("call 555#123#4567", "call <number>", PHONE),
    ("call 555 - - 123 - - 4567", "call <number>", PHONE),
    ("call 555 -- 123 . . 4567", "call <number>", PHONE),
    ("call 555 -,- 123 / - 4567", "call <number>", PHONE),
    ("call 555 ( - ) 123 [ ] 4567", "call <number>", PHONE),
    # digits joined by combining marks, which follow no letter (grapheme joiner, acute, keycap, variation selector)
    ("call 5\u034f5\u034f5\u034f1\u034f2\u034f3\u034f4\u034f5\u034f6\u034f7", "call <number>", PHONE),
    ("call 555\u0301123\u03014567", "call <number>", PHONE),
    ("call 555-\u0301123-\u0301\u03004567", "call <number>", PHONE),
    ("call 555\ufe0f123\ufe0f4567", "call <number>", PHONE),
    ("call 555\U0001d167123\U0001d1674567", "call <number>", PHONE),  # a mark beyond the basic plane
    # local (7-digit) numbers
    ("jenny 867-5309", "jenny <number>", PHONE),
    ("jenny 8675309", "jenny <number>", PHONE),
    ("jenny 867 5309", "jenny <number>", PHONE),
    ("jenny 867—5309", "jenny <number>", PHONE),
    ("jenny 867 53 09", "jenny <number>", PHONE),
    ("office 2345-6789", "office <number>", PHONE),
    ("ticket 8812345", "ticket <number>", PHONE),
    ("jenny 867,5309", "jenny <number>", PHONE),
    ("jenny 867:5309", "jenny <number>", PHONE),
    ("jenny 867\u0301 5309", "jenny <number>", PHONE),
    # card numbers, with separator groups
    ("card 4111 1111 / 1111 1111", "card <number>", CARD),
    ("card 4111 1111 1111 1111 refund", "card <number> refund", CARD),
    ("card 4111-1111-1111-1111", "card <number>", CARD),
    ("card 4111—1111—1111—1111", "card <number>", CARD),
    ("card 4111_1111_1111_1111", "card <number>", CARD),
    ("card 4111111111111111", "card <number>", CARD),
    ("card 4111,1111,1111,1111", "card <number>", CARD),
    ("card 4111 1111,1111 1111", "card <number>", CARD),
    ("card 4111|1111|1111|1111", "card <number>", CARD),
    ("card 4111 -- 1111 -- 1111 -- 1111", "card <number>", CARD),
    ("card 4\u20e3111 1\u20e3111 1111 1111", "card <number>", CARD),  # enclosing keycap
    ("amex 3782,822463,10005", "amex <number>", CARD),
    ("amex 3782 822463 10005", "amex <number>", CARD),
    # other long digit runs (ids, one-time codes)
    ("code 482913", "code <number>", DIGITS),
    ("iban 12345678901234567890123", "iban <number>", DIGITS),
    # e-mail addresses
    ("mail jane.roe @ example.com", "mail <email>", EMAIL),
    ("mail jane.roe@example.com", "mail <email>", EMAIL),
    ("mail john.doe＠example.com", "mail <email>", EMAIL),  # fullwidth @
    ("mail john.doe﹫example.com", "mail <email>", EMAIL),  # small commercial at
    ("mail jane.doe+work@example.co.uk sleep", "mail <email> sleep", EMAIL),
    ("mail rick@localhost", "mail <email>", EMAIL),
    ("mail rick @ localhost", "mail <email>", EMAIL),
    ("mail a@host", "mail <email>", EMAIL),
    ("mail jane [at] example [dot] com", "mail <email>", EMAIL),
    ("mail jane(at)example(dot)com", "mail <email>", EMAIL),
    ("mail user@192.168.0.1", "mail <email>", EMAIL),
    # half-typed addresses (what autocomplete sees while someone types)
    ("cell mary.major@example", "cell <email>", EMAIL),
    ("cell mary.major@", "cell <email>", EMAIL),
    ("cell mary.major @ example", "cell <email>", EMAIL),
    ("cell mary.major @", "cell <email>", EMAIL),
]

NOT_PII: list[str] = [
    "python 3.12",
    "ISO 8601",
    "iso 8601 2004",
    "iso 27001 and 1990-2000",
    "top 10 results",
    "top 100 2019",
    "1990-2000",
    "1990 – 2000",
    "covid 19",
    "covid-19 vaccine 2021",
    "1 in 5 million people",
    "p53 mutations in 50% of tumours",
    "ldl 130 mg/dl",
    "windows 10 pro",
    "rfc 2616",
    "sha256 1234",
    "2019-01-15 release notes",
    "15/01/2019",
    "192.168.1.1",
    "pi 3.14159",
    "1,000,000 dollars",
    "what is @ sign",
    "meet @ noon",
    "@handle",
    "email address format",
    "phone number lookup",
    "c# tutorial",
    "vitamin d3 5000 iu",
    # what the wider separators must leave alone: thousands, ranges of them, times, dates, ratios, lists, sums
    "population 1,000,000",
    "world population 8,000,000,000",
    "$1,000,000.00 prize",
    "10,000-15,000 births",
    "meeting at 10:30",
    "23:59:59.250 timeout",
    "2019-01-15 10:30:45 error",
    "15/01/2019 10:30",
    "aspect ratio 16:9",
    "resolution 1920:1080",
    "1024*1024 pixels",
    "timecode 01:02:03:04",
    "john 3:16",
    "rr 0.80, 0.66-0.96",
    "chromosomes 1, 3, 4, 6, 10, 11, 17, 18",
    "cycle 7: 1998-2001",
    "age 48 +/- 11 years",
    "2 + 2 = 4",
    "c# 10",
    "cafe\u0301 near me",
    "नमस्ते दुनिया",
]
