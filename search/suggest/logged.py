"""What the suggester reads of a logged search, as a protocol: the query log's `QueryEvent` (logs.querylog)
satisfies it, and search/ never imports the logs room, which sits above it."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol


class LoggedSearch(Protocol):
    """What the suggester learns from a logged search (`logs.querylog.QueryEvent`, which it must not import:
    the logs room sits above search/)."""

    @property
    def type(self) -> str: ...
    @property
    def ts(self) -> datetime: ...
    @property
    def query(self) -> str: ...
    @property
    def index(self) -> str | None: ...
    @property
    def session_id(self) -> str | None: ...
    @property
    def result_count(self) -> int: ...
    @property
    def issuer(self) -> str | None: ...
