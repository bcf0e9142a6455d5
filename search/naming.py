"""Index and version names: `NAME` is the alias users see, `NAME-v<UTC timestamp>` a physical version."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime

_NAME = re.compile(r"^[a-z0-9][a-z0-9_\-]{0,99}$")
_VERSION = re.compile(r"^(?P<name>[a-z0-9][a-z0-9_\-]*)-v(?P<ts>\d{20})$")
_last_ts = ""


def validate_index_name(name: str) -> str:
    """Names both stores accept (Elasticsearch's rules are the stricter ones)."""
    if not _NAME.match(name) or _VERSION.match(name):
        raise ValueError(
            f"invalid index name {name!r}: use 1-100 lowercase letters, digits, '-' or '_', "
            "starting with a letter or digit, and not ending in -v<digits>"
        )
    return name


def new_version_name(name: str) -> str:
    """A fresh, sortable version name; strictly increasing within a process."""
    global _last_ts
    while True:
        ts = datetime.now(UTC).strftime("%Y%m%d%H%M%S%f")
        if ts > _last_ts:
            _last_ts = ts
            return f"{name}-v{ts}"
        time.sleep(0.000001)


def version_alias(version: str) -> str | None:
    """The alias a version belongs to, or None if `version` is not a version name."""
    m = _VERSION.match(version)
    return m.group("name") if m else None
