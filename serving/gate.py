"""What the API checks before a route reads a request body: the key (from the headers alone), the body's size
and the time it takes to arrive.

FastAPI reads and parses a body before it solves a route's dependencies, so `serving.auth.require` alone would
parse (and wait for) the body of a caller with no key: malformed JSON got 422 instead of 401, and a slow sender
held a connection open as long as it liked. `KeyGateMiddleware` answers 401/403 (429 past the unauthenticated
quota) and charges every quota (429) from the headers, so a malformed body still counts; the route's `require`
dependency reuses the principal it admitted (`scope["state"]`) instead of authenticating and charging again.
`BodyCapMiddleware` refuses a body over the cap (413) or one that does not arrive in time (408). A refusal sent
while the client still has a body to send says `Connection: close`, so the server drops the connection instead of
waiting for the rest.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import fastapi.routing
from fastapi import HTTPException
from fastapi.routing import APIRoute
from fastapi.security.utils import get_authorization_scheme_param
from starlette.datastructures import Headers
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving.auth import PRINCIPAL_SCOPE_STATE, PRINCIPAL_STATE, Guard, client_address, route_scope, suggests_with_lm
from serving.security import Scope as KeyScope


class BodyTooLarge(HTTPException):
    """Raised while a body is read: an HTTPException, so FastAPI's body parser lets it through as a 413."""

    def __init__(self, cap: int) -> None:
        super().__init__(413, f"the request body is larger than {cap} bytes", headers={"Connection": "close"})


class BodyTimeout(HTTPException):
    """Raised while a body is read too slowly: FastAPI's body parser lets it through as a 408."""

    def __init__(self, timeout_s: float) -> None:
        detail = f"the request body did not arrive within {timeout_s:g} s"
        super().__init__(408, detail, headers={"Connection": "close"})


def _body_pending(headers: Headers) -> bool:
    """Whether the client declared a body (it may still be sending it)."""
    length = headers.get("content-length", "")
    return (length.isascii() and length.isdigit() and int(length) > 0) or "transfer-encoding" in headers


async def _reject(send: Send, exc: HTTPException, close: bool) -> None:
    payload = json.dumps({"detail": exc.detail}, separators=(",", ":")).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    headers += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (exc.headers or {}).items()]
    if close and not any(k == b"connection" for k, _ in headers):
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": exc.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


# FastAPI versions that keep included routers whole (not copied into the app's route list) list every route, with
# the path its inclusion gives it, through `iter_route_contexts`; older ones have the routes themselves in the list
_ROUTE_CONTEXTS = getattr(fastapi.routing, "iter_route_contexts", None)


def api_routes(app: Any) -> list[tuple[Any, KeyScope | None]]:
    """Every API route of `app`, in the router's order, as something whose `matches(scope)` is the router's own
    test, with the scope its `require` dependency demands (None: open)."""
    routes = list(getattr(app, "routes", []))
    found: list[tuple[Any, KeyScope | None]] = []
    for item in _ROUTE_CONTEXTS(routes) if _ROUTE_CONTEXTS is not None else routes:
        route = getattr(item, "original_route", item)
        if isinstance(route, APIRoute):
            found.append((item, route_scope(route)))
    return found


def request_key(headers: Headers) -> str | None:
    """The API key as the route dependencies read it: X-API-Key, else `Authorization: Bearer <key>`."""
    api_key = headers.get("x-api-key")
    if api_key:
        return api_key
    scheme, credentials = get_authorization_scheme_param(headers.get("authorization"))
    return credentials if scheme.lower() == "bearer" and credentials else None


class KeyGateMiddleware:
    """401 / 403 / 429 for a route that needs a key, decided from the request line and headers before the route
    runs (and so before its body is read or parsed): the key, its scope and every quota (`Guard.admit`). Open
    routes (health, docs, the widget) and a server with no keys pass straight through."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._routes: list[tuple[Any, KeyScope | None]] | None = None

    def _needed(self, app: Any, scope: Scope) -> tuple[KeyScope | None, Any]:
        """The scope of the route the router will pick (its first full match; None: open or no route), and it."""
        if self._routes is None:  # routes are all in place by the first request
            self._routes = api_routes(app)
        for route, needed in self._routes:
            if route.matches(scope)[0] is Match.FULL:
                return needed, getattr(route, "original_route", route)
        return None, None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        app = scope.get("app")
        guard = getattr(getattr(app, "state", None), "guard", None)
        if scope["type"] != "http" or not isinstance(guard, Guard) or not guard.keys.enabled:
            await self.app(scope, receive, send)
            return
        needed, route = self._needed(app, scope)
        if needed is None:
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        peer = scope["client"][0] if scope.get("client") else None
        client = client_address(peer, headers.getlist("x-forwarded-for"), guard.trusted)
        try:
            principal = guard.admit(request_key(headers), needed, client, needed == "suggest" and suggests_with_lm(app))
        except HTTPException as exc:
            scope["route"] = route  # metrics count the refusal under its route, not as unmatched
            await _reject(send, exc, close=_body_pending(headers))
            return
        state = scope.setdefault("state", {})
        state[PRINCIPAL_STATE], state[PRINCIPAL_SCOPE_STATE] = principal, needed  # the route's `require` reuses it
        await self.app(scope, receive, send)


class BodyCapMiddleware:
    """413 for a request body over `cap` bytes, before any route parses it: the declared Content-Length is
    checked first, and a chunked body is counted as it arrives. 408 for a body that has not all arrived within
    `timeout_s` of the request's start (None: no limit)."""

    def __init__(self, app: ASGIApp, cap: int, timeout_s: float | None = None) -> None:
        self.app = app
        self.cap = cap
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.cap:
            await _reject(send, BodyTooLarge(self.cap), close=True)
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_s if self.timeout_s is not None else None
        seen = 0
        complete = False  # the whole body (or a disconnect) arrived: later receives wait without a deadline
        started = False

        async def counted() -> Message:
            nonlocal seen, complete
            if complete or deadline is None:
                message = await receive()
            else:
                try:
                    async with asyncio.timeout_at(deadline):
                        message = await receive()
                except TimeoutError:
                    raise BodyTimeout(self.timeout_s or 0) from None
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                complete = not message.get("more_body", False)
                if seen > self.cap:
                    raise BodyTooLarge(self.cap)
            elif message["type"] == "http.disconnect":
                complete = True
            return message

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, tracked)
        except (BodyTooLarge, BodyTimeout) as exc:
            if started:
                raise
            await _reject(send, exc, close=True)
