"""The live page: an aiohttp server inside the daemon (only with ``[web] enabled = true``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from edge.config import ConfigError
from edge.config.web import NEEDS_AIOHTTP

if TYPE_CHECKING:
    from edge.service.supervisor import Service
    from edge.web.server import WebServer


async def start_web(service: Service) -> WebServer:
    """The live page, listening; ConfigError naming ``web.enabled`` when aiohttp is not installed."""
    try:
        from edge.web.server import WebServer
    except ModuleNotFoundError as exc:
        if exc.name is None or not exc.name.startswith("aiohttp"):
            raise
        raise ConfigError([("web.enabled", NEEDS_AIOHTTP)]) from None
    server = WebServer(service)
    await server.start()
    return server
