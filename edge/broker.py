"""An embedded MQTT broker for the quick start, used only when no ``mqtt.host`` is configured.

A local ``mosquitto`` binary is preferred (started on a free loopback port); without one,
amqtt (``pip install emotion-edge[demo]``) runs in a thread of this process.
``EMOTION_EDGE_EMBEDDED_BROKER=amqtt`` (or ``mosquitto``) forces the choice.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


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


def _die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that has Linux send the broker SIGTERM when the daemon dies, however it dies.

    A clean exit stops the broker in :meth:`EmbeddedBroker.stop`; this covers the rest (SIGKILL, a
    crash), which would otherwise leave a broker running with nobody to stop it. None off Linux.
    Linux ties the signal to the thread that starts the child, so start it from the event loop's
    thread, not a worker thread that may end first.
    """
    if not sys.platform.startswith("linux"):
        return None
    # Looked up before the fork: between fork and exec the child should do as little as possible.
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    daemon = os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != daemon:  # the daemon died before prctl took effect: no signal will come
            os._exit(1)

    return preexec


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
        lines = [f"listener {self.port} {self.host}", "allow_anonymous true", "persistence false"]
        if os.geteuid() == 0:
            # As root, mosquitto switches to its own user, and Linux clears the parent-death signal on
            # that switch. This broker is the daemon's helper on loopback: it runs as the daemon does.
            lines.append("user root")
        conf.write_text("\n".join(lines) + "\n")
        self._proc = subprocess.Popen(
            [exe, "-c", str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            # Its own session: Ctrl-C in the terminal reaches the daemon, which then stops the broker
            # after its last messages, instead of both at once.
            start_new_session=True,
            preexec_fn=_die_with_parent(),
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
        try:
            if self._proc is not None:
                await asyncio.to_thread(_end, self._proc)
            if self._amqtt is not None and self._amqtt_loop is not None:
                fut = asyncio.run_coroutine_threadsafe(self._amqtt.shutdown(), self._amqtt_loop)
                with contextlib.suppress(Exception):
                    await asyncio.wrap_future(fut)
                self._amqtt_loop.call_soon_threadsafe(self._amqtt_loop.stop)
        finally:
            if self._tmp is not None:
                self._tmp.cleanup()


def _end(proc: subprocess.Popen[bytes], timeout_s: float = 5.0) -> None:
    """SIGTERM, and SIGKILL for a broker that does not exit in time: it must not outlive the daemon."""
    proc.terminate()
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
