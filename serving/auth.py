"""Authentication, scopes and quotas as typed FastAPI dependencies (what is checked before the body is read, and
the body cap, are `serving.gate`'s).

A route declares the scope it needs (`SearchAuth`, `SummarizeAuth`, ...) and receives the caller's `Principal`;
routes that read an index also call `principal.check_index`. With no keys configured every caller is the open
principal (the server then listens on loopback only, see `serving.security.check_bind`). Quotas are counted
per client address, then per key, with the `limits` library (moving windows in memory, per ingress replica), where
keys are configured: an open server listens on loopback only, and its local clients get no quota. A request that
one limit refuses counts against none, and requests without a (known) key count per address against
`rate_limits.unauthenticated`.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import math
import re
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from limits import RateLimitItem, parse_many
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from search.naming import version_alias
from serving.security import KeyRing, SecurityConfig
from serving.security import Scope as KeyScope

_bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer <API key>")
_api_key = APIKeyHeader(name="X-API-Key", auto_error=False, description="The API key (same keys as Bearer).")


INDEX_NAME = re.compile(r"^[a-z0-9][a-z0-9_\-]{0,127}$")
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address
# the key of identities where the deployment has no secret (a bare app, a Principal built directly): stable within
# the process, unguessable outside it
_PROCESS_KEY = secrets.token_bytes(32)
# where `KeyGateMiddleware` leaves the principal it admitted (scope["state"]), for the route's `require` to reuse
PRINCIPAL_STATE = "sift_principal"
PRINCIPAL_SCOPE_STATE = "sift_principal_scope"
Budgets = list[tuple[list[RateLimitItem], tuple[str, ...]]]


@dataclass(frozen=True)
class Principal:
    """Who is calling: a key's name, scopes and indices (`name` None: no keys configured), and the indices the
    server serves (`security.indices`)."""

    name: str | None
    scopes: frozenset[str]
    indices: frozenset[str] | None
    served: frozenset[str] | None = None
    client: str = "unknown"  # the client address the quotas count (`client_address`), never client-chosen
    identity_key: bytes = field(default=_PROCESS_KEY, repr=False, compare=False)  # the deployment's secret

    @property
    def identity(self) -> str:
        """Who sent the request as the server knows it (key name and client address), for counts a client
        must not be able to inflate by inventing session ids: an HMAC under the deployment's secret
        (`serving.security.identity_secret`), so a log holds no address, nor one found by trying them all."""
        raw = f"{self.name or '-'}|{self.client}".encode("utf-8", "surrogatepass")
        return "c-" + hmac.new(self.identity_key, raw, hashlib.sha256).hexdigest()[:16]

    def check_index(self, index: str, loc: tuple[str, ...] = ("body", "index")) -> None:
        """422 for a name that is no single index (`.`, `..`, paths, wildcards, lists); 404 for one the server
        does not serve (as if it did not exist); 403 when the key is restricted to other indices."""
        if not INDEX_NAME.match(index):
            msg = "an index name is 1-128 lowercase letters, digits, '-' or '_', starting with a letter or digit"
            raise RequestValidationError([{"loc": loc, "msg": msg, "type": "value_error"}])
        if not self.served_here(index):
            raise HTTPException(404, f"index {index!r} not found")
        if not self.may_read(index):
            raise HTTPException(403, f"this API key may not read index {index!r}")

    def served_here(self, index: str) -> bool:
        """Whether this server serves `index` (or the alias of a version of it): `security.indices`."""
        return self.served is None or index in self.served or (version_alias(index) or index) in self.served

    def may_read(self, index: str) -> bool:
        """Whether this caller may read `index`, without raising: the server serves it and the key's `indices`
        name it (or its alias). For checks that must not reveal which of the two failed (events, summaries)."""
        if not self.served_here(index):
            return False
        return self.indices is None or index in self.indices or (version_alias(index) or index) in self.indices


class Guard:
    """The key ring and the rate limiter of one app (`app.state.guard`)."""

    def __init__(self, config: SecurityConfig, identity_key: bytes | None = None) -> None:
        self.config = config
        self.identity_key = identity_key or _PROCESS_KEY
        self.keys = KeyRing(config)
        self.served = frozenset(config.indices) if config.indices is not None else None
        self.limiter = MovingWindowRateLimiter(MemoryStorage())
        limits = config.rate_limits
        self.per_key = parse_many(limits.per_key) if limits else []
        self.per_client = parse_many(limits.per_client) if limits else []
        self.summarize = parse_many(limits.summarize) if limits else []
        self.per_client_summarize = parse_many(limits.per_client_summarize) if limits else []
        self.suggest_lm = parse_many(limits.suggest_lm) if limits else []
        self.per_client_suggest_lm = parse_many(limits.per_client_suggest_lm) if limits else []
        self.unauthenticated = parse_many(limits.unauthenticated) if limits else []
        self.trusted: list[Network] = [ipaddress.ip_network(c, strict=False) for c in config.trusted_proxies]
        self._charging = threading.Lock()  # test-then-hit of several limits is one step

    def authenticate(self, key: str | None, scope: KeyScope, client: str = "unknown") -> Principal:
        """The caller's principal; 401 for a missing or unknown key (429 once its address has sent more such
        requests than `rate_limits.unauthenticated`), 403 for a key without `scope`."""
        if not self.keys.enabled:
            return Principal(None, frozenset(), None, self.served, client, self.identity_key)
        entry = self.keys.lookup(key) if key else None
        if entry is None:
            self.charge([(self.unauthenticated, ("unauthenticated", client))])
            detail = "unknown API key" if key else "an API key is required"
            raise HTTPException(401, detail, headers={"WWW-Authenticate": "Bearer"})
        scopes = frozenset(entry.scopes)
        if scope not in scopes and "admin" not in scopes:
            raise HTTPException(403, f"this API key lacks the {scope!r} scope")
        indices = frozenset(entry.indices) if entry.indices is not None else None
        return Principal(entry.name, scopes, indices, self.served, client, self.identity_key)

    def admit(self, key: str | None, scope: KeyScope, client: str, lm_suggest: bool = False) -> Principal:
        """`authenticate`, then charge the request to every quota it counts against (`budgets`): what the key
        gate does from the headers, before any body is read. `lm_suggest`: an LM completes suggestions here."""
        principal = self.authenticate(key, scope, client)
        if principal.name is not None:  # open: loopback only, where quotas would only distort benchmarks
            self.charge(self.budgets(principal, scope, lm_suggest))
        return principal

    def budgets(self, principal: Principal, scope: KeyScope, lm_suggest: bool) -> Budgets:
        """The quotas one request counts against, in order: the client address's, the key's, then the
        scope's (the address's share before the key's, so one address cannot spend a shared key's)."""
        client, name = principal.client, principal.name or "-"
        budgets: Budgets = [(self.per_client, ("client", client)), (self.per_key, ("key", name))]
        if scope == "summarize":
            budgets.append((self.per_client_summarize, ("summarize-client", client)))
            budgets.append((self.summarize, ("summarize", name)))
        elif scope == "suggest" and lm_suggest:
            budgets.append((self.per_client_suggest_lm, ("suggest_lm-client", client)))
            budgets.append((self.suggest_lm, ("suggest_lm", name)))
        return budgets

    def charge(self, budgets: Sequence[tuple[list[RateLimitItem], tuple[str, ...]]]) -> None:
        """Count one request against every limit of every budget (limits, identifiers), in order, or against
        none: 429 with Retry-After at the first one exhausted. Testing all before hitting any means a request
        one limit refuses spends nothing of the others (a client over its own quota leaves the key's intact)."""
        with self._charging:
            for items, identifiers in budgets:
                for item in items:
                    if not self.limiter.test(item, *identifiers):
                        reset = self.limiter.get_window_stats(item, *identifiers).reset_time
                        retry = max(1, math.ceil(reset - time.time()))
                        raise HTTPException(
                            429, f"rate limit exceeded ({item}); retry later", headers={"Retry-After": str(retry)}
                        )
            for items, identifiers in budgets:
                for item in items:
                    self.limiter.hit(item, *identifiers)


def get_guard(request: Request) -> Guard:
    return request.app.state.guard  # type: ignore[no-any-return]


def suggests_with_lm(app: Any) -> bool:
    """Whether `app`'s suggester completes with an LM (suggest calls then count against `suggest_lm` too)."""
    runtime = getattr(getattr(getattr(app, "state", None), "backend", None), "suggest", None)
    suggester = getattr(runtime, "suggester", None)
    return suggester is not None and suggester.config.lm.enabled


def _ip(hop: str) -> Address | None:
    """An address from one X-Forwarded-For hop ("1.2.3.4", "1.2.3.4:80", "[::1]:80", "::1"); None if malformed.
    An IPv4-mapped IPv6 address ("::ffff:1.2.3.4", what a dual-stack socket reports) is the IPv4 one."""
    hop = hop.strip()
    if hop.startswith("[") and "]" in hop:
        hop = hop[1 : hop.index("]")]
    elif hop.count(":") == 1:
        hop = hop.split(":", 1)[0]
    try:
        ip = ipaddress.ip_address(hop)
    except ValueError:
        return None
    return (ip.ipv4_mapped or ip) if isinstance(ip, ipaddress.IPv6Address) else ip


def _counted(ip: Address) -> str:
    """An address as quotas and identities count it: IPv4 whole, IPv6 by its /64 prefix (one host or home is
    given a /64 and may use any address in it, so counting each would let it choose its identity at will)."""
    if isinstance(ip, ipaddress.IPv4Address):
        return str(ip)
    return str(ipaddress.IPv6Network((int(ip) >> 64 << 64, 64)))


def client_address(peer: str | None, forwarded_for: list[str], trusted: list[Network]) -> str:
    """The address a per-client quota counts: the socket peer, unless the peer is a trusted proxy; then the
    X-Forwarded-For hops from the right (each proxy appends who connected to it), skipping trusted proxies, up to
    the first address that is not one. A malformed hop stops the walk at the last trusted one: everything left of
    it may have been written by the client. An IPv6 client counts as its /64 prefix (`_counted`)."""
    if peer is None:
        return "unknown"
    ip = _ip(peer)
    if ip is None:
        return peer  # not an address (an in-process test client): as it is
    if not any(ip in net for net in trusted):
        return _counted(ip)
    client = ip
    hops = [h for value in forwarded_for for h in value.split(",") if h.strip()]
    for hop in reversed(hops):
        hop_ip = _ip(hop)
        if hop_ip is None:
            break
        client = hop_ip
        if not any(hop_ip in net for net in trusted):
            break
    return _counted(client)


def _client(request: Request, trusted: list[Network]) -> str:
    peer = request.client.host if request.client else None
    return client_address(peer, request.headers.getlist("x-forwarded-for"), trusted)


_SCOPE_OF: dict[Callable[..., Any], KeyScope] = {}  # each `require` dependency → its scope, for `KeyGateMiddleware`


def route_scope(route: object) -> KeyScope | None:
    """The scope a route's `require` dependency demands (None: an open route, such as /healthz or static files)."""
    stack = [route.dependant] if isinstance(route, APIRoute) else []
    while stack:
        dependant = stack.pop()
        if dependant.call is not None and dependant.call in _SCOPE_OF:
            return _SCOPE_OF[dependant.call]
        stack.extend(dependant.dependencies)
    return None


def require(scope: KeyScope) -> object:
    """The dependency of a route that needs `scope`: the principal `serving.gate.KeyGateMiddleware` admitted
    (authenticated and charged from the headers, before the body was read), or, where no gate ran (no keys, or
    an app without the middleware), one admitted here."""

    async def dependency(
        request: Request,
        bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
        api_key: Annotated[str | None, Depends(_api_key)],
    ) -> Principal:
        state = request.scope.get("state") or {}
        admitted = state.get(PRINCIPAL_STATE)
        if isinstance(admitted, Principal) and state.get(PRINCIPAL_SCOPE_STATE) == scope:
            return admitted
        guard = get_guard(request)
        client = _client(request, guard.trusted)
        key = api_key or (bearer.credentials if bearer else None)
        return guard.admit(key, scope, client, scope == "suggest" and suggests_with_lm(request.app))

    _SCOPE_OF[dependency] = scope
    return Depends(dependency)


SearchAuth = Annotated[Principal, require("search")]
SuggestAuth = Annotated[Principal, require("suggest")]
SummarizeAuth = Annotated[Principal, require("summarize")]
EventsAuth = Annotated[Principal, require("events")]
AdminAuth = Annotated[Principal, require("admin")]
