"""An embedded MQTT broker for the quick start, used only when no ``mqtt.host`` is configured.

A local ``mosquitto`` binary is preferred (started on a free loopback port); without one,
amqtt (``pip install emotion-edge[demo]``) runs in a thread of this process.
``EMOTION_EDGE_EMBEDDED_BROKER=amqtt`` (or ``mosquitto``) forces the choice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import socket
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class BrokerUnavailable(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def find_mosquitto() -> str | None:
    return shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
    )


class EmbeddedBroker:
    def __init__(self) -> None:
        self.host = "127.0.0.1"
        self.port = 0
        self.kind = ""
        self._proc: subprocess.Popen[bytes] | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._thread: threading.Thread | None = None
        self._amqtt_loop: asyncio.AbstractEventLoop | None = None
        self._amqtt: Any = None

    async def start(self) -> tuple[str, int]:
        self.port = free_port()
        choice = os.environ.get("EMOTION_EDGE_EMBEDDED_BROKER", "auto")
        exe = find_mosquitto() if choice in ("auto", "mosquitto") else None
        if choice == "mosquitto" and exe is None:
            raise BrokerUnavailable("EMOTION_EDGE_EMBEDDED_BROKER=mosquitto but no mosquitto binary found")
        if exe:
            await self._start_mosquitto(exe)
        else:
            await self._start_amqtt()
        return self.host, self.port

    async def _start_mosquitto(self, exe: str) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="emotion-edge-broker-")
        conf = Path(self._tmp.name) / "mosquitto.conf"
        conf.write_text(f"listener {self.port} {self.host}\nallow_anonymous true\npersistence false\n")
        self._proc = subprocess.Popen(
            [exe, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        self.kind = "mosquitto"
        await self._wait_listening()

    async def _start_amqtt(self) -> None:
        try:
            from amqtt.broker import Broker
        except ImportError as exc:
            raise BrokerUnavailable(
                "no MQTT broker configured and none embedded: install mosquitto, or "
                "pip install 'emotion-edge[demo]' for the built-in one, or set mqtt.host"
            ) from exc
        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
        }
        ready = threading.Event()
        errors: list[BaseException] = []

        async def create_and_start() -> None:
            # amqtt looks up the running loop while constructing, so build it inside the loop.
            self._amqtt = Broker(config)
            await self._amqtt.start()

        def serve() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            self._amqtt_loop = loop
            try:
                loop.run_until_complete(create_and_start())
            except BaseException as exc:  # reported to the starting thread
                errors.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.close()

        self.kind = "amqtt"
        self._thread = threading.Thread(target=serve, name="embedded-broker", daemon=True)
        self._thread.start()
        await asyncio.to_thread(ready.wait, 10)
        if errors:
            raise BrokerUnavailable(f"embedded amqtt broker failed to start: {errors[0]}")
        # No probe connection here: start() returned, so the listener is up, and amqtt logs
        # an error for a client that connects without speaking MQTT.

    async def _wait_listening(self, timeout_s: float = 5.0) -> None:
        deadline = asyncio.get_running_loop().time() + timeout_s
        while asyncio.get_running_loop().time() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                err = self._proc.stderr.read().decode(errors="replace") if self._proc.stderr else ""
                raise BrokerUnavailable(f"embedded mosquitto exited: {err.strip()}")
            with contextlib.suppress(OSError), socket.create_connection((self.host, self.port), timeout=0.2):
                return
            await asyncio.sleep(0.05)
        raise BrokerUnavailable(f"embedded broker did not listen on {self.host}:{self.port}")

    async def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            await asyncio.to_thread(self._proc.wait, 5)
        if self._amqtt is not None and self._amqtt_loop is not None:
            fut = asyncio.run_coroutine_threadsafe(self._amqtt.shutdown(), self._amqtt_loop)
            with contextlib.suppress(Exception):
                await asyncio.wrap_future(fut)
            self._amqtt_loop.call_soon_threadsafe(self._amqtt_loop.stop)
        if self._tmp is not None:
            self._tmp.cleanup()
