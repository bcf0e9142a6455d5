"""The I/O-free core of `sift.client`: URLs, the key, request bodies built from the API's own pydantic models,
the retry decisions (429/503, Retry-After, bounded attempts and waits), answers parsed into those models, typed
errors, and Server-Sent Events framing. `SiftClient` and `AsyncSiftClient` only send, sleep and read lines
around it, blocking or awaited, so no rule is written twice.
"""

from __future__ import annotations

import email.utils
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

import httpx
from pydantic import BaseModel, ConfigDict, Field

from logs.events import EventIn, EventsAccepted, EventsBatch
from search.service import SearchRequest, SearchResponse
from search.summarize.schemas import StreamEvent, Summary, SummaryEvent, TokenEvent
from serving.routers.health import Health, Readiness
from serving.routers.summarize import SummarizeRequest

log = logging.getLogger("sift.client")

T = TypeVar("T")
DEFAULT_URL = "http://127.0.0.1:8000"


class SiftError(Exception):
    """An error answer: `status` (0: the summary stream reported a failure after it began), the server's
    `detail` (a message, or FastAPI's list of field errors), `retry_after` (seconds, when the server said)."""

    def __init__(
        self, status: int, detail: Any, retry_after: float | None = None, request_id: str | None = None
    ) -> None:
        super().__init__(f"HTTP {status}: {detail}" if status else str(detail))
        self.status = status
        self.detail = detail
        self.retry_after = retry_after
        self.request_id = request_id


class RetryPolicy(BaseModel):
    """When a 429 (quota) or 503 (overloaded, store down, deadline) is tried again, and for how long at most."""

    model_config = ConfigDict(extra="forbid")

    max_attempts: int = Field(default=3, ge=1, le=20, description="Tries per call, the first included.")
    max_wait_s: float = Field(
        default=10.0, ge=0, description="Cap on one wait: a longer Retry-After is shortened to this."
    )
    max_total_wait_s: float = Field(
        default=30.0, ge=0, description="Cap on all waits of one call: a retry that would pass it is not made."
    )
    backoff_s: float = Field(
        default=0.5, ge=0, description="First wait when the answer has no Retry-After; doubled on each retry."
    )
    statuses: list[int] = Field(default=[429, 503], description="Statuses that are retried.")


def retry_after_s(headers: Mapping[str, str]) -> float | None:
    """Retry-After in seconds: delta-seconds or an HTTP date; None when absent or unreadable."""
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - datetime.now(UTC)).total_seconds()) if when.tzinfo else None


class Retries:
    """One call's retry budget: `wait_after(response)` is the seconds to sleep before the next try, or None."""

    def __init__(self, policy: RetryPolicy, retry: bool) -> None:
        self.policy, self.retry = policy, retry
        self.attempt, self.waited = 1, 0.0

    def wait_after(self, response: httpx.Response) -> float | None:
        p = self.policy
        if not self.retry or response.status_code not in p.statuses or self.attempt >= p.max_attempts:
            return None
        said = retry_after_s(response.headers)
        wait = min(p.max_wait_s, said if said is not None else p.backoff_s * 2 ** (self.attempt - 1))
        if self.waited + wait > p.max_total_wait_s:
            return None
        self.attempt += 1
        self.waited += wait
        log.info(
            "%s answered %d: try %d in %.2f s", response.request.url.path, response.status_code, self.attempt, wait
        )
        return wait


@dataclass
class Call(Generic[T]):
    """One API call: the request and how its answer becomes a value."""

    method: str
    path: str
    parse: Callable[[httpx.Response], T]
    params: tuple[tuple[str, str], ...] = ()
    body: Any = None
    ok: frozenset[int] = frozenset({200})
    retry: bool = True


class SSEFrames:
    """Server-Sent Events framing: lines in, (event, data) out at each blank line."""

    def __init__(self) -> None:
        self.event = "message"
        self.data: list[str] = []

    def feed(self, line: str) -> tuple[str, str] | None:
        if not line:
            done = (self.event, "\n".join(self.data)) if self.data else None
            self.event, self.data = "message", []
            return done
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            self.event = value
        elif name == "data":
            self.data.append(value)
        return None


def error_of(response: httpx.Response) -> SiftError:
    try:
        body = response.json()
        detail = body.get("detail", body) if isinstance(body, dict) else body
    except ValueError:
        detail = response.text or response.reason_phrase
    rid = response.headers.get("x-request-id")
    return SiftError(response.status_code, detail, retry_after_s(response.headers), rid)


def parse_as(kind: type[BaseModel]) -> Callable[[httpx.Response], Any]:
    return lambda r: kind.model_validate_json(r.content)


class ClientCore:
    """Everything but I/O: URLs, the key, request bodies from the API's models, retries, parsing."""

    def __init__(self, base_url: str, api_key: str | None, retry: RetryPolicy | None, timeout: float) -> None:
        self.base_url = base_url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.retry = retry or RetryPolicy()
        self.timeout = timeout

    def request(self, http: httpx.Client | httpx.AsyncClient, call: Call[Any], stream: bool = False) -> httpx.Request:
        headers = {**self.headers, **({"Accept": "text/event-stream"} if stream else {})}
        body = None if call.body is None else json.dumps(call.body).encode()
        if body is not None:
            headers["Content-Type"] = "application/json"
        url = self.base_url + call.path
        return http.build_request(
            call.method, url, params=call.params or None, content=body, headers=headers, timeout=self.timeout
        )

    def retries(self, call: Call[Any]) -> Retries:
        return Retries(self.retry, call.retry)

    def result(self, call: Call[T], response: httpx.Response) -> T:
        if response.status_code not in call.ok:
            raise error_of(response)
        return call.parse(response)

    def on_line(self, sse: SSEFrames, line: str | None) -> StreamEvent | None:
        """The event a summary stream's line completes, if any (None: the stream ended, flush)."""
        frame = sse.feed("" if line is None else line)
        return self.event(*frame) if frame is not None else None

    @staticmethod
    def event(name: str, data: str) -> StreamEvent | None:
        """A summary stream's frame as the API's event type; an `error` frame raises."""
        if name == "token":
            return TokenEvent(text=json.loads(data)["text"])
        if name == "summary":
            return SummaryEvent(summary=Summary.model_validate_json(data))
        if name == "error":
            raise SiftError(0, json.loads(data).get("detail", data))
        return None

    # -- the calls --------------------------------------------------------------------------------------
    def search(self, query: str | SearchRequest, options: dict[str, Any]) -> Call[SearchResponse]:
        req = query if isinstance(query, SearchRequest) else SearchRequest(query=query, **options)
        body = req.model_dump(mode="json", exclude_unset=True)
        return Call("POST", "/v1/search", parse_as(SearchResponse), body=body)

    def suggest(self, path: str, q: str, k: int, extra: dict[str, str | None], kind: type[BaseModel]) -> Call[Any]:
        params = (("q", q), ("k", str(k)), *((n, v) for n, v in extra.items() if v is not None))
        return Call("GET", path, parse_as(kind), params=params)

    def events(self, events: EventsBatch | Sequence[EventIn | Mapping[str, Any]]) -> Call[EventsAccepted]:
        """Events are retried safely: the server stores each idempotency id (`event_id`, or a content hash) once."""
        batch = events if isinstance(events, EventsBatch) else EventsBatch.model_validate({"events": list(events)})
        body = batch.model_dump(mode="json", exclude_none=True)
        return Call("POST", "/v1/events", parse_as(EventsAccepted), body=body, ok=frozenset({202}))

    @staticmethod
    def click(response: SearchResponse, result_id: str, options: dict[str, Any]) -> EventIn:
        """A click on one result of a page, at its absolute 1-based position (the page's offset included)."""
        ids = [r.id for r in response.results]
        if result_id not in ids:
            raise ValueError(f"{result_id!r} is not a result of this page")
        position = response.offset + ids.index(result_id) + 1
        fields = {"event_name": "Result clicked", **options}
        return EventIn(type="click", query_id=response.query_id, object_ids=[result_id], positions=[position], **fields)

    def summarize(self, fields: dict[str, Any]) -> Call[None]:
        req = SummarizeRequest(**{k: v for k, v in fields.items() if v is not None})
        return Call("POST", "/v1/summarize", lambda r: None, body=req.model_dump(mode="json", exclude_none=True))

    @staticmethod
    def summary_url(page: SearchResponse) -> Call[None]:
        if not page.summary_url:
            raise ValueError("this response has no summary_url: search with summarize=True on a server with summaries")
        return Call("GET", page.summary_url, lambda r: None)

    @staticmethod
    def health() -> Call[Health]:
        return Call("GET", "/healthz", parse_as(Health))

    @staticmethod
    def readiness() -> Call[Readiness]:  # 503 is an answer here (not ready), not a fault to retry
        return Call("GET", "/readyz", parse_as(Readiness), ok=frozenset({200, 503}), retry=False)

    @staticmethod
    def metrics() -> Call[str]:
        return Call("GET", "/metrics", lambda r: r.text)


def summary_fields(
    query: str | None, ids: Sequence[str] | None, search: SearchRequest | None, **rest: Any
) -> dict[str, Any]:
    return {"query": query, "ids": list(ids) if ids is not None else None, "search": search, **rest}
