"""Who may use the live page, and which requests are really the page's own.

* With a password (required off loopback): HTTP Basic with any user name, or ``Authorization: Bearer``.
  Both are compared in constant time; failures are counted, never logged with what was sent.
* Without one (loopback only): the Host header must name this machine, so a web site that rebinds its DNS
  name to 127.0.0.1 cannot read the page from the visitor's browser.
* Cross-site requests: a browser sends Basic credentials along with any request, even one a foreign page
  starts. So a POST, and the WebSocket handshake (which the same-origin policy does not cover), must carry
  an Origin equal to the page's own; a POST must also echo the CSRF cookie (SameSite=Strict, so a foreign
  site never gets it) in a header. A Bearer token is never sent by a browser on its own: no check needed.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from aiohttp import hdrs, web

from edge.config.web import is_loopback

CSRF_COOKIE = "ee_csrf"
CSRF_HEADER = "X-CSRF-Token"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class AuthStats:
    unauthorized: int = 0  # 401: no or wrong credentials
    bad_host: int = 0  # 403: Host header not this machine (DNS rebinding) on a page without password
    cross_site: int = 0  # 403: POST or WebSocket from another origin, or without the CSRF token


class Auth:
    def __init__(self, password: str | None) -> None:
        if password == "":
            raise ValueError("an empty password would let an empty token in")
        self._password = password.encode() if password is not None else None
        self.csrf_token = secrets.token_urlsafe(32)  # per process: a restart invalidates old pages
        self.stats = AuthStats()

    def _authorized(self, request: web.Request) -> tuple[bool, bool]:
        """(authorized, by a bearer token)."""
        if self._password is None:
            return True, False
        header = request.headers.get(hdrs.AUTHORIZATION, "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer":
            return hmac.compare_digest(value.strip().encode(), self._password), True
        if scheme.lower() == "basic":
            try:
                decoded = base64.b64decode(value.strip(), validate=True)
            except (binascii.Error, ValueError):
                return False, False
            _, _, password = decoded.partition(b":")
            return hmac.compare_digest(password, self._password), False
        return False, False

    def _same_origin(self, request: web.Request) -> bool:
        origin = request.headers.get(hdrs.ORIGIN)
        return origin is not None and urlsplit(origin).netloc == request.host

    def _host_is_local(self, request: web.Request) -> bool:
        host = request.host
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        # The same test as the config's: any loopback address (127/8, ::1) or "localhost".
        return is_loopback(name.strip("[]").lower())

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if self._password is None and not self._host_is_local(request):
            self.stats.bad_host += 1
            raise web.HTTPForbidden(text="this page answers only to localhost (set web.password_file)\n")
        ok, bearer = self._authorized(request)
        if not ok:
            self.stats.unauthorized += 1
            raise web.HTTPUnauthorized(
                text="password required\n",
                headers={hdrs.WWW_AUTHENTICATE: 'Basic realm="emotion-edge", charset="UTF-8"'},
            )
        websocket = request.headers.get(hdrs.UPGRADE, "").lower() == "websocket"
        if not bearer and (request.method == "POST" or websocket) and not self._same_origin(request):
            self.stats.cross_site += 1
            raise web.HTTPForbidden(text="cross-site request refused\n")
        if not bearer and request.method == "POST":
            sent = request.headers.get(CSRF_HEADER, "")
            cookie = request.cookies.get(CSRF_COOKIE, "")
            if not (
                hmac.compare_digest(sent.encode(), self.csrf_token.encode())
                and hmac.compare_digest(cookie.encode(), self.csrf_token.encode())
            ):
                self.stats.cross_site += 1
                raise web.HTTPForbidden(text="missing or stale CSRF token: reload the page\n")
        return await handler(request)

    def set_cookie(self, response: web.StreamResponse) -> None:
        # Read by the page's script (not HttpOnly) to echo it; Strict: never sent by a foreign site.
        response.set_cookie(CSRF_COOKIE, self.csrf_token, samesite="Strict", httponly=False, path="/")
