"""Who may talk to the server, and which requests may change anything.

* Loopback by default; the ``Host`` header must then name the loopback (so a
  page on another site cannot reach the server through DNS rebinding).
* Any other bind needs a token: ``Authorization: Bearer T`` or ``?token=T``
  (which also sets an HttpOnly cookie, so the page's own requests carry it).
* State changes are POST only, and a POST must come from the page itself: a
  custom ``X-Pliny-Action`` header (a cross-site form or fetch cannot send one
  without a CORS preflight, which this server never grants) and, when the
  browser sends ``Origin``, an origin equal to this server's host and port.
"""

from __future__ import annotations

import hmac
import ipaddress
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

COOKIE = "pliny_token"
ACTION_HEADER = "x-pliny-action"
LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def host_name(netloc: str) -> str:
    """``host`` of ``host:port`` / ``[v6]:port``."""
    return (urlsplit("//" + netloc).hostname or "").lower()


class Guard:
    """ASGI middleware: token, Host and CSRF checks before any route runs."""

    def __init__(self, app: ASGIApp, token: str | None, loopback_only: bool) -> None:
        self.app, self.token, self.loopback_only = app, token, loopback_only

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        refusal = self.refusal(request)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        if self.token and request.query_params.get("token") == self.token:
            await self.app(scope, receive, _with_cookie(send, self.token))
            return
        await self.app(scope, receive, send)

    def refusal(self, request: Request) -> Response | None:
        host = host_name(request.headers.get("host", ""))
        if self.loopback_only and not is_loopback(host):
            return _error(421, f"host {host!r} is not served here (loopback only)")
        if self.token and not self._authorized(request):
            return _error(401, "a token is required: Authorization: Bearer TOKEN or ?token=TOKEN")
        if request.method not in ("GET", "HEAD"):
            if request.headers.get(ACTION_HEADER) != "1":
                return _error(403, "actions must come from the Pliny page (X-Pliny-Action)")
            origin = request.headers.get("origin")
            here = request.headers.get("host", "").lower()
            if origin and urlsplit(origin).netloc.lower() != here:
                return _error(403, f"cross-origin request from {origin} refused")
        return None

    def _authorized(self, request: Request) -> bool:
        given = request.query_params.get("token") or request.cookies.get(COOKIE) or ""
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            given = auth[7:].strip()
        return hmac.compare_digest(given.encode(), (self.token or "").encode())


def _error(status: int, message: str) -> Response:
    return JSONResponse({"error": message}, status_code=status)


def _with_cookie(send: Send, token: str) -> Send:
    cookie = f"{COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/".encode()

    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            message.setdefault("headers", []).append((b"set-cookie", cookie))
        await send(message)

    return wrapped
