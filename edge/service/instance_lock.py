"""One daemon per state directory.

Two daemons sharing an outbox fight over the MQTT client id and the serial port and send
duplicates. The lock is an ``flock`` on a file beside the outbox: the kernel releases it
when the process dies, however it dies, so a crash never leaves a stale lock behind.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path


class AlreadyRunning(RuntimeError):
    def __init__(self, path: Path, pid: str) -> None:
        who = f"PID {pid}" if pid else "another process"
        super().__init__(
            f"another emotion-edge ({who}) is using {path.parent} (lock {path.name}): stop it, "
            "or give this one its own outbox.path"
        )


class InstanceLock:
    def __init__(self, outbox_path: Path) -> None:
        self.path = outbox_path.with_name(outbox_path.name + ".lock")
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip()
            os.close(fd)
            raise AlreadyRunning(self.path, holder) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock; the file stays (removing it would race)
            self._fd = None


def running_daemon(outbox_path: Path) -> int | None:
    """The PID of the daemon that holds the lock for ``outbox_path``, or None when none runs.

    Probes with a shared, non-blocking flock on a read-only descriptor: it never creates the file,
    never blocks, and is refused exactly while a daemon holds its exclusive lock.
    """
    path = outbox_path.with_name(outbox_path.name + ".lock")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.read(fd, 32).decode(errors="replace").strip()
            return int(text) if text.isdigit() else None
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
