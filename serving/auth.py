"""Authentication, scopes and quotas as typed FastAPI dependencies, and the request body cap.

A route declares the scope it needs (`SearchAuth`, `SummarizeAuth`, ...) and receives the caller's `Principal`;
routes that read an index also call `principal.check_index`. With no keys configured every caller is the open
principal (the server then listens on loopback only, see `serving.security.check_bind`). Quotas are counted
per key and per client address with the `limits` library (moving windows in memory, per ingress replica), where
keys are configured: an open server listens on loopback only, and its local clients get no quota.
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
import re
import time
from dataclasses import dataclass, replace
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from limits import RateLimitItem, parse_many
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from search.naming import version_alias
from serving.security import KeyRing, SecurityConfig
from serving.security import Scope as KeyScope

_bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer <API key>")
_api_key = APIKeyHeader(name="X-API-Key", auto_error=False, description="The API key (same keys as Bearer).")


INDEX_NAME = re.compile(r"^[a-z0-9][a-z0-9_\-]{0,127}$")
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Principal:
    """Who is calling: a key's name, scopes and indices (`name` None: no keys configured), and the indices the
    server serves (`security.indices`)."""

    name: str | None
    scopes: frozenset[str]
    indices: frozenset[str] | None
    served: frozenset[str] | None = None
    client: str = "unknown"  # the client address the quotas count (`client_address`), never client-chosen

    @property
    def identity(self) -> str:
        """Who sent the request as the server knows it (key name and client address), for counts a client
        must not be able to inflate by inventing session ids: a digest, so logs hold no address."""
        raw = f"{self.name or '-'}|{self.client}"
        return "c-" + hashlib.sha256(raw.encode("utf-8")).hexdigest()[:16]

    def check_index(self, index: str, loc: tuple[str, ...] = ("body", "index")) -> None:
        """422 for a name that is no single index (`.`, `..`, paths, wildcards, lists); 404 for one the server
        does not serve (as if it did not exist); 403 when the key is restricted to other indices."""
        if not INDEX_NAME.match(index):
            msg = "an index name is 1-128 lowercase letters, digits, '-' or '_', starting with a letter or digit"
            raise RequestValidationError([{"loc": loc, "msg": msg, "type": "value_error"}])
        alias = version_alias(index) or index
        if self.served is not None and index not in self.served and alias not in self.served:
            raise HTTPException(404, f"index {index!r} not found")
        if self.indices is not None and index not in self.indices and alias not in self.indices:
            raise HTTPException(403, f"this API key may not read index {index!r}")


class Guard:
    """The key ring and the rate limiter of one app (`app.state.guard`)."""

    def __init__(self, config: SecurityConfig) -> None:
        self.config = config
        self.keys = KeyRing(config)
        self.served = frozenset(config.indices) if config.indices is not None else None
        self.limiter = MovingWindowRateLimiter(MemoryStorage())
        limits = config.rate_limits
        self.per_key = parse_many(limits.per_key) if limits else []
        self.per_client = parse_many(limits.per_client) if limits else []
        self.summarize = parse_many(limits.summarize) if limits else []
        self.suggest_lm = parse_many(limits.suggest_lm) if limits else []
        self.trusted: list[Network] = [ipaddress.ip_network(c, strict=False) for c in config.trusted_proxies]

    def authenticate(self, key: str | None, scope: KeyScope) -> Principal:
        if not self.keys.enabled:
            return Principal(None, frozenset(), None, self.served)
        if not key:
            raise HTTPException(401, "an API key is required", headers={"WWW-Authenticate": "Bearer"})
        entry = self.keys.lookup(key)
        if entry is None:
            raise HTTPException(401, "unknown API key", headers={"WWW-Authenticate": "Bearer"})
        scopes = frozenset(entry.scopes)
        if scope not in scopes and "admin" not in scopes:
            raise HTTPException(403, f"this API key lacks the {scope!r} scope")
        indices = frozenset(entry.indices) if entry.indices is not None else None
        return Principal(entry.name, scopes, indices, self.served)

    def charge(self, items: list[RateLimitItem], *identifiers: str) -> None:
        """Count one request against each limit; 429 with Retry-After at the first one exhausted."""
        for item in items:
            if not self.limiter.hit(item, *identifiers):
                reset = self.limiter.get_window_stats(item, *identifiers).reset_time
                retry = max(1, math.ceil(reset - time.time()))
                raise HTTPException(
                    429, f"rate limit exceeded ({item}); retry later", headers={"Retry-After": str(retry)}
                )


def get_guard(request: Request) -> Guard:
    return request.app.state.guard  # type: ignore[no-any-return]


def _suggests_with_lm(request: Request) -> bool:
    runtime = getattr(request.app.state.backend, "suggest", None)
    suggester = getattr(runtime, "suggester", None)
    return suggester is not None and suggester.config.lm.enabled


def _ip(hop: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """An address from one X-Forwarded-For hop ("1.2.3.4", "1.2.3.4:80", "[::1]:80", "::1"); None if malformed."""
    hop = hop.strip()
    if hop.startswith("[") and "]" in hop:
        hop = hop[1 : hop.index("]")]
    elif hop.count(":") == 1:
        hop = hop.split(":", 1)[0]
    try:
        return ipaddress.ip_address(hop)
    except ValueError:
        return None


def client_address(peer: str | None, forwarded_for: list[str], trusted: list[Network]) -> str:
    """The address a per-client quota counts: the socket peer, unless the peer is a trusted proxy; then the
    X-Forwarded-For hops from the right (each proxy appends who connected to it), skipping trusted proxies, up to
    the first address that is not one. A malformed hop stops the walk at the last trusted one: everything left of
    it may have been written by the client."""
    if peer is None:
        return "unknown"
    ip = _ip(peer)
    if ip is None or not any(ip in net for net in trusted):
        return peer
    client = str(ip)
    hops = [h for value in forwarded_for for h in value.split(",") if h.strip()]
    for hop in reversed(hops):
        hop_ip = _ip(hop)
        if hop_ip is None:
            break
        client = str(hop_ip)
        if not any(hop_ip in net for net in trusted):
            break
    return client


def _client(request: Request, trusted: list[Network]) -> str:
    peer = request.client.host if request.client else None
    return client_address(peer, request.headers.getlist("x-forwarded-for"), trusted)


def require(scope: KeyScope) -> object:
    """The dependency of a route that needs `scope`: authenticates, checks the scope, charges the quotas."""

    async def dependency(
        request: Request,
        bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
        api_key: Annotated[str | None, Depends(_api_key)],
    ) -> Principal:
        guard = get_guard(request)
        principal = guard.authenticate(api_key or (bearer.credentials if bearer else None), scope)
        client = _client(request, guard.trusted)
        principal = replace(principal, client=client)
        if principal.name is None:  # open: loopback only, where quotas would only distort benchmarks
            return principal
        guard.charge(guard.per_key, "key", principal.name)
        guard.charge(guard.per_client, "client", client)
        if scope == "summarize":
            guard.charge(guard.summarize, "summarize", principal.name)
        elif scope == "suggest" and _suggests_with_lm(request):
            guard.charge(guard.suggest_lm, "suggest_lm", principal.name)
        return principal

    return Depends(dependency)


SearchAuth = Annotated[Principal, require("search")]
SuggestAuth = Annotated[Principal, require("suggest")]
SummarizeAuth = Annotated[Principal, require("summarize")]
EventsAuth = Annotated[Principal, require("events")]
AdminAuth = Annotated[Principal, require("admin")]


class BodyTooLarge(HTTPException):
    """Raised while a body is read: an HTTPException, so FastAPI's body parser lets it through as a 413."""

    def __init__(self, cap: int) -> None:
        super().__init__(413, f"the request body is larger than {cap} bytes")


class BodyCapMiddleware:
    """413 for a request body over `cap` bytes, before any route parses it: the declared Content-Length is
    checked first, and a chunked body is counted as it arrives."""

    def __init__(self, app: ASGIApp, cap: int) -> None:
        self.app = app
        self.cap = cap

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.cap:
            await self._reject(send)
            return
        seen = 0
        started = False

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.cap:
                    raise BodyTooLarge(self.cap)
            return message

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, tracked)
        except BodyTooLarge:
            if started:
                raise
            await self._reject(send)

    async def _reject(self, send: Send) -> None:
        body = f'{{"detail":"the request body is larger than {self.cap} bytes"}}'.encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})
