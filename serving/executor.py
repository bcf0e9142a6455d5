"""The ingress's own thread pool for blocking calls (store requests, highlighting, log lookups).

`asyncio.to_thread` runs on the loop's default executor, which holds min(32, CPUs + 4) threads: six on two
CPUs. A few store calls stuck on a slow node fill it, and every other search then queues behind them until
its deadline. The pool set here is sized by config (`AppConfig.ingress_threads`); together with a store
that does not retry timed-out calls on the serving path and the search deadline (which also cancels work
still queued for a thread), a stuck node costs the searches that touch it, not the replica.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from starlette.types import ASGIApp, Receive, Scope, Send


class WorkerPoolMiddleware:
    """Installs a bounded pool as the default executor of whichever loop serves requests, once per loop.

    Done at the first request, not at build time: Serve may build the app on one loop and serve on another.
    """

    def __init__(self, app: ASGIApp, threads: int) -> None:
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        self.app = app
        self.threads = threads
        self._loop: asyncio.AbstractEventLoop | None = None
        self.pool: ThreadPoolExecutor | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self.pool = ThreadPoolExecutor(self.threads, thread_name_prefix="sift-io")
            loop.set_default_executor(self.pool)
            self._loop = loop
        await self.app(scope, receive, send)
