"""Where the summarizer runs, behind one streaming interface: `LocalSummaryClient` (in this process: tests,
`--no-ray`, the Serve replica itself) and `ServeSummaryClient` (the `SummarizerServer` deployment through a
handle). Both yield plain-dict wire events that map 1:1 onto the SSE events of /v1/summarize."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from search.documents import Document
from search.summarize.schemas import StreamEvent, TokenEvent
from search.summarize.summarizer import Summarizer

WireEvent = dict[str, Any]  # {"event": "token", "text": ...} | {"event": "summary", "summary": {...}}


def to_wire(ev: StreamEvent) -> WireEvent:
    """Plain dicts cross process boundaries (Ray) cheaply and map 1:1 onto SSE events."""
    if isinstance(ev, TokenEvent):
        return {"event": "token", "text": ev.text}
    return {"event": "summary", "summary": ev.summary.model_dump(mode="json")}


class SummaryStream(Protocol):
    """Async iterator of wire events with a synchronous cancel(), safe to call from a cancelled task."""

    def __aiter__(self) -> AsyncIterator[WireEvent]: ...

    async def __anext__(self) -> WireEvent: ...

    def cancel(self) -> None: ...


class SummaryClient(Protocol):
    def stream(self, query: str, docs: Sequence[Document], max_new_tokens: int | None) -> SummaryStream:
        """Start summarizing; events arrive as they are produced."""
        ...

    async def ready(self) -> bool: ...


_END = object()


class _ThreadedStream:
    """Drives a Summarizer's blocking event iterator from asyncio, one next() per executor call."""

    def __init__(self, it: Iterator[StreamEvent], cancel: threading.Event, pool: ThreadPoolExecutor) -> None:
        self._it = it
        self._cancel = cancel
        self._pool = pool
        self._done = False

    def __aiter__(self) -> _ThreadedStream:
        return self

    async def __anext__(self) -> WireEvent:
        if self._done:
            raise StopAsyncIteration
        loop = asyncio.get_running_loop()
        try:
            ev = await loop.run_in_executor(self._pool, next, self._it, _END)
        except BaseException:
            self.cancel()
            raise
        if ev is _END:
            self._done = True
            raise StopAsyncIteration
        return to_wire(ev)  # type: ignore[arg-type]

    def cancel(self) -> None:
        """Generation stops at its next token; the iterator then ends without a summary."""
        self._cancel.set()
        self._done = True


class LocalSummaryClient:
    """The summarizer in this process (tests, `--no-ray`, the Serve replica itself)."""

    def __init__(self, summarizer: Summarizer, max_concurrent: int = 32) -> None:
        self.summarizer = summarizer
        self._pool = ThreadPoolExecutor(max_workers=max_concurrent, thread_name_prefix="sift-summary")

    def stream(self, query: str, docs: Sequence[Document], max_new_tokens: int | None) -> _ThreadedStream:
        cancel = threading.Event()
        it = self.summarizer.stream(query, docs, max_new_tokens=max_new_tokens, cancel=cancel)
        return _ThreadedStream(it, cancel, self._pool)

    async def ready(self) -> bool:
        return True


class _ServeStream:
    def __init__(self, gen: Any) -> None:
        self._gen = gen

    def __aiter__(self) -> _ServeStream:
        return self

    async def __anext__(self) -> WireEvent:
        return await self._gen.__anext__()  # type: ignore[no-any-return]

    def cancel(self) -> None:
        """Cancels the replica's generator: its CancelledError sets the summarizer's cancel flag."""
        self._gen.cancel()


class ServeSummaryClient:
    """The `SummarizerServer` deployment, through a handle (streaming)."""

    def __init__(self, handle: Any) -> None:
        self._handle = handle

    def stream(self, query: str, docs: Sequence[Document], max_new_tokens: int | None) -> _ServeStream:
        payload = [d.model_dump(mode="json") for d in docs]
        return _ServeStream(self._handle.options(stream=True).stream.remote(query, payload, max_new_tokens))

    async def ready(self) -> bool:
        return bool(await self._handle.ready.remote())
