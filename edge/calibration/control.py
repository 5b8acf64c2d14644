"""The local control channel of calibration: a UNIX socket speaking JSON lines.

The socket sits in the state directory as ``calibration.sock``, mode 0600: only the daemon's own
user (and root) may start or cancel a session. It is created under a umask of 0o177, so it is
never reachable by others, not even between ``bind`` and ``chmod``.

Requests, one JSON object per line::

    {"cmd": "start"}    -> {"ok": true, ...snapshot}     then snapshots, as for "watch"
    {"cmd": "cancel"}   -> {"ok": true, "cancelled": true|false}
    {"cmd": "status"}   -> {"ok": true, ...snapshot}
    {"cmd": "watch"}    -> {"ok": true} then one {"type": "progress", ...} line per change

A refused request answers ``{"ok": false, "error": "..."}``. A watcher that reads slowly only
misses intermediate snapshots (each replaces the last unsent one; counted as ``superseded``); the
final snapshot is always the newest, so it is never lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from edge.calibration.manager import CalibrationBusy, CalibrationManager
from edge.calibration.session import FINAL_PHASES
from edge.queues import LatestSlot

log = logging.getLogger(__name__)

MAX_LINE = 4096
SOCKET_MODE = 0o600


class ControlServer:
    def __init__(self, manager: CalibrationManager, path: Path) -> None:
        self.manager = manager
        self.path = path
        self._server: asyncio.Server | None = None
        self._clients: set[asyncio.Task[Any]] = set()
        self.requests = 0
        self.rejected = 0
        self.superseded = 0  # snapshots a slow watcher never saw (a newer one replaced them)

    async def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # A socket left by a crashed daemon: only one daemon runs per state directory (instance lock).
        self.path.unlink(missing_ok=True)
        old = os.umask(0o177)
        try:
            self._server = await asyncio.start_unix_server(self._serve, path=str(self.path), limit=MAX_LINE)
        finally:
            os.umask(old)
        os.chmod(self.path, SOCKET_MODE)
        log.info("calibration control socket: %s", self.path)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._clients):
                task.cancel()
            await asyncio.gather(*self._clients, return_exceptions=True)
            await self._server.wait_closed()
            self._server = None
            # Only our own socket: a daemon refused by the instance lock must not remove the other's.
            self.path.unlink(missing_ok=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._clients.add(task)
        watcher: asyncio.Task[None] | None = None
        try:
            while True:
                try:
                    line = await reader.readline()
                except (ValueError, asyncio.LimitOverrunError):
                    await _send(writer, {"ok": False, "error": f"request longer than {MAX_LINE} bytes"})
                    return
                if not line:
                    return
                self.requests += 1
                reply, watch = self._handle(line)
                await _send(writer, reply)
                if watch and watcher is None:
                    watcher = asyncio.create_task(self._watch(writer))
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            if watcher is not None:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                    await watcher
            self._clients.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    def _handle(self, line: bytes) -> tuple[dict[str, Any], bool]:
        try:
            request = json.loads(line)
            cmd = request["cmd"] if isinstance(request, dict) else None
        except (ValueError, KeyError):
            cmd = None
        if cmd == "start":
            try:
                return {"ok": True, **self.manager.start()}, True
            except CalibrationBusy as exc:
                self.rejected += 1
                return {"ok": False, "error": str(exc)}, False
        if cmd == "cancel":
            return {"ok": True, "cancelled": self.manager.cancel()}, False
        if cmd == "status":
            return {"ok": True, **self.manager.status()}, False
        if cmd == "watch":
            return {"ok": True}, True
        self.rejected += 1
        return {"ok": False, "error": 'unknown request: send {"cmd": "start|cancel|status|watch"}'}, False

    async def _watch(self, writer: asyncio.StreamWriter) -> None:
        slot: LatestSlot[dict[str, Any]] = LatestSlot()
        self.manager.listeners.add(slot)
        try:
            slot.put(self.manager.status())
            while True:
                await _send(writer, await slot.get())
        finally:
            self.manager.listeners.discard(slot)
            self.superseded += slot.stats.superseded


async def _send(writer: asyncio.StreamWriter, message: dict[str, Any]) -> None:
    writer.write((json.dumps(message) + "\n").encode())
    await writer.drain()


# --- client side (the terminal UI, tests) -------------------------------------------------


class ControlClient:
    """One connection to a daemon's control socket."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, path: Path) -> ControlClient:
        """Raises OSError (FileNotFoundError, ConnectionRefusedError, PermissionError) without a daemon."""
        reader, writer = await asyncio.open_unix_connection(str(path), limit=1 << 20)
        return cls(reader, writer)

    async def request(self, cmd: str) -> dict[str, Any]:
        await self.send(cmd)
        return await self.receive()

    async def send(self, cmd: str) -> None:
        await _send(self.writer, {"cmd": cmd})

    async def receive(self) -> dict[str, Any]:
        line = await self.reader.readline()
        if not line:
            raise ConnectionError("the daemon closed the control connection")
        message: dict[str, Any] = json.loads(line)
        return message

    async def snapshots(self) -> AsyncIterator[dict[str, Any]]:
        """Progress snapshots until the session reaches a final phase (that one included)."""
        while True:
            snap = await self.receive()
            if snap.get("type") != "progress":
                continue
            yield snap
            if snap.get("phase") in FINAL_PHASES:
                return

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()
