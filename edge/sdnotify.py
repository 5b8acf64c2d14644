"""systemd readiness/watchdog notifications, without a libsystemd dependency.

The protocol is one datagram of newline-separated ``KEY=VALUE`` lines sent to the AF_UNIX socket named by
``$NOTIFY_SOCKET`` (see sd_notify(3)); a plain socket keeps the daemon installable on hosts and in wheels
where the libsystemd bindings are not available.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["ProgressWatchdog", "SystemdNotifier"]

log = logging.getLogger(__name__)

FieldValue = str | int | float | bool


class SystemdNotifier:
    """Sends sd_notify messages; every method is a cheap no-op when not started by systemd."""

    def __init__(self, socket_path: str | None = None) -> None:
        self._path = os.environ.get("NOTIFY_SOCKET") if socket_path is None else socket_path
        self._address = _socket_address(self._path)
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        # A daemon run by hand (or under a service manager without the socket) would otherwise log the
        # same failure on every watchdog tick.
        self._logged_failure = False

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def notify(self, **fields: FieldValue) -> bool:
        """``notify(READY=1, STATUS="...")``; booleans are sent as 1/0 like libsystemd's callers expect."""
        return self.send(*(f"{key}={_format_value(value)}" for key, value in fields.items()))

    def send(self, *lines: str) -> bool:
        """Send ``KEY=VALUE`` lines as one datagram; returns False (never raises) if it was not delivered."""
        for line in lines:
            key, sep, _ = line.partition("=")
            # A newline would let text (e.g. an exception message in STATUS) inject other assignments.
            if not sep or not key or "\n" in line:
                raise ValueError(f"not a single-line KEY=VALUE notification: {line!r}")
        if self._address is None or not lines:
            return False
        payload = "\n".join(lines).encode("utf-8")
        with self._lock:
            try:
                if self._sock is None:
                    self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.sendto(payload, self._address)
            except OSError as exc:
                self._close_locked()  # the next send starts from a fresh socket
                if not self._logged_failure:
                    self._logged_failure = True
                    log.debug("sd_notify to %r failed (logged once): %s", self._path, exc)
                return False
        return True

    def ready(self) -> bool:
        return self.send("READY=1")

    def status(self, text: str) -> bool:
        return self.send("STATUS=" + " ".join(text.splitlines()))

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")

    def stopping(self) -> bool:
        return self.send("STOPPING=1")

    def reloading(self) -> bool:
        """Start of a reload; send ``ready()`` when it is done.

        Type=notify-reload rejects RELOADING=1 without a MONOTONIC_USEC taken at the moment the reload began,
        which is how systemd tells this reload apart from an earlier one.
        """
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.send("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def watchdog_interval_s(self) -> float | None:
        """How often to send WATCHDOG=1: half of WatchdogSec=, as sd_watchdog_enabled(3) recommends.

        None when there is no watchdog for this process: no notify socket, no or malformed WATCHDOG_USEC, or
        WATCHDOG_PID naming another process (the variables leaked to a child through its environment).
        """
        if not self.enabled:
            return None
        pid = os.environ.get("WATCHDOG_PID")
        if pid is not None:
            try:
                if int(pid) != os.getpid():
                    return None
            except ValueError:
                return None
        try:
            usec = int(os.environ.get("WATCHDOG_USEC", ""))
        except ValueError:
            return None
        if usec <= 0:
            return None
        return usec / 2_000_000

    def close(self) -> None:
        with self._lock:
            self._close_locked()

    def _close_locked(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> SystemdNotifier:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _socket_address(path: str | None) -> str | None:
    if not path:
        return None
    if path.startswith("@"):
        # Linux abstract namespace: systemd writes the leading NUL as '@' so it survives the environment.
        return "\0" + path[1:]
    if path.startswith("/"):
        return path
    # e.g. systemd >= 254's "vsock:CID:PORT" for VMs; not a case this daemon runs in.
    log.debug("unsupported NOTIFY_SOCKET address %r; notifications disabled", path)
    return None


def _format_value(value: FieldValue) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


@dataclass
class _Stage:
    max_silence_s: float
    last_beat: float
    paused: bool = False


class ProgressWatchdog:
    """Tracks whether every pipeline stage is still making progress.

    systemd's watchdog only proves the event loop runs; a stage stuck on a dead serial port or a hung
    camera would keep a timer-driven ping going forever. Pinging only while ``healthy()`` lets systemd
    restart the daemon when real work stops.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._stages: dict[str, _Stage] = {}
        # Stages beat from reader threads as well as from the event loop.
        self._lock = threading.Lock()

    def register(self, name: str, max_silence_s: float) -> None:
        """Start tracking ``name``; registering again (a restarted stage) resets it with the new limit."""
        if not max_silence_s > 0:
            raise ValueError(f"max_silence_s must be > 0, got {max_silence_s!r}")
        with self._lock:
            # Counting from registration gives a stage one full window to produce its first beat.
            self._stages[name] = _Stage(max_silence_s, self._clock())

    def unregister(self, name: str) -> None:
        with self._lock:
            self._stages.pop(name, None)

    def beat(self, name: str) -> None:
        with self._lock:
            self._stage(name).last_beat = self._clock()

    def pause(self, name: str) -> None:
        with self._lock:
            self._stage(name).paused = True

    def resume(self, name: str) -> None:
        with self._lock:
            stage = self._stage(name)
            if stage.paused:
                stage.paused = False
                # Without a fresh window a stage paused for longer than its limit would be stalled at once.
                stage.last_beat = self._clock()

    def healthy(self, now: float | None = None) -> tuple[bool, list[str]]:
        """``(True, [])``, or ``(False, names)`` of unpaused stages silent for longer than their limit."""
        with self._lock:
            t = self._clock() if now is None else now
            stalled = [
                name
                for name, stage in self._stages.items()
                if not stage.paused and t - stage.last_beat > stage.max_silence_s
            ]
        return not stalled, stalled

    def _stage(self, name: str) -> _Stage:
        try:
            return self._stages[name]
        except KeyError:
            raise KeyError(f"unknown watchdog stage {name!r}; register() it first") from None
