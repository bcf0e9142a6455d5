"""Background threads for LM work: a LIFO queue, so the newest keystroke is served first, of daemon threads, so
an exiting process never waits for LM work nobody needs any more."""

from __future__ import annotations

import concurrent.futures
import queue
import threading
import time
from collections.abc import Callable
from typing import Any


class Workers:
    """Daemon threads over a LIFO queue: the newest keystroke is served first, and an exiting process never
    waits for LM work nobody needs any more (ThreadPoolExecutor joins its threads at exit)."""

    def __init__(self, n: int, name: str) -> None:
        self._q: queue.LifoQueue[tuple[Callable[[], Any], concurrent.futures.Future[Any]] | None] = queue.LifoQueue()
        self._threads = [threading.Thread(target=self._run, name=f"{name}-{i}", daemon=True) for i in range(n)]
        for t in self._threads:
            t.start()

    def _run(self) -> None:
        while True:
            item = self._q.get()
            if item is None:
                return
            fn, fut = item
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                fut.set_result(fn())
            except BaseException as exc:
                fut.set_exception(exc)

    def submit(self, fn: Callable[[], Any]) -> concurrent.futures.Future[Any]:
        fut: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self._q.put((fn, fut))
        return fut

    def shutdown(self, wait_s: float = 0.0) -> None:
        """Cancel queued jobs, stop the threads; wait up to `wait_s` for running jobs (a thread killed inside
        torch at interpreter exit aborts the process)."""
        while True:
            try:
                item = self._q.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                item[1].cancel()
        for _ in self._threads:
            self._q.put(None)
        end = time.monotonic() + wait_s
        for t in self._threads:
            if t is not threading.current_thread():
                t.join(max(0.0, end - time.monotonic()))
