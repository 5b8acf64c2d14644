"""A durable, ordered outbox for events: written before publishing, deleted on PUBACK.

SQLite in WAL mode with ``synchronous=FULL``: a committed event survives a SIGKILL and a
power cut. ``seq`` comes from an AUTOINCREMENT key, so it keeps increasing across restarts
and is never reused, even after rows are deleted.

All methods are blocking; :class:`AsyncOutbox` runs them on one dedicated thread.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")

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
"""


@dataclass(frozen=True)
class OutboxRow:
    seq: int
    topic: str
    payload: bytes
    created: float


class Outbox:
    def __init__(self, path: Path, max_events: int, max_age_s: float) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.max_events = max_events
        self.max_age_s = max_age_s
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    def append(self, topic: str, build_payload: Callable[[int], bytes], now: float | None = None) -> int:
        """Store one event and return its ``seq``; the payload is built knowing its seq."""
        created = time.time() if now is None else now
        with self._transaction():
            cur = self._db.execute(
                "INSERT INTO events (topic, payload, created) VALUES (?, x'', ?)", (topic, created)
            )
            seq = int(cur.lastrowid or 0)
            self._db.execute("UPDATE events SET payload = ? WHERE seq = ?", (build_payload(seq), seq))
            overflow = self._count() - self.max_events
            if overflow > 0:
                # Bounded: the oldest unsent events give way, and that is counted and logged.
                self._db.execute(
                    "DELETE FROM events WHERE seq IN (SELECT seq FROM events ORDER BY seq LIMIT ?)",
                    (overflow,),
                )
                self._bump("expired", overflow)
                log.warning(
                    "outbox full (%d events): dropped the %d oldest unsent", self.max_events, overflow
                )
            self._bump("appended", 1)
        return seq

    def pending(self, after_seq: int = 0, limit: int = 1000) -> list[OutboxRow]:
        rows = self._db.execute(
            "SELECT seq, topic, payload, created FROM events WHERE seq > ? ORDER BY seq LIMIT ?",
            (after_seq, limit),
        ).fetchall()
        return [OutboxRow(int(s), str(t), bytes(p), float(c)) for s, t, p, c in rows]

    def ack(self, seq: int) -> bool:
        with self._transaction():
            deleted = self._db.execute("DELETE FROM events WHERE seq = ?", (seq,)).rowcount > 0
            if deleted:
                self._bump("acked", 1)
        return deleted

    def expire(self, now: float | None = None) -> int:
        """Delete events older than ``max_age_s``; returns how many went."""
        cutoff = (time.time() if now is None else now) - self.max_age_s
        with self._transaction():
            n = self._db.execute("DELETE FROM events WHERE created < ?", (cutoff,)).rowcount
            if n:
                self._bump("expired", n)
        if n:
            log.warning("outbox: %d unsent events older than %.0f s expired", n, self.max_age_s)
        return int(n)

    def stats(self) -> dict[str, int]:
        counters = dict(self._db.execute("SELECT name, value FROM counters").fetchall())
        last = self._db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'events'").fetchone()
        return {
            "pending": self._count(),
            "last_seq": int(last[0]) if last else 0,
            **{k: int(counters.get(k, 0)) for k in ("appended", "acked", "expired")},
        }

    def load_settings(self, name: str) -> dict[str, Any]:
        """Small persistent settings (e.g. the privacy switch) that must survive a restart."""
        row = self._db.execute("SELECT value FROM settings WHERE name = ?", (name,)).fetchone()
        value = json.loads(row[0]) if row else {}
        return value if isinstance(value, dict) else {}

    def save_settings(self, name: str, value: dict[str, Any]) -> None:
        with self._transaction():
            self._db.execute(
                "INSERT INTO settings (name, value) VALUES (?, ?) "
                "ON CONFLICT(name) DO UPDATE SET value = excluded.value",
                (name, json.dumps(value)),
            )

    def _count(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM events").fetchone()[0])

    def _bump(self, name: str, by: int) -> None:
        self._db.execute(
            "INSERT INTO counters (name, value) VALUES (?, ?) "
            "ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
            (name, by),
        )

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)


class _Transaction:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self._db.execute("COMMIT" if exc_type is None else "ROLLBACK")


class AsyncOutbox:
    """The outbox behind one worker thread, so fsyncs never stall the event loop."""

    def __init__(self, path: Path, max_events: int, max_age_s: float) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="outbox")
        self._outbox = Outbox(path, max_events, max_age_s)
        self._closed = False

    async def _run(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    async def append(self, topic: str, build_payload: Callable[[int], bytes]) -> int:
        return await self._run(lambda: self._outbox.append(topic, build_payload))

    async def pending(self, after_seq: int = 0, limit: int = 1000) -> list[OutboxRow]:
        return await self._run(lambda: self._outbox.pending(after_seq, limit))

    async def ack(self, seq: int) -> bool:
        if self._closed:
            # A PUBACK that arrives during shutdown: the row stays and is sent again on the next
            # start (at-least-once), rather than failing on a closed database.
            return False
        return await self._run(lambda: self._outbox.ack(seq))

    async def expire(self) -> int:
        return await self._run(self._outbox.expire)

    async def stats(self) -> dict[str, int]:
        return await self._run(self._outbox.stats)

    async def load_settings(self, name: str) -> dict[str, Any]:
        return await self._run(lambda: self._outbox.load_settings(name))

    async def save_settings(self, name: str, value: dict[str, Any]) -> None:
        await self._run(lambda: self._outbox.save_settings(name, dict(value)))

    async def close(self) -> None:
        self._closed = True
        await self._run(self._outbox.close)
        self._executor.shutdown(wait=True)
