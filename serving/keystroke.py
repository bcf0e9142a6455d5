"""The keystroke path: `GET /v1/suggest` from a small ASGI process beside Serve, whose per-request cost is a lookup.

Through Serve, a keystroke pays the proxy hop, FastAPI's dependency graph, the key gate, an impression write and
(for a new prefix) a wait on the LM: measured at 200 req/s on 2 CPUs, the proxy hop alone is 41 ms p50 and the
endpoint collapses (issue 37). Here a request is: parse the query string, check the key, look up an LRU of
finished responses, else blend the same structures the Serve ingress reads (the query log replayed from its
file, the version's corpus index and precomputed LM completions from `<data_dir>/suggest/`) with no online LM.
Responses carry `Cache-Control` and an `ETag` (the served version, the log generation and the body), so browsers
and CDNs absorb repeated prefixes and a revalidation costs a 304.

Scale-out: it holds no state of its own (everything is rebuilt from the store, the query log and the artifact
files), so run one per CPU or pod behind the same load balancer as the API and route `/v1/suggest` to it;
impressions of suggestions are not logged here (the widget's clicks still are, through the API).

`python -m serving.keystroke --config configs/demo.yaml --port 8001` (uvicorn, one worker).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import logging
import threading
import time
from collections import OrderedDict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from search.suggest.artifacts import VersionArtifacts
from search.suggest.schemas import MAX_K, MAX_PREFIX_CHARS
from search.suggest.suggester import Suggester
from serving.security import KeyRing

log = logging.getLogger("sift.keystroke")
Send = Any
Receive = Any


class KeystrokeConfig:
    """What the process needs from the API's config (kept plain: it is built from `AppConfig`)."""

    def __init__(self, max_age_s: int = 30, cache_size: int = 20_000, log_refresh_s: float = 60.0) -> None:
        self.max_age_s = max_age_s
        self.cache_size = cache_size
        self.log_refresh_s = log_refresh_s


class KeystrokeApp:
    """A raw ASGI app (no framework: its routing and validation are a few lines, and cost nothing per request)."""

    def __init__(
        self,
        suggester: Suggester,
        index: str,
        keys: KeyRing | None = None,
        config: KeystrokeConfig | None = None,
        generation: str = "",
    ) -> None:
        self.suggester = suggester
        self.index = index
        self.keys = keys if keys is not None and keys.enabled else None
        self.config = config or KeystrokeConfig()
        self.generation = generation  # changes whenever the structures behind the answers change
        self._cache: OrderedDict[tuple[str, int], tuple[bytes, str]] = OrderedDict()
        self._lock = threading.Lock()

    def swap(self, suggester: Suggester, generation: str) -> None:
        """New structures (a reloaded log, a new version): answers cached from the old ones go."""
        with self._lock:
            self.suggester, self.generation = suggester, generation
            self._cache.clear()

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                msg = await receive()
                if msg["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif msg["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        path, method = scope.get("path", ""), scope.get("method", "GET")
        if path == "/healthz":
            await _send(send, 200, b'{"status":"ok"}')
            return
        if path != "/v1/suggest":
            await _send(send, 404, _error("not found: the keystroke server answers GET /v1/suggest only"))
            return
        if method not in ("GET", "HEAD"):
            await _send(send, 405, _error("use GET"), [(b"allow", b"GET, HEAD")])
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        denied = self._denied(headers)
        if denied is not None:
            await _send(send, denied[0], _error(denied[1]))
            return
        try:
            q, k = _params(scope.get("query_string", b""))
        except ValueError as exc:
            await _send(send, 422, _error(str(exc)))
            return
        body, etag = await self.answer(q, k)
        cache = f"public, max-age={self.config.max_age_s}".encode()
        extra = [(b"etag", etag.encode()), (b"cache-control", cache), (b"vary", b"Authorization, X-API-Key")]
        if headers.get("if-none-match") in (etag, f"W/{etag}"):
            await _send(send, 304, b"", extra)
            return
        await _send(send, 200, b"" if method == "HEAD" else body, extra)

    def _denied(self, headers: dict[str, str]) -> tuple[int, str] | None:
        if self.keys is None:
            return None
        auth = headers.get("authorization", "")
        key = headers.get("x-api-key") or (auth[7:].strip() if auth[:7].lower() == "bearer " else "")
        if not key:
            return 401, "an API key is required (Authorization: Bearer <key> or X-API-Key)"
        found = self.keys.lookup(key)
        if found is None:
            return 401, "unknown API key"
        if "suggest" not in found.scopes or (found.indices is not None and self.index not in found.indices):
            return 403, f"this key may not read suggestions of {self.index!r}"
        return None

    async def answer(self, q: str, k: int) -> tuple[bytes, str]:
        """(JSON body, ETag) of a prefix: from the LRU, else blended now (no online LM: never a wait)."""
        key = (q, k)
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                return hit
            generation = self.generation
        resp = await self.suggester.suggest(q, k) if q.strip() else None
        rows = [] if resp is None else [s.model_dump() for s in resp.suggestions]
        doc = {"query": q, "query_id": None, "suggestions": rows, "partial": False, "took_ms": 0.0}
        body = json.dumps(doc, separators=(",", ":")).encode()
        etag = '"' + hashlib.blake2b(generation.encode() + b"\0" + body, digest_size=12).hexdigest() + '"'
        with self._lock:
            if generation == self.generation:
                self._cache[key] = (body, etag)
                while len(self._cache) > self.config.cache_size:
                    self._cache.popitem(last=False)
        return body, etag


def _params(raw: bytes) -> tuple[str, int]:
    """(q, k) of the query string, or ValueError with what is wrong (a 422, as the API answers)."""
    try:
        parsed = parse_qs(raw.decode("ascii"), keep_blank_values=True, max_num_fields=20, errors="strict")
    except (UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"malformed query string ({type(exc).__name__})") from None
    q = parsed.get("q", [""])[-1]
    if len(q) > MAX_PREFIX_CHARS:
        raise ValueError(f"q: at most {MAX_PREFIX_CHARS} characters")
    try:
        k = int(parsed.get("k", ["8"])[-1])
    except ValueError:
        raise ValueError("k: an integer") from None
    if not 1 <= k <= MAX_K:
        raise ValueError(f"k: between 1 and {MAX_K}")
    return q, k


def _error(detail: str) -> bytes:
    return json.dumps({"detail": detail}).encode()


async def _send(send: Send, status: int, body: bytes, extra: list[tuple[bytes, bytes]] | None = None) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers + (extra or [])})
    await send({"type": "http.response.body", "body": body})


# -- the process ------------------------------------------------------------------------------------------------
def build(config_path: Path) -> tuple[KeystrokeApp, Any]:
    """The app for an API config (same store, data dir, query log and keys), and a refresher to run beside it."""
    from logs.querylog import make_query_log
    from search.settings import Settings
    from search.stores.factory import make_store
    from serving.config import AppConfig

    config = AppConfig.model_validate(_read(config_path))
    settings = Settings()
    if config.elasticsearch_url:
        settings = settings.model_copy(update={"elasticsearch_url": config.elasticsearch_url})
    data_dir = config.data_dir or settings.data_dir
    store = make_store(config.store, settings, data_dir=config.data_dir, request_timeout=config.es_request_timeout_s)
    store.warm_up()
    index = config.search.default_index
    es_client = getattr(store, "client", None) if config.store == "es" else None
    query_log = make_query_log(config.query_log, config.store, data_dir, es_client)
    cfg = config.suggest.model_copy(update={"prefetch_top": 0})

    holder = Suggester(cfg, complete=None, index=index)  # holds the version's structures between reloads
    arts = VersionArtifacts(holder, store, index, data_dir, interval_s=0)
    arts.start()

    def fresh() -> tuple[Suggester, str]:
        """The log replayed into a new suggester sharing the version's structures (reloaded if they changed)."""
        arts.refresh()
        s = Suggester(cfg, complete=None, index=index)
        n = s.load(query_log.read(datetime.now(UTC) - timedelta(days=config.query_log.replay_days)))
        s.corpus, s.precomputed = holder.corpus, holder.precomputed
        return s, f"{arts.version}:{n}:{time.time()}"

    suggester, gen = fresh()
    app = KeystrokeApp(suggester, index, KeyRing(config.security), generation=gen)

    async def refresher() -> None:
        while True:
            await asyncio.sleep(app.config.log_refresh_s)
            try:
                app.swap(*await asyncio.to_thread(fresh))
            except Exception as exc:  # keep serving what is loaded
                log.warning("keystroke refresh failed (%s)", type(exc).__name__)

    return app, refresher


def _read(path: Path) -> dict[str, Any]:
    import yaml

    return dict(yaml.safe_load(path.read_text()) or {})


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8001)
    args = ap.parse_args(argv)
    app, refresher = build(args.config)

    async def serve() -> None:
        server = uvicorn.Server(uvicorn.Config(app, host=args.host, port=args.port, access_log=False, lifespan="on"))
        task = asyncio.create_task(refresher())
        try:
            await server.serve()
        finally:
            task.cancel()

    asyncio.run(serve())


if __name__ == "__main__":
    main()
