"""A damaged outbox file: telling damage from other storage errors, and moving the file aside."""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from pathlib import Path

# One logger for the whole package, named as before the split: log settings and the shared rate
# limiters (keyed by logger name) stay as they were.
log = logging.getLogger("edge.outbox")

_SQLITE_CORRUPT = 11
_SQLITE_NOTADB = 26


class CorruptOutbox(sqlite3.DatabaseError):
    """``PRAGMA quick_check`` found damage."""


def is_corrupt(exc: BaseException) -> bool:
    """A damaged database (as opposed to a full disk, a lock, an I/O error)."""
    if isinstance(exc, CorruptOutbox):
        return True
    if not isinstance(exc, sqlite3.DatabaseError):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int) and code & 0xFF in (_SQLITE_CORRUPT, _SQLITE_NOTADB):
        return True
    text = str(exc).lower()
    return "malformed" in text or "not a database" in text


def move_aside(path: Path, kind: str, main: bool = True) -> Path:
    """Rename the database and its -wal/-shm to ``<name>.<kind>-<UTC time>``; returns the new name."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = path.with_name(f"{path.name}.{kind}-{stamp}")
    n = 1
    while any(Path(f"{target}{s}").exists() for s in ("", "-wal", "-shm")):
        target = path.with_name(f"{path.name}.{kind}-{stamp}-{n}")
        n += 1
    for suffix in ("", "-wal", "-shm") if main else ("-wal", "-shm"):
        src = Path(f"{path}{suffix}")
        if src.exists():
            os.replace(src, Path(f"{target}{suffix}"))
            if not main:
                log.warning("outbox: moved %s, left without its database, to %s", src, target)
    return target


def report_corrupt(path: Path, exc: BaseException, moved_to: Path, unsent: str) -> None:
    log.error(
        "outbox %s is damaged (%s): moved it to %s and started a new one; %s unsent events stay "
        "in the damaged file",
        path,
        " ".join(str(exc).split())[:300],
        moved_to.name,
        unsent,
    )
