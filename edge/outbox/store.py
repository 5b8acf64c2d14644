"""The SQLite file: schema, connection settings, setting up a new file, and the row-level statements."""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .recovery import CorruptOutbox
from .sidecar import Meta

log = logging.getLogger("edge.outbox")  # the package's one logger (see recovery.py)

# An old database (auto_vacuum off) is rebuilt for incremental vacuum when it holds at most this
# many events: VACUUM copies only live rows, so that is quick.
MIGRATE_MAX_EVENTS = 10_000
# The WAL is truncated to this size after a checkpoint.
WAL_SIZE_LIMIT = 8 * 1024 * 1024
# Statements with more bound parameters than this are split.
_CHUNK = 500

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS settings (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
"""


@dataclass(frozen=True)
class OutboxRow:
    seq: int
    topic: str
    payload: bytes
    created: float


@dataclass
class Tx:
    """One write transaction: what it changes in memory applies only on COMMIT."""

    db: sqlite3.Connection
    bumps: dict[str, int] = field(default_factory=dict)
    rows: int = 0
    deleted: list[int] = field(default_factory=list)

    def bump(self, name: str, by: int = 1) -> None:
        if by:
            self.bumps[name] = self.bumps.get(name, 0) + by


def connect(path: Path, check: bool) -> sqlite3.Connection:
    """Open ``path`` durable (WAL, synchronous=FULL) with the schema; ``check``: quick_check first."""
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        if check:
            result = [tuple(r) for r in db.execute("PRAGMA quick_check(5)").fetchall()]
            if result != [("ok",)]:
                raise CorruptOutbox("; ".join(str(r[0]) for r in result))
        db.execute("PRAGMA auto_vacuum=INCREMENTAL")  # takes effect on a new file, or with VACUUM
        db.execute("PRAGMA journal_mode=WAL").fetchall()
        db.execute("PRAGMA synchronous=FULL")
        db.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}").fetchall()
        db.executescript(_SCHEMA)
    except BaseException:
        db.close()
        raise
    return db


def init_new(db: sqlite3.Connection, floor: int, meta: Meta | None) -> None:
    """Set up a file: seq continues above ``floor``, the sidecar's generation and settings come back."""
    generation = meta.generation if meta is not None else time.time_ns() // 1_000_000
    db.execute("BEGIN IMMEDIATE")
    try:
        if floor > 0:
            updated = db.execute(
                "UPDATE sqlite_sequence SET seq = MAX(seq, ?) WHERE name = 'events'", (floor,)
            ).rowcount
            if not updated:
                db.execute("INSERT INTO sqlite_sequence (name, seq) VALUES ('events', ?)", (floor,))
        db.execute("INSERT OR REPLACE INTO meta (name, value) VALUES ('generation', ?)", (generation,))
        for name, value in (meta.settings if meta is not None else {}).items():
            db.execute(
                "INSERT INTO settings (name, value) VALUES (?, ?) ON CONFLICT(name) DO NOTHING",
                (name, json.dumps(value)),
            )
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


def migrate_vacuum(db: sqlite3.Connection, path: Path) -> None:
    """A database made before incremental vacuum is rebuilt with it, while that is cheap."""
    if int(db.execute("PRAGMA auto_vacuum").fetchone()[0]) == 2:
        return
    count = int(db.execute("SELECT COUNT(*) FROM events").fetchone()[0])
    if count > MIGRATE_MAX_EVENTS:
        return
    try:
        db.execute("PRAGMA auto_vacuum=INCREMENTAL")
        db.execute("VACUUM")
        log.info("outbox %s rebuilt for incremental vacuum", path)
    except sqlite3.Error as exc:
        log.warning("outbox %s: could not rebuild for incremental vacuum: %s", path, exc)


def delete_returning(tx: Tx, sql: str, params: tuple[Any, ...]) -> list[int]:
    gone = [int(r[0]) for r in tx.db.execute(sql + " RETURNING seq", params).fetchall()]
    tx.rows -= len(gone)
    tx.deleted += gone
    return gone


def delete_seqs(tx: Tx, seqs: list[int]) -> set[int]:
    """Delete these events; returns those that were there."""
    gone: set[int] = set()
    for i in range(0, len(seqs), _CHUNK):
        chunk = seqs[i : i + _CHUNK]
        marks = ",".join("?" * len(chunk))
        gone.update(delete_returning(tx, f"DELETE FROM events WHERE seq IN ({marks})", tuple(chunk)))
    return gone


def existing(db: sqlite3.Connection, seqs: list[int]) -> set[int]:
    """Which of these events are in the table (outside a transaction)."""
    found: set[int] = set()
    for i in range(0, len(seqs), _CHUNK):
        chunk = seqs[i : i + _CHUNK]
        marks = ",".join("?" * len(chunk))
        rows = db.execute(f"SELECT seq FROM events WHERE seq IN ({marks})", chunk).fetchall()
        found.update(int(r[0]) for r in rows)
    return found
