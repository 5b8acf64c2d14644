"""The aiohttp application: the page, its state, its switches and the live WebSocket."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from importlib import resources
from typing import TYPE_CHECKING, Any

from aiohttp import WSCloseCode, WSMsgType, web

from edge.web.auth import Auth
from edge.web.calibration import CalibrationApi
from edge.web.live import LiveFeed, Viewer

if TYPE_CHECKING:
    from edge.service.supervisor import Service

log = logging.getLogger(__name__)

STATIC = {
    "index.html": "text/html",
    "app.js": "text/javascript",
    "style.css": "text/css",
}
# Everything comes from this daemon: no CDN, no inline script, nothing the page could leak to.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
# Open pages are told to go (close 1001) first; a request still running after this is cut off.
SHUTDOWN_TIMEOUT_S = 2.0
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def _static_files() -> dict[str, bytes]:
    folder = resources.files("edge.web") / "static"
    return {name: (folder / name).read_bytes() for name in STATIC}


class WebServer:
    def __init__(self, service: Service) -> None:
        self.service = service
        self.config = service.config.web
        password = self.config.password
        self.auth = Auth(password.get_secret_value() if password is not None else None)
        self.feed = LiveFeed(service)
        self.calibration = CalibrationApi(service)
        self.files = _static_files()
        self.commands = 0
        self._runner: web.AppRunner | None = None
        self._senders: set[asyncio.Task[None]] = set()
        self._sockets: set[web.WebSocketResponse] = set()

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self.auth.middleware], client_max_size=4096)
        app.router.add_get("/", self._index)
        app.router.add_get("/static/{name}", self._static)
        app.router.add_get("/favicon.ico", self._no_icon)
        app.router.add_get("/api/state", self._state)
        app.router.add_post("/api/switch/{name}", self._switch)
        app.router.add_get("/ws", self._websocket)
        self.calibration.add_routes(app)
        app.on_response_prepare.append(self._headers)
        return app

    async def start(self) -> None:
        # No access log: a line per request would flood the journal, and URLs may carry tokens.
        self._runner = web.AppRunner(
            self.app(), access_log=None, handle_signals=False, shutdown_timeout=SHUTDOWN_TIMEOUT_S
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.host, self.config.port, reuse_address=True)
        await site.start()
        self.service.supervisor.start("web-live", self.feed.run, group="web")
        auth = "password" if self.config.password is not None else "no password, loopback only"
        log.info("live page on %s (%s)", self.config.url, auth)

    async def stop(self) -> None:
        await self.service.supervisor.stop_group("web")
        for ws in list(self._sockets):
            await ws.close(code=WSCloseCode.GOING_AWAY, message=b"daemon stopping")
        if self._runner is not None:
            await self._runner.cleanup()  # closes open WebSockets
            self._runner = None

    def stats(self) -> dict[str, Any]:
        return {
            **self.feed.stats_dict(),
            "commands": self.commands + self.calibration.commands,
            **vars(self.auth.stats),
        }

    # --- handlers ----------------------------------------------------------------------

    async def _headers(self, request: web.Request, response: web.StreamResponse) -> None:
        response.headers.update(SECURITY_HEADERS)

    async def _index(self, request: web.Request) -> web.Response:
        response = web.Response(body=self.files["index.html"], content_type="text/html", charset="utf-8")
        self.auth.set_cookie(response)
        return response

    async def _static(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in STATIC or name == "index.html":
            raise web.HTTPNotFound()
        return web.Response(body=self.files[name], content_type=STATIC[name], charset="utf-8")

    async def _no_icon(self, request: web.Request) -> web.Response:
        return web.Response(status=204)  # browsers ask for it; a 404 would be logged as an error

    async def _state(self, request: web.Request) -> web.Response:
        return web.json_response(self.service.pipeline.state_body())

    async def _switch(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        publisher = self.service.publisher
        if name not in self.service.switches or publisher is None:
            raise web.HTTPNotFound(text=f"no switch {name[:32]!r}\n")
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError):
            raise web.HTTPBadRequest(text='expected JSON {"on": true|false}\n') from None
        if not isinstance(body, dict) or not isinstance(body.get("on"), bool) or len(body) != 1:
            raise web.HTTPBadRequest(text='expected JSON {"on": true|false}\n')
        self.commands += 1
        # The MQTT commands' own path: coalesced, rate-limited, saved, confirmed on the retained topic.
        publisher.submit(name, body["on"])
        return web.json_response({"switch": name, "on": body["on"]}, status=202)

    async def _websocket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=20.0, max_msg_size=1024)
        await ws.prepare(request)
        viewer = self.feed.join()
        self._sockets.add(ws)
        sender = asyncio.create_task(self._send(ws, viewer), name="web-viewer")
        self._senders.add(sender)
        try:
            async for message in ws:  # the page sends nothing; reading is how a close is noticed
                if message.type == WSMsgType.ERROR:
                    break
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender
            self._senders.discard(sender)
            self._sockets.discard(ws)
            self.feed.leave(viewer)
        return ws

    async def _send(self, ws: web.WebSocketResponse, viewer: Viewer) -> None:
        stats = self.feed.stats
        try:
            while not ws.closed:
                for message in await viewer.take():
                    if isinstance(message, bytes):
                        await ws.send_bytes(message)
                        stats.frames_served += 1
                    else:
                        await ws.send_str(message)
        except (ConnectionError, RuntimeError) as exc:
            log.debug("live page viewer went away: %s", exc)
            await ws.close()
