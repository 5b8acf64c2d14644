"""Files the configuration names: checked before use, so a bad one is a config error naming its key.

A FIFO or a device must never be opened for reading here: opening a FIFO blocks until a writer comes (the
daemon or check-config would hang), reading /dev/zero never ends (MemoryError), and opening a serial port
resets the board on it. So every file is ``stat``-ed first and must be a regular file; it is then opened
with ``O_NONBLOCK`` and checked again on the descriptor, in case it was swapped in between.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

# A password, not a document: anything bigger is the wrong file.
MAX_SECRET_BYTES = 4096

_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


class FileProblem(Exception):
    """Why a named file cannot be used; the message starts with or contains the path."""


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a plain file")


def _not_regular(path: Path, mode: int) -> FileProblem:
    return FileProblem(f"{path} is {_kind(mode)}, not a regular file")


def _cannot_read(path: Path, exc: OSError) -> FileProblem:
    return FileProblem(f"cannot read {path}: {exc.strerror or type(exc).__name__}")


def _open_regular(path: Path) -> int:
    """A descriptor of ``path`` open for reading; raises FileProblem unless it is a readable regular file."""
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        raise _cannot_read(path, exc) from None
    if not stat.S_ISREG(mode):
        raise _not_regular(path, mode)
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except OSError as exc:
        raise _cannot_read(path, exc) from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise _not_regular(path, mode)
    return fd


def check_readable_file(path: Path) -> None:
    """Raise FileProblem unless ``path`` is a regular file this process can open for reading."""
    os.close(_open_regular(path))


def read_secret(path: Path, limit: int = MAX_SECRET_BYTES) -> str:
    """The text of a small secret file without trailing newlines; FileProblem if unusable or empty."""
    fd = _open_regular(path)
    data = b""
    try:
        while len(data) <= limit and (block := os.read(fd, limit + 1 - len(data))):
            data += block
    except OSError as exc:
        raise _cannot_read(path, exc) from None
    finally:
        os.close(fd)
    if len(data) > limit:
        raise FileProblem(f"{path} is larger than {limit} bytes: expected a file holding only the password")
    try:
        secret = data.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError:
        raise FileProblem(f"{path} is not valid UTF-8 text") from None
    if not secret:
        raise FileProblem(f"{path} is empty")
    return secret
