"""The outbox's database file and the state kept beside it: opening it, replacing a damaged or lost
file (seq, generation, counters and settings carry over), running write transactions, and logging
storage trouble once per outage.

:class:`edge.outbox.outbox.Outbox` builds the event operations on this.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from . import sidecar, store
from .recovery import is_corrupt, move_aside, report_corrupt
from .sidecar import Meta
from .store import OutboxRow, Tx

log = logging.getLogger("edge.outbox")  # the package's one logger (see recovery.py)
T = TypeVar("T")

COUNTERS = (
    "appended",
    "acked",
    "expired",
    "corrupt_recovered",
    "file_lost",
    "storage_errors",
    "buffered_in_memory",
    "dropped_memory_full",
)


class OutboxBase:
    def __init__(
        self,
        path: Path,
        max_events: int,
        max_age_s: float,
        *,
        memory_max_events: int = 10_000,
        retry_interval_s: float = 1.0,
    ) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.meta_path = path.with_name(path.name + ".meta.json")
        self.max_events = max_events
        self.max_age_s = max_age_s
        self.memory_max_events = memory_max_events
        self.retry_interval_s = retry_interval_s
        self.generation = 0
        self._counters: dict[str, int] = dict.fromkeys(COUNTERS, 0)
        self._dirty: set[str] = set()  # counters changed in memory, not yet written
        self._db_count = 0  # rows in the events table
        self._last_seq = 0  # the highest seq handed out (on disk or in memory)
        self._reserved = 0  # the sidecar's reservation: no seq above it was handed out
        self._settings: dict[str, dict[str, Any]] = {}  # the copy kept in the sidecar
        self._unsaved_settings: dict[str, dict[str, Any]] = {}
        self._memory: dict[int, OutboxRow] = {}  # seq -> event the disk refused, in seq order
        self._acked_unflushed: set[int] = set()  # acked, but the DELETE was refused
        self._failing = False
        self._dropped_in_outage = 0
        self._last_retry = 0.0
        self._meta_warned = False
        self._meta_retry_at = 0.0
        self._reopen_needed = False
        self._db = self._open()
        if self._dirty:  # what opening found (a damaged or lost file) is counted on disk at once
            with contextlib.suppress(sqlite3.Error):
                self._tx(lambda tx: None)

    # --- opening, damage, a lost file -------------------------------------------------

    def _open(self) -> sqlite3.Connection:
        meta = sidecar.read(self.meta_path)
        if not self.path.exists():
            move_aside(self.path, "orphan", main=False)  # a -wal without its database must not be replayed
        damaged = False
        db: sqlite3.Connection | None = None
        if self.path.exists():
            try:
                db = store.connect(self.path, check=True)
            except sqlite3.DatabaseError as exc:
                if not is_corrupt(exc):
                    raise
                damaged = True
                self._report_corrupt(exc, move_aside(self.path, "corrupt"), unsent="its")
        if db is None:
            db = store.connect(self.path, check=False)
        else:
            store.migrate_vacuum(db, self.path)
        if db.execute("SELECT 1 FROM meta WHERE name = 'generation'").fetchone() is None:
            # Not a file this outbox set up: new, empty, replaced, or from before generations.
            floor = meta.reserved_seq if meta is not None else 0
            if meta is not None and not damaged:
                log.error(
                    "outbox %s is missing or empty although its sidecar %s survives: started a new "
                    "one; seq continues after %d, events that were queued in the lost file are gone",
                    self.path,
                    self.meta_path.name,
                    floor,
                )
                self._count("file_lost")
            elif meta is None:
                log.info("outbox %s: no sidecar, a new seq space starts", self.path)
            store.init_new(db, floor, meta)
        self._load(db, meta)
        return db

    def _load(self, db: sqlite3.Connection, meta: Meta | None) -> None:
        self._db_count = int(db.execute("SELECT COUNT(*) FROM events").fetchone()[0])
        row = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'events'").fetchone()
        top = db.execute("SELECT MAX(seq) FROM events").fetchone()[0]
        self._last_seq = max(self._last_seq, int(row[0]) if row else 0, int(top or 0))
        for name, value in db.execute("SELECT name, value FROM counters").fetchall():
            if name in self._counters and name not in self._dirty:
                self._counters[str(name)] = int(value)
        self.generation = int(db.execute("SELECT value FROM meta WHERE name = 'generation'").fetchone()[0])
        self._settings = {}
        for name, value in db.execute("SELECT name, value FROM settings").fetchall():
            with contextlib.suppress(ValueError):
                parsed = json.loads(value)
                if isinstance(parsed, dict):
                    self._settings[str(name)] = parsed
        self._reserved = meta.reserved_seq if meta is not None else 0
        if (
            meta is None
            or meta.generation != self.generation
            or meta.settings != self._settings
            or self._reserved < self._last_seq
        ):
            self._write_meta(max(self._reserved, self._last_seq + sidecar.SEQ_RESERVE))

    def _report_corrupt(self, exc: BaseException, moved_to: Path, unsent: str) -> None:
        report_corrupt(self.path, exc, moved_to, unsent)
        self._count("corrupt_recovered")

    def _recover(self, exc: sqlite3.DatabaseError) -> None:
        """The open database turned out damaged: replace it, keeping seq, counters and settings."""
        with contextlib.suppress(sqlite3.Error):
            self._db.close()
        try:
            moved = move_aside(self.path, "corrupt")
        except OSError as move_error:
            log.error("outbox %s is damaged (%s) and cannot be moved aside: %s", self.path, exc, move_error)
            self._reopen_needed = True
            raise exc from move_error
        self._report_corrupt(exc, moved, unsent=str(max(0, self._db_count - len(self._acked_unflushed))))
        self._acked_unflushed.clear()
        self._db_count = 0
        self._dirty.update(COUNTERS)  # the new file gets the counters kept in memory
        self._reopen_needed = True
        self._reopen()

    def _reopen(self) -> None:
        """A new file after a damaged one was moved aside; seq continues where this process left it."""
        meta = Meta(self.generation, max(self._reserved, self._last_seq), dict(self._settings))
        db = store.connect(self.path, check=False)  # raises (e.g. a full disk): retried by the next operation
        try:
            if db.execute("SELECT 1 FROM meta WHERE name = 'generation'").fetchone() is None:
                store.init_new(db, self._last_seq, meta)
            self._load(db, meta)
        except BaseException:
            db.close()
            raise
        self._db = db
        self._reopen_needed = False

    def _write_meta(self, reserved: int) -> bool:
        """Replace the sidecar; False (warned once until it works again) when it cannot be written."""
        try:
            sidecar.write(self.meta_path, self.generation, reserved, self._settings)
        except OSError as exc:
            if not self._meta_warned:
                log.warning("outbox sidecar %s cannot be written (%s); will retry", self.meta_path, exc)
                self._meta_warned = True
            return False
        self._meta_warned = False
        self._reserved = reserved
        return True

    # --- transactions -----------------------------------------------------------------

    def _tx(self, work: Callable[[Tx], T]) -> T:
        """Run ``work`` in one write transaction that also writes changed counters.

        A damaged database is replaced and ``work`` retried once on the new one; other SQLite
        errors (a full disk, I/O) propagate with nothing applied.
        """
        for attempt in (0, 1):
            if self._reopen_needed:
                self._reopen()
            tx = Tx(self._db)
            try:
                tx.db.execute("BEGIN IMMEDIATE")
                try:
                    result = work(tx)
                    names = self._dirty | tx.bumps.keys()
                    if names:
                        tx.db.executemany(
                            "INSERT INTO counters (name, value) VALUES (?, ?) "
                            "ON CONFLICT(name) DO UPDATE SET value = excluded.value",
                            [(n, self._counters[n] + tx.bumps.get(n, 0)) for n in sorted(names)],
                        )
                    tx.db.execute("COMMIT")
                except BaseException:
                    if tx.db.in_transaction:
                        with contextlib.suppress(sqlite3.Error):
                            tx.db.execute("ROLLBACK")
                    raise
            except sqlite3.DatabaseError as exc:
                if attempt == 0 and is_corrupt(exc):
                    self._recover(exc)
                    continue
                raise
            for name, by in tx.bumps.items():
                self._counters[name] += by
            self._dirty.clear()
            self._db_count += tx.rows
            if self._acked_unflushed and tx.deleted:
                self._acked_unflushed.difference_update(tx.deleted)
            return result
        raise AssertionError("unreachable")

    def _read(self, query: Callable[[sqlite3.Connection], T]) -> T:
        if self._reopen_needed:
            self._reopen()
        try:
            return query(self._db)
        except sqlite3.DatabaseError as exc:
            if not is_corrupt(exc):
                raise
            self._recover(exc)
            return query(self._db)

    def _count(self, name: str, by: int = 1) -> None:
        self._counters[name] += by
        self._dirty.add(name)

    # --- storage trouble --------------------------------------------------------------

    def _storage_failed(self, what: str, exc: sqlite3.Error) -> None:
        self._count("storage_errors")
        if self._failing:
            log.debug("outbox: %s failed again: %s", what, exc)
            return
        self._failing = True
        log.error(
            "outbox %s: %s failed (%s): events wait in memory (at most %d) and writing is retried "
            "every %.1f s",
            self.path,
            what,
            exc,
            self.memory_max_events,
            self.retry_interval_s,
        )

    def _storage_ok(self) -> None:
        if self._failing:
            self._failing = False
            log.warning(
                "outbox %s: writing works again (%d events were dropped meanwhile)",
                self.path,
                self._dropped_in_outage,
            )
            self._dropped_in_outage = 0
