"""The page's calibration view: start and cancel a session, list, activate and roll back personal models.

Every POST here passes the same checks as the switches (the app-wide :class:`edge.web.auth.Auth`
middleware: password, same Origin, CSRF token). The session is the daemon's own
(:class:`edge.calibration.manager.CalibrationManager`, the one the control socket and the Home
Assistant buttons drive); its snapshots reach the page over the live WebSocket (``{"t":
"calibration"}``, sent by :class:`edge.web.live.LiveFeed` only while a page is open).

Activate and rollback take the path of ``emotion-edge models activate|rollback``: the model store
changes the active pointer, then the daemon reloads as on SIGHUP (:meth:`Service.request_reload`),
which swaps the model in. Refusals come back as ``{"error": "..."}`` with a 4xx status.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from aiohttp import web

from edge.calibration.manager import CalibrationBusy
from edge.calibration.store import StoreError, UnknownModel

if TYPE_CHECKING:
    from edge.service.supervisor import Service


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


class CalibrationApi:
    def __init__(self, service: Service) -> None:
        self.service = service
        self.calibration = service.calibration
        self.commands = 0

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/api/calibration/start", self._start)
        app.router.add_post("/api/calibration/cancel", self._cancel)
        app.router.add_get("/api/models", self._models)
        app.router.add_post("/api/models/rollback", self._rollback)
        app.router.add_post("/api/models/{model_id}/activate", self._activate)

    async def _start(self, request: web.Request) -> web.Response:
        self.commands += 1
        try:
            return web.json_response(self.calibration.manager.start(), status=202)
        except CalibrationBusy as exc:
            return _error(409, str(exc))

    async def _cancel(self, request: web.Request) -> web.Response:
        self.commands += 1
        if not self.calibration.manager.cancel():
            return _error(409, "no calibration session to cancel (none running, or already installing)")
        return web.json_response({"cancelled": True})

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response(await asyncio.to_thread(self._list))

    def _list(self) -> dict[str, Any]:
        store = self.calibration.store
        models = store.list_models()
        return {
            "active": store.active_id(),
            "in_use": store.in_use(self.service.config),
            "models": [
                {k: v for k, v in m.as_json().items() if k not in ("model", "recording")} for m in models
            ],
        }

    async def _activate(self, request: web.Request) -> web.Response:
        self.commands += 1
        model_id = request.match_info["model_id"]
        store = self.calibration.store
        try:
            await asyncio.to_thread(store.activate, model_id)
        except UnknownModel as exc:
            return _error(404, str(exc))
        except (StoreError, OSError) as exc:
            return _error(500, f"cannot update the models: {exc}")
        listing = await asyncio.to_thread(self._list)
        mine = [m for m in listing["models"] if m["id"] == model_id and not m["passed"]]
        refused: list[str] = mine[0]["reasons"] if mine else []
        return self._changed(f"activated {model_id}", listing, refused)

    async def _rollback(self, request: web.Request) -> web.Response:
        self.commands += 1
        store = self.calibration.store

        def rollback() -> tuple[str | None, str | None]:
            return store.active_id(), store.rollback()

        try:
            before, target = await asyncio.to_thread(rollback)
        except (StoreError, OSError) as exc:
            return _error(500, f"cannot update the models: {exc}")
        if before is None and target is None:
            return _error(409, "nothing to roll back: the shipped generic model is already active")
        listing = await asyncio.to_thread(self._list)
        return self._changed(f"rolled back to {target or 'the shipped generic model'}", listing, [])

    def _changed(self, message: str, listing: dict[str, Any], refused: list[str]) -> web.Response:
        # SIGHUP's reload: it resolves the active model and swaps it in between two chunks.
        self.service.request_reload()
        return web.json_response({"message": message, "reasons": refused, **listing})
