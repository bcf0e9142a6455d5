"""Sift's Python client: `SiftClient` (blocking) and `AsyncSiftClient` (asyncio), over httpx.

    from sift.client import SiftClient
    with SiftClient("http://127.0.0.1:8000", api_key="sk_...") as sift:
        page = sift.search("how do I read a file", limit=3)

Requests and responses are the API's own pydantic models (`SearchRequest`/`SearchResponse`, the suggest,
events and summary schemas, the health models), so the client cannot drift from the server. 429 and 503
answers are retried, honouring `Retry-After`, within `RetryPolicy`'s bounds (attempts, one wait, all waits);
any other error, or one still failing after them, is a `SiftError` with the status and the server's `detail`.

One core (`sift.client_core.ClientCore`) builds every request, decides every retry and parses every answer and
SSE frame; the two classes are only the I/O around it (send, sleep, read lines), blocking or awaited.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

import httpx

from logs.events import EventIn, EventsAccepted, EventsBatch
from search.service import SearchRequest, SearchResponse
from search.suggest.schemas import RelatedResponse, SuggestResponse
from search.summarize.schemas import StreamEvent, Summary, SummaryEvent
from serving.routers.health import Health, Readiness
from sift.client_core import (
    DEFAULT_URL,
    Call,
    ClientCore,
    RetryPolicy,
    SiftError,
    SSEFrames,
    error_of,
    retry_after_s,
    summary_fields,
)

__all__ = ["AsyncSiftClient", "RetryPolicy", "SiftClient", "SiftError", "retry_after_s"]

T = TypeVar("T")


class SiftClient:
    """The blocking client. `http`: your own httpx.Client (proxies, TLS, transports); closed by you."""

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        api_key: str | None = None,
        *,
        retry: RetryPolicy | None = None,
        timeout: float = 30.0,
        http: httpx.Client | None = None,
    ) -> None:
        self._core = ClientCore(base_url, api_key, retry, timeout)
        self._own = http is None
        self._http = http or httpx.Client()

    def _run(self, call: Call[T]) -> T:
        retries = self._core.retries(call)
        while True:
            response = self._http.send(self._core.request(self._http, call))
            wait = retries.wait_after(response)
            if wait is None:
                return self._core.result(call, response)
            time.sleep(wait)

    def search(self, query: str | SearchRequest, **options: Any) -> SearchResponse:
        """One page of results; `options` are SearchRequest's fields (limit, offset, filters, mode, ...)."""
        return self._run(self._core.search(query, options))

    def suggest(
        self, q: str, k: int = 8, *, session_id: str | None = None, user_token: str | None = None
    ) -> SuggestResponse:
        return self._run(
            self._core.suggest(
                "/v1/suggest", q, k, {"session_id": session_id, "user_token": user_token}, SuggestResponse
            )
        )

    def related(self, q: str, k: int = 8) -> RelatedResponse:
        return self._run(self._core.suggest("/v1/related", q, k, {}, RelatedResponse))

    def events(self, events: EventsBatch | Sequence[EventIn | Mapping[str, Any]]) -> EventsAccepted:
        return self._run(self._core.events(events))

    def click(self, response: SearchResponse, result_id: str, **options: Any) -> EventsAccepted:
        """Record a click on `result_id` of `response` (options: user_token, session_id, event_name, ...)."""
        return self.events([self._core.click(response, result_id, options)])

    def summarize_stream(
        self,
        query: str | None = None,
        ids: Sequence[str] | None = None,
        *,
        search: SearchRequest | None = None,
        **options: Any,
    ) -> Iterator[StreamEvent]:
        """`TokenEvent`s as the LM writes, then one `SummaryEvent`: of `ids` for `query`, or of `search`'s top k."""
        return self._stream(self._core.summarize(summary_fields(query, ids, search, **options)))

    def summary_of(self, page: SearchResponse) -> Iterator[StreamEvent]:
        """The stream of a search's `summary_url` (searched with `summarize=True`)."""
        return self._stream(self._core.summary_url(page))

    def _stream(self, call: Call[None]) -> Iterator[StreamEvent]:
        retries = self._core.retries(call)
        while True:
            response = self._http.send(self._core.request(self._http, call, stream=True), stream=True)
            try:
                wait = retries.wait_after(response)
                if wait is None:
                    if response.status_code not in call.ok:
                        response.read()
                        raise error_of(response)
                    sse = SSEFrames()
                    for line in itertools.chain(response.iter_lines(), [None]):
                        if (event := self._core.on_line(sse, line)) is not None:
                            yield event
                    return
            finally:
                response.close()
            time.sleep(wait)

    def summarize(
        self,
        query: str | None = None,
        ids: Sequence[str] | None = None,
        *,
        on_token: Callable[[str], None] | None = None,
        **options: Any,
    ) -> Summary:
        """The checked summary (the stream's last event); `on_token` sees the text as it is written."""
        for event in self.summarize_stream(query, ids, **options):
            if isinstance(event, SummaryEvent):
                return event.summary
            if on_token is not None:
                on_token(event.text)
        raise SiftError(0, "the summary stream ended without a summary")

    def healthz(self) -> Health:
        return self._run(self._core.health())

    def readyz(self) -> Readiness:
        return self._run(self._core.readiness())

    def metrics(self) -> str:
        """Prometheus text (an admin key where the server has keys)."""
        return self._run(self._core.metrics())

    def close(self) -> None:
        if self._own:
            self._http.close()

    def __enter__(self) -> SiftClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncSiftClient:
    """The asyncio client: `SiftClient`'s methods, awaited (the stream is an async iterator)."""

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        api_key: str | None = None,
        *,
        retry: RetryPolicy | None = None,
        timeout: float = 30.0,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self._core = ClientCore(base_url, api_key, retry, timeout)
        self._own = http is None
        self._http = http or httpx.AsyncClient()

    async def _run(self, call: Call[T]) -> T:
        retries = self._core.retries(call)
        while True:
            response = await self._http.send(self._core.request(self._http, call))
            wait = retries.wait_after(response)
            if wait is None:
                return self._core.result(call, response)
            await asyncio.sleep(wait)

    async def search(self, query: str | SearchRequest, **options: Any) -> SearchResponse:
        return await self._run(self._core.search(query, options))

    async def suggest(
        self, q: str, k: int = 8, *, session_id: str | None = None, user_token: str | None = None
    ) -> SuggestResponse:
        return await self._run(
            self._core.suggest(
                "/v1/suggest", q, k, {"session_id": session_id, "user_token": user_token}, SuggestResponse
            )
        )

    async def related(self, q: str, k: int = 8) -> RelatedResponse:
        return await self._run(self._core.suggest("/v1/related", q, k, {}, RelatedResponse))

    async def events(self, events: EventsBatch | Sequence[EventIn | Mapping[str, Any]]) -> EventsAccepted:
        return await self._run(self._core.events(events))

    async def click(self, response: SearchResponse, result_id: str, **options: Any) -> EventsAccepted:
        return await self.events([self._core.click(response, result_id, options)])

    def summarize_stream(
        self,
        query: str | None = None,
        ids: Sequence[str] | None = None,
        *,
        search: SearchRequest | None = None,
        **options: Any,
    ) -> AsyncIterator[StreamEvent]:
        return self._stream(self._core.summarize(summary_fields(query, ids, search, **options)))

    def summary_of(self, page: SearchResponse) -> AsyncIterator[StreamEvent]:
        return self._stream(self._core.summary_url(page))

    async def _stream(self, call: Call[None]) -> AsyncIterator[StreamEvent]:
        retries = self._core.retries(call)
        while True:
            response = await self._http.send(self._core.request(self._http, call, stream=True), stream=True)
            try:
                wait = retries.wait_after(response)
                if wait is None:
                    if response.status_code not in call.ok:
                        await response.aread()
                        raise error_of(response)
                    sse = SSEFrames()
                    async for line in response.aiter_lines():
                        if (event := self._core.on_line(sse, line)) is not None:
                            yield event
                    if (event := self._core.on_line(sse, None)) is not None:
                        yield event
                    return
            finally:
                await response.aclose()
            await asyncio.sleep(wait)

    async def summarize(
        self,
        query: str | None = None,
        ids: Sequence[str] | None = None,
        *,
        on_token: Callable[[str], None] | None = None,
        **options: Any,
    ) -> Summary:
        async for event in self.summarize_stream(query, ids, **options):
            if isinstance(event, SummaryEvent):
                return event.summary
            if on_token is not None:
                on_token(event.text)
        raise SiftError(0, "the summary stream ended without a summary")

    async def healthz(self) -> Health:
        return await self._run(self._core.health())

    async def readyz(self) -> Readiness:
        return await self._run(self._core.readiness())

    async def metrics(self) -> str:
        return await self._run(self._core.metrics())

    async def aclose(self) -> None:
        if self._own:
            await self._http.aclose()

    async def __aenter__(self) -> AsyncSiftClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
