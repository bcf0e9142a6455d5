"""The keystroke path: `GET /v1/suggest` from a small ASGI process beside Serve, whose per-request cost is a lookup.

Through Serve, a keystroke pays the proxy hop, FastAPI's dependency graph, the key gate, an impression write and
(for a new prefix) a wait on the LM: measured at 200 req/s on 2 CPUs, the proxy hop alone is 41 ms p50 and the
endpoint collapses (issue 37). Here a request is: parse the query string, the API's key gate (`Guard.admit`: the
key, its scope, the quotas per client address then per key, the unauthenticated limit; 401/403/429 with
Retry-After, from the same `security:` config, a lock and a few dict lookups), look up an LRU of finished
responses, else blend the same structures the Serve ingress reads (the query log replayed from its file, the
version's corpus index and precomputed LM completions from `<data_dir>/suggest/`) with no online LM, and append
the API's suggest impression (a fresh `query_id`, the caller's identity) to the API's query log, so a click on a
suggestion is accepted by `/v1/events` as one served by the API would be. Responses carry the API's
`Cache-Control: private` (the body names its impression) and an `ETag` (the served version, the log generation
and the body without its query_id), so the browser absorbs repeated prefixes and a revalidation costs a 304.

Scale-out: it holds no state of its own (everything is rebuilt from the store, the query log and the artifact
files), so run one per CPU or pod behind the same load balancer as the API and route `/v1/suggest` to it. Its
quotas are in memory per process, as the API's are per ingress replica: each process is one more replica.

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
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from fastapi import HTTPException
from starlette.datastructures import Headers
from starlette.types import Receive, Scope, Send

from logs.events import suggest_impression
from logs.querylog import QueryEvent
from search.suggest.artifacts import VersionArtifacts
from search.suggest.schemas import MAX_K, MAX_PREFIX_CHARS
from search.suggest.suggester import Suggester
from serving.auth import Guard, Principal, client_address
from serving.gate import _body_pending, request_key
from serving.security import SecurityConfig, check_bind, identity_secret

log = logging.getLogger("sift.keystroke")


class KeystrokeConfig:
    """What the process needs from the API's config (kept plain: it is built from `AppConfig`)."""

    def __init__(
        self,
        max_age_s: int = 30,
        cache_size: int = 20_000,
        log_refresh_s: float = 60.0,
        max_body_bytes: int = 1_048_576,
    ) -> None:
        self.max_age_s = max_age_s
        self.cache_size = cache_size
        self.log_refresh_s = log_refresh_s
        self.max_body_bytes = max_body_bytes  # `security.max_body_bytes`: a GET with a larger body is a 413


# A query string longer than this is a 414: the longest valid one (a 200-character prefix and two 200-character
# ids, each character percent-encoded UTF-8) is about 7,300 bytes.
MAX_QUERY_STRING_BYTES = 8192
MAX_ID_CHARS = 200  # session_id, user_token: as the API's `max_length`
Record = Callable[[QueryEvent], None]


class KeystrokeApp:
    """A raw ASGI app (no framework: its routing and validation are a few lines, and cost nothing per request).

    `guard`: the API's keys and quotas (`serving.auth.Guard`, from the same `security:` config; None: open, as an
    API without keys). `record`: where impressions go (the API's query log's `append`; None: not logged)."""

    def __init__(
        self,
        suggester: Suggester,
        index: str,
        guard: Guard | None = None,
        config: KeystrokeConfig | None = None,
        generation: str = "",
        record: Record | None = None,
        versions: Mapping[str, str] | None = None,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        self.suggester = suggester
        self.index = index
        self.guard = guard if guard is not None else Guard(SecurityConfig(rate_limits=None))
        self.config = config or KeystrokeConfig()
        self.generation = generation  # changes whenever the structures behind the answers change
        self.record = record
        self.versions = dict(versions) if versions else None
        self.on_close = on_close
        # (q, k) -> (body up to the query_id's value, body after it, ETag, suggestion texts)
        self._cache: OrderedDict[tuple[str, int], Answer] = OrderedDict()
        self._lock = threading.Lock()

    def swap(self, suggester: Suggester, generation: str) -> None:
        """New structures (a reloaded log, a new version): answers cached from the old ones go."""
        with self._lock:
            self.suggester, self.generation = suggester, generation
            self._cache.clear()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                msg = await receive()
                if msg["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif msg["type"] == "lifespan.shutdown":
                    if self.on_close is not None:
                        self.on_close()  # the query log's buffer and last lines go to their store
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
        headers = Headers(scope=scope)
        # a keystroke has no body: one is never read, and the connection closes after the answer, so a slow sender
        # cannot hold it (the API's 408); one declared over the API's cap is its 413
        pending = _body_pending(headers)
        close = [(b"connection", b"close")] if pending else []
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > self.config.max_body_bytes:
            await _send(send, 413, _error(f"the request body is larger than {self.config.max_body_bytes} bytes"), close)
            return
        raw = scope.get("query_string", b"")
        if len(raw) > MAX_QUERY_STRING_BYTES:
            await _send(send, 414, _error(f"the query string is longer than {MAX_QUERY_STRING_BYTES} bytes"), close)
            return
        try:  # the key gate's order: key, scope and every quota from the headers, before the parameters
            principal = self._admit(scope, headers)
        except HTTPException as exc:
            refusal = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (exc.headers or {}).items()]
            await _send(send, exc.status_code, _error(str(exc.detail)), refusal + close)
            return
        try:
            q, k, session_id, user_token = _params(raw)
        except ValueError as exc:
            await _send(send, 422, _error(str(exc)), close)
            return
        head, tail, etag, texts = await self.answer(q, k)
        cache = f"private, max-age={self.config.max_age_s}".encode()
        extra = [(b"etag", etag.encode()), (b"cache-control", cache), (b"vary", b"Authorization, X-API-Key")]
        if headers.get("if-none-match") in (etag, f"W/{etag}"):
            await _send(send, 304, b"", extra + close)  # the browser's copy names its own impression
            return
        query_id = uuid.uuid4().hex
        if q.strip() and self.record is not None:
            self._log(query_id, q, texts, session_id, user_token, principal)
        body = head + query_id.encode() + tail
        await _send(send, 200, body, extra + close, head_only=method == "HEAD")

    def _admit(self, scope: Scope, headers: Headers) -> Principal:
        """The API key gate's check and charge (`Guard.admit`: per client, then per key; the unauthenticated
        limit), then the index rule of the API's route: 404 where it is not served, 403 outside the key's
        indices. No LM runs here, so the `suggest_lm` budgets are not charged (as on an API without an LM)."""
        peer = scope["client"][0] if scope.get("client") else None
        client = client_address(peer, headers.getlist("x-forwarded-for"), self.guard.trusted)
        principal = self.guard.admit(request_key(headers), "suggest", client, False)
        if not principal.served_here(self.index):
            raise HTTPException(404, f"index {self.index!r} not found")
        if not principal.may_read(self.index):
            raise HTTPException(403, f"this API key may not read index {self.index!r}")
        return principal

    def _log(
        self,
        query_id: str,
        q: str,
        texts: list[str],
        session_id: str | None,
        user_token: str | None,
        principal: Principal,
    ) -> None:
        """The API's suggest impression, field for field (one append to the query log)."""
        assert self.record is not None
        try:
            event = suggest_impression(
                query_id, q, texts, session_id, user_token, self.versions, principal.identity, self.index
            )
            self.record(event)
        except Exception as exc:  # logging must never fail a response that succeeded
            log.warning("recording the suggest impression failed (%s)", type(exc).__name__)  # its text may quote q

    async def answer(self, q: str, k: int) -> Answer:
        """The body around its query_id, its ETag and the texts shown, of a prefix: from the LRU, else blended
        now (no online LM: never a wait). The ETag leaves the query_id out, as the API's does."""
        key = (q, k)
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                return hit
            generation = self.generation
        resp = await self.suggester.suggest(q, k) if q.strip() else None
        rows = [] if resp is None else [s.model_dump() for s in resp.suggestions]
        head = b'{"query":' + _json(q) + b',"query_id":"'
        tail = b'","suggestions":' + _json(rows) + b',"partial":false,"took_ms":0.0}'
        digest = hashlib.blake2b(generation.encode() + b"\0" + head + tail, digest_size=12).hexdigest()
        found: Answer = (head, tail, f'"{digest}"', [r["text"] for r in rows])
        with self._lock:
            if generation == self.generation:
                self._cache[key] = found
                while len(self._cache) > self.config.cache_size:
                    self._cache.popitem(last=False)
        return found


Answer = tuple[bytes, bytes, str, list[str]]


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _params(raw: bytes) -> tuple[str, int, str | None, str | None]:
    """(q, k, session_id, user_token) of the query string, or ValueError with what is wrong (a 422, as the API)."""
    try:
        parsed = parse_qs(raw.decode("ascii"), keep_blank_values=True, max_num_fields=20, errors="strict")
    except (UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"malformed query string (not UTF-8 or too many fields: {type(exc).__name__})") from None
    q = parsed.get("q", [""])[-1]
    if len(q) > MAX_PREFIX_CHARS:
        raise ValueError(f"q: at most {MAX_PREFIX_CHARS} characters")
    try:
        k = int(parsed.get("k", ["8"])[-1])
    except ValueError:
        raise ValueError("k: an integer") from None
    if not 1 <= k <= MAX_K:
        raise ValueError(f"k: between 1 and {MAX_K}")
    ids: list[str | None] = []
    for name in ("session_id", "user_token"):
        value = parsed[name][-1] if name in parsed else None
        if value is not None and len(value) > MAX_ID_CHARS:
            raise ValueError(f"{name}: at most {MAX_ID_CHARS} characters")
        ids.append(value)
    return q, k, ids[0], ids[1]


def _error(detail: str) -> bytes:
    return json.dumps({"detail": detail}).encode()


async def _send(
    send: Send,
    status: int,
    body: bytes,
    extra: list[tuple[bytes, bytes]] | None = None,
    head_only: bool = False,
) -> None:
    """A whole response; `head_only` (HEAD): the GET's headers, Content-Length included, and no body."""
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers + (extra or [])})
    await send({"type": "http.response.body", "body": b"" if head_only else body})


def with_cors(app: Any, origins: list[str]) -> Any:
    """`app` behind the API's CORS rules (`cors_origins`: the same middleware and options as `serving.api`), so a
    page allowed to call the API may call this server too; preflights are answered before the key check."""
    if not origins:
        return app
    from starlette.middleware.cors import CORSMiddleware

    return CORSMiddleware(app, allow_origins=origins, allow_methods=["GET", "POST"], allow_headers=["*"])


# -- the process ------------------------------------------------------------------------------------------------
def build(config_path: Path) -> tuple[KeystrokeApp, Any, list[str]]:
    """The app for an API config (same store, data dir, query log, keys and quotas), a refresher to run beside
    it, and the API's CORS origins."""
    from logs.querylog import make_query_log
    from search.settings import Settings
    from search.stores.factory import make_store
    from serving.backend import serving_versions
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
    guard = Guard(config.security, identity_secret(config.security, data_dir))  # the API's keys, quotas, identities
    ks = KeystrokeConfig(max_body_bytes=config.security.max_body_bytes)
    app = KeystrokeApp(
        suggester,
        index,
        guard,
        ks,
        generation=gen,
        record=query_log.append,  # the API's query log: its events endpoint finds these impressions
        versions=serving_versions(config),
        on_close=query_log.close,
    )

    async def refresher() -> None:
        while True:
            await asyncio.sleep(app.config.log_refresh_s)
            try:
                app.swap(*await asyncio.to_thread(fresh))
            except Exception as exc:  # keep serving what is loaded
                log.warning("keystroke refresh failed (%s)", type(exc).__name__)

    return app, refresher, list(config.cors_origins)


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
    app, refresher, origins = build(args.config)
    check_bind(args.host, app.guard.config)  # as `sift serve`: no keys, no listening beyond loopback

    async def serve() -> None:
        asgi = with_cors(app, origins)
        server = uvicorn.Server(uvicorn.Config(asgi, host=args.host, port=args.port, access_log=False, lifespan="on"))
        task = asyncio.create_task(refresher())
        try:
            await server.serve()
        finally:
            task.cancel()

    asyncio.run(serve())


if __name__ == "__main__":
    main()
