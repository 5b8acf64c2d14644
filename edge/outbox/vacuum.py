"""Incremental vacuum: give the pages a drained backlog freed back to the file system, in short steps."""

from __future__ import annotations

import logging
import sqlite3
import time

log = logging.getLogger("edge.outbox")  # the package's one logger (see recovery.py)

# Incremental vacuum: run once this many pages (4 KiB each) are free, for at most this long.
VACUUM_MIN_FREE_PAGES = 256
VACUUM_STEP_PAGES = 512
VACUUM_BUDGET_S = 0.1


def freelist(db: sqlite3.Connection) -> int:
    return int(db.execute("PRAGMA freelist_count").fetchone()[0])


def incremental_vacuum(db: sqlite3.Connection) -> int:
    """Free pages for at most ``VACUUM_BUDGET_S`` once enough are free; returns pages freed.

    The database must have ``auto_vacuum=INCREMENTAL``; SQLite errors propagate.
    """
    free = freelist(db)
    if free < VACUUM_MIN_FREE_PAGES:
        return 0
    start, deadline = free, time.monotonic() + VACUUM_BUDGET_S
    while free > 0 and time.monotonic() < deadline:
        # executescript steps the pragma to the end; execute() would free a single page.
        db.executescript(f"PRAGMA incremental_vacuum({VACUUM_STEP_PAGES});")
        free = freelist(db)
    # The database file shrinks when the WAL is checkpointed; the WAL is truncated too.
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    log.debug("outbox: incremental vacuum freed %d pages", start - free)
    return start - free
