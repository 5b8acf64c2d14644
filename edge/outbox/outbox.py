"""A durable, ordered outbox for events: written before publishing, deleted on PUBACK.

SQLite in WAL mode with ``synchronous=FULL``: a committed event survives a SIGKILL and a
power cut. What the storage does to it is handled, never fatal and never silent:

* **Damage.** At open ``PRAGMA quick_check`` runs; a check that fails, or any operation that
  later reports a malformed database, moves the file aside (with its ``-wal``/``-shm``) as
  ``<name>.corrupt-<UTC time>``, starts a new one, logs an ERROR and counts
  ``corrupt_recovered``. The damaged file is kept for inspection; its unsent events are not sent.
* **A full disk, I/O errors.** An append that SQLite refuses keeps the event in memory (at most
  ``memory_max_events``; beyond that the oldest are dropped and counted) and returns normally.
  Kept events are still handed to the publisher, and are written to disk, in order, as soon as
  a retry succeeds (on the next append after ``retry_interval_s``, on :meth:`Outbox.flush`, and on
  :class:`AsyncOutbox`'s timer). Acks and settings that cannot be written are retried the same way.
* **A lost file.** ``seq`` never goes backwards. A sidecar ``<name>.meta.json`` (written atomically,
  rarely) records a seq reservation: every seq handed out is at most ``reserved_seq``. A new database
  started while the sidecar exists (the file was deleted, or moved aside as corrupt) continues above
  it, with an ERROR and ``file_lost`` counted. The sidecar also keeps the ``generation`` (the creation
  time in ms of this seq space, changed only when both files are gone) and a copy of the settings.

Consumers deduplicate per device on ``(generation, seq)``: drop an event whose pair is not greater
than the greatest seen. While the database or its sidecar survives, ``seq`` alone is enough.

Costs: acks are coalesced into one transaction per batch (:class:`AsyncOutbox`), counts are kept
in memory (no ``COUNT(*)`` per append), and new databases use ``auto_vacuum=INCREMENTAL`` with a
periodic :meth:`Outbox.maintain` so the file shrinks after a backlog drains.

All :class:`Outbox` methods are blocking and not thread-safe; :class:`AsyncOutbox` runs them on one
dedicated thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Collection, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from edge.logs import limited

if TYPE_CHECKING:
    from edge.config.outbox import OutboxConfig

log = logging.getLogger(__name__)
T = TypeVar("T")

# Seqs are reserved in the sidecar this many at a time: one small atomic write per block.
SEQ_RESERVE = 10_000
# Incremental vacuum: run once this many pages (4 KiB each) are free, for at most this long.
VACUUM_MIN_FREE_PAGES = 256
VACUUM_STEP_PAGES = 512
VACUUM_BUDGET_S = 0.1
# An old database (auto_vacuum off) is rebuilt for incremental vacuum when it holds at most this
# many events: VACUUM copies only live rows, so that is quick.
MIGRATE_MAX_EVENTS = 10_000
# The WAL is truncated to this size after a checkpoint.
WAL_SIZE_LIMIT = 8 * 1024 * 1024
# Statements with more bound parameters than this are split.
_CHUNK = 500

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


@dataclass(frozen=True)
class OutboxRow:
    seq: int
    topic: str
    payload: bytes
    created: float


@dataclass
class _Tx:
    """One write transaction: what it changes in memory applies only on COMMIT."""

    db: sqlite3.Connection
    bumps: dict[str, int] = field(default_factory=dict)
    rows: int = 0
    deleted: list[int] = field(default_factory=list)

    def bump(self, name: str, by: int = 1) -> None:
        if by:
            self.bumps[name] = self.bumps.get(name, 0) + by


@dataclass
class _Meta:
    generation: int
    reserved_seq: int
    settings: dict[str, dict[str, Any]]


class Outbox:
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
        meta = self._read_meta()
        if not self.path.exists():
            self._move_aside("orphan", main=False)  # a -wal without its database must not be replayed
        damaged = False
        db: sqlite3.Connection | None = None
        if self.path.exists():
            try:
                db = self._connect(check=True)
            except sqlite3.DatabaseError as exc:
                if not is_corrupt(exc):
                    raise
                damaged = True
                self._report_corrupt(exc, self._move_aside("corrupt"), unsent="its")
        if db is None:
            db = self._connect(check=False)
        else:
            self._migrate_vacuum(db)
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
            self._init_new(db, floor, meta)
        self._load(db, meta)
        return db

    def _connect(self, check: bool) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
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

    def _init_new(self, db: sqlite3.Connection, floor: int, meta: _Meta | None) -> None:
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

    def _load(self, db: sqlite3.Connection, meta: _Meta | None) -> None:
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
            self._write_meta(max(self._reserved, self._last_seq + SEQ_RESERVE))

    def _migrate_vacuum(self, db: sqlite3.Connection) -> None:
        """A database made before incremental vacuum is rebuilt with it, while that is cheap."""
        if int(db.execute("PRAGMA auto_vacuum").fetchone()[0]) == 2:
            return
        count = int(db.execute("SELECT COUNT(*) FROM events").fetchone()[0])
        if count > MIGRATE_MAX_EVENTS:
            return
        try:
            db.execute("PRAGMA auto_vacuum=INCREMENTAL")
            db.execute("VACUUM")
            log.info("outbox %s rebuilt for incremental vacuum", self.path)
        except sqlite3.Error as exc:
            log.warning("outbox %s: could not rebuild for incremental vacuum: %s", self.path, exc)

    def _move_aside(self, kind: str, main: bool = True) -> Path:
        """Rename the database and its -wal/-shm to ``<name>.<kind>-<UTC time>``; returns the new name."""
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        target = self.path.with_name(f"{self.path.name}.{kind}-{stamp}")
        n = 1
        while any(Path(f"{target}{s}").exists() for s in ("", "-wal", "-shm")):
            target = self.path.with_name(f"{self.path.name}.{kind}-{stamp}-{n}")
            n += 1
        for suffix in ("", "-wal", "-shm") if main else ("-wal", "-shm"):
            src = Path(f"{self.path}{suffix}")
            if src.exists():
                os.replace(src, Path(f"{target}{suffix}"))
                if not main:
                    log.warning("outbox: moved %s, left without its database, to %s", src, target)
        return target

    def _report_corrupt(self, exc: BaseException, moved_to: Path, unsent: str) -> None:
        log.error(
            "outbox %s is damaged (%s): moved it to %s and started a new one; %s unsent events stay "
            "in the damaged file",
            self.path,
            " ".join(str(exc).split())[:300],
            moved_to.name,
            unsent,
        )
        self._count("corrupt_recovered")

    def _recover(self, exc: sqlite3.DatabaseError) -> None:
        """The open database turned out damaged: replace it, keeping seq, counters and settings."""
        with contextlib.suppress(sqlite3.Error):
            self._db.close()
        try:
            moved = self._move_aside("corrupt")
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
        meta = _Meta(self.generation, max(self._reserved, self._last_seq), dict(self._settings))
        db = self._connect(check=False)  # raises (e.g. a full disk): retried by the next operation
        try:
            if db.execute("SELECT 1 FROM meta WHERE name = 'generation'").fetchone() is None:
                self._init_new(db, self._last_seq, meta)
            self._load(db, meta)
        except BaseException:
            db.close()
            raise
        self._db = db
        self._reopen_needed = False

    # --- the sidecar ------------------------------------------------------------------

    def _read_meta(self) -> _Meta | None:
        try:
            data = json.loads(self.meta_path.read_text())
            generation, reserved = int(data["generation"]), int(data["reserved_seq"])
            settings = data.get("settings", {})
            if not isinstance(settings, dict) or not all(isinstance(v, dict) for v in settings.values()):
                raise ValueError("settings is not a table of tables")
            return _Meta(generation, reserved, {str(k): v for k, v in settings.items()})
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.error("outbox sidecar %s is unreadable (%s): ignoring it", self.meta_path, exc)
            return None

    def _write_meta(self, reserved: int) -> bool:
        """Atomically replace the sidecar (write, fsync, rename, fsync the directory)."""
        body = json.dumps(
            {"generation": self.generation, "reserved_seq": reserved, "settings": self._settings},
            separators=(",", ":"),
        )
        tmp = self.meta_path.with_name(self.meta_path.name + ".tmp")
        try:
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(body)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.meta_path)
            dir_fd = os.open(self.meta_path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            if not self._meta_warned:
                log.warning("outbox sidecar %s cannot be written (%s); will retry", self.meta_path, exc)
                self._meta_warned = True
            return False
        self._meta_warned = False
        self._reserved = reserved
        return True

    # --- transactions -----------------------------------------------------------------

    def _tx(self, work: Callable[[_Tx], T]) -> T:
        """Run ``work`` in one write transaction that also writes changed counters.

        A damaged database is replaced and ``work`` retried once on the new one; other SQLite
        errors (a full disk, I/O) propagate with nothing applied.
        """
        for attempt in (0, 1):
            if self._reopen_needed:
                self._reopen()
            tx = _Tx(self._db)
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

    # --- events -----------------------------------------------------------------------

    def append(self, topic: str, build_payload: Callable[[int], bytes], now: float | None = None) -> int:
        """Store one event and return its ``seq``; the payload is built knowing its seq.

        Never raises for storage trouble: an event the disk refuses waits in memory.
        """
        created = time.time() if now is None else now
        seq = self._last_seq + 1
        row = OutboxRow(seq, topic, build_payload(seq), created)
        self._last_seq = seq
        reserve = seq > self._reserved and time.monotonic() >= self._meta_retry_at
        if reserve and not self._write_meta(seq - 1 + SEQ_RESERVE):
            self._meta_retry_at = time.monotonic() + self.retry_interval_s
        self._count("appended")
        if self._memory:  # older events wait in memory: this one queues behind them
            self._keep_in_memory(row)
            if self._retry_due():
                self._flush_memory()
            return seq
        try:
            self._tx(partial(self._insert, [row]))
        except sqlite3.Error as exc:
            self._storage_failed("append", exc)
            self._keep_in_memory(row)
        else:
            self._storage_ok()
        return seq

    def _insert(self, rows: list[OutboxRow], tx: _Tx) -> None:
        # OR IGNORE: a commit reported as failed (an I/O error at fsync) may have reached the disk
        # anyway; the same seq is the same event, and retrying it must not fail forever.
        cur = tx.db.executemany(
            "INSERT OR IGNORE INTO events (seq, topic, payload, created) VALUES (?, ?, ?, ?)",
            [(r.seq, r.topic, r.payload, r.created) for r in rows],
        )
        tx.rows += max(0, cur.rowcount)
        overflow = self._db_count + tx.rows - self.max_events
        if overflow > 0:
            # Bounded: the oldest unsent events give way, and that is counted and logged.
            gone = self._delete_returning(
                tx,
                "DELETE FROM events WHERE seq IN (SELECT seq FROM events ORDER BY seq LIMIT ?)",
                (overflow,),
            )
            tx.bump("expired", len(gone))
            limited(log).warning(
                "full", "outbox full (%d events): dropped the %d oldest unsent", self.max_events, len(gone)
            )

    def _delete_returning(self, tx: _Tx, sql: str, params: tuple[Any, ...]) -> list[int]:
        gone = [int(r[0]) for r in tx.db.execute(sql + " RETURNING seq", params).fetchall()]
        tx.rows -= len(gone)
        tx.deleted += gone
        return gone

    def _keep_in_memory(self, row: OutboxRow) -> None:
        self._memory[row.seq] = row
        self._count("buffered_in_memory")
        while len(self._memory) > self.memory_max_events:
            del self._memory[next(iter(self._memory))]
            self._count("dropped_memory_full")
            if self._dropped_in_outage == 0:
                log.error(
                    "outbox: %d events wait in memory, the most allowed: dropping the oldest (counted "
                    "as dropped_memory_full)",
                    self.memory_max_events,
                )
            self._dropped_in_outage += 1

    def _retry_due(self) -> bool:
        return time.monotonic() - self._last_retry >= self.retry_interval_s

    def _flush_memory(self) -> int:
        self._last_retry = time.monotonic()
        if not self._memory:
            return 0
        rows = list(self._memory.values())
        try:
            self._tx(partial(self._insert, rows))
        except sqlite3.Error as exc:
            self._storage_failed("writing events kept in memory", exc)
            return 0
        self._memory.clear()
        log.warning("outbox: wrote %d events that waited in memory", len(rows))
        self._storage_ok()
        return len(rows)

    @property
    def needs_flush(self) -> bool:
        """Something the disk refused waits for :meth:`flush`."""
        return bool(self._memory or self._acked_unflushed or self._unsaved_settings)

    def flush(self) -> int:
        """Retry what the disk refused: kept events (in order), acks, settings. Returns events written."""
        wrote = self._flush_memory()
        if self._acked_unflushed:
            seqs = sorted(self._acked_unflushed)
            try:
                self._tx(partial(self._delete_acked, seqs))
            except sqlite3.Error as exc:
                self._storage_failed("deleting acknowledged events", exc)
            else:
                self._acked_unflushed.difference_update(seqs)  # deleted now, or gone before
        for name, value in list(self._unsaved_settings.items()):
            self.save_settings(name, value)
        if self._dirty and not self.needs_flush:
            with contextlib.suppress(sqlite3.Error):
                self._tx(lambda tx: None)
        return wrote

    def pending(
        self, after_seq: int = 0, limit: int = 1000, exclude: Collection[int] = ()
    ) -> list[OutboxRow]:
        """Unacknowledged events after ``after_seq``, in seq order; ``exclude``: acks not yet written.

        Never raises for storage trouble: when the disk cannot be read, nothing is returned (so
        that nothing is handed out of order) and the next call tries again.
        """
        skip: Collection[int] = exclude
        if self._acked_unflushed:
            skip = self._acked_unflushed.union(exclude)
        try:
            fetched = self._read(
                lambda db: db.execute(
                    "SELECT seq, topic, payload, created FROM events WHERE seq > ? ORDER BY seq LIMIT ?",
                    (after_seq, limit + len(skip)),
                ).fetchall()
            )
        except sqlite3.Error as exc:
            self._storage_failed("reading events", exc)
            return []
        rows = [OutboxRow(int(s), str(t), bytes(p), float(c)) for s, t, p, c in fetched if s not in skip]
        del rows[limit:]
        if len(rows) < limit and len(fetched) < limit + len(skip):  # the disk had no more: memory next
            for row in self._memory.values():
                if row.seq > after_seq and row.seq not in skip:
                    rows.append(row)
                    if len(rows) == limit:
                        break
        return rows

    def ack(self, seq: int) -> bool:
        """Delete one acknowledged event now (one transaction); False when it was not pending."""
        return seq in self.ack_many([seq])

    def ack_many(self, seqs: Iterable[int]) -> set[int]:
        """Delete acknowledged events in one transaction; returns those that were pending.

        When the disk refuses the delete, the acks are kept and retried by :meth:`flush`; the events
        count as acknowledged meanwhile (not pending, not handed out again).
        """
        done: set[int] = set()
        disk: list[int] = []
        for seq in seqs:
            if self._memory.pop(seq, None) is not None:
                done.add(seq)
            elif seq not in self._acked_unflushed and seq not in done:
                disk.append(seq)
        if done:
            self._count("acked", len(done))
        if not disk:
            return done
        try:
            done.update(self._tx(partial(self._delete_acked, disk)))
        except sqlite3.Error as exc:
            self._storage_failed("deleting acknowledged events", exc)
            try:
                existing = self._existing(disk)
            except sqlite3.Error:
                existing = set(disk)
            self._acked_unflushed.update(existing)
            done.update(existing)
        return done

    def _delete_acked(self, seqs: list[int], tx: _Tx) -> set[int]:
        gone: set[int] = set()
        for i in range(0, len(seqs), _CHUNK):
            chunk = seqs[i : i + _CHUNK]
            marks = ",".join("?" * len(chunk))
            gone.update(
                self._delete_returning(tx, f"DELETE FROM events WHERE seq IN ({marks})", tuple(chunk))
            )
        tx.bump("acked", len(gone))
        return gone

    def _existing(self, seqs: list[int]) -> set[int]:
        found: set[int] = set()
        for i in range(0, len(seqs), _CHUNK):
            chunk = seqs[i : i + _CHUNK]
            marks = ",".join("?" * len(chunk))
            rows = self._db.execute(f"SELECT seq FROM events WHERE seq IN ({marks})", chunk).fetchall()
            found.update(int(r[0]) for r in rows)
        return found

    def expire(self, now: float | None = None) -> int:
        """Delete events older than ``max_age_s``; returns how many went."""
        cutoff = (time.time() if now is None else now) - self.max_age_s
        old = [seq for seq, row in self._memory.items() if row.created < cutoff]
        for seq in old:
            del self._memory[seq]
        if old:
            self._count("expired", len(old))
        try:
            n = self._tx(partial(self._expire_rows, cutoff))
        except sqlite3.Error as exc:
            self._storage_failed("expiring events", exc)
            n = 0
        n += len(old)
        if n:
            log.warning("outbox: %d unsent events older than %.0f s expired", n, self.max_age_s)
        return n

    def _expire_rows(self, cutoff: float, tx: _Tx) -> int:
        gone = self._delete_returning(tx, "DELETE FROM events WHERE created < ?", (cutoff,))
        tx.bump("expired", len(gone))
        return len(gone)

    def stats(self) -> dict[str, int]:
        """Counts kept in memory: O(1), no query."""
        return {
            "pending": max(0, self._db_count - len(self._acked_unflushed)) + len(self._memory),
            "last_seq": self._last_seq,
            "generation": self.generation,
            "in_memory": len(self._memory),
            **self._counters,
        }

    @property
    def last_seq(self) -> int:
        return self._last_seq

    # --- upkeep -----------------------------------------------------------------------

    def maintain(self) -> int:
        """Give free pages back to the file system (incremental vacuum); returns pages freed."""
        try:
            if int(self._read(lambda db: db.execute("PRAGMA auto_vacuum").fetchone()[0])) != 2:
                if self._db_count <= MIGRATE_MAX_EVENTS and not self._memory:
                    self._migrate_vacuum(self._db)
                return 0
            free = self._freelist()
            if free < VACUUM_MIN_FREE_PAGES:
                return 0
            start, deadline = free, time.monotonic() + VACUUM_BUDGET_S
            while free > 0 and time.monotonic() < deadline:
                # executescript steps the pragma to the end; execute() would free a single page.
                self._db.executescript(f"PRAGMA incremental_vacuum({VACUUM_STEP_PAGES});")
                free = self._freelist()
            # The database file shrinks when the WAL is checkpointed; the WAL is truncated too.
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            log.debug("outbox: incremental vacuum freed %d pages", start - free)
            return start - free
        except sqlite3.Error as exc:
            log.warning("outbox %s: incremental vacuum failed: %s", self.path, exc)
            return 0

    def _freelist(self) -> int:
        return int(self._db.execute("PRAGMA freelist_count").fetchone()[0])

    # --- settings ---------------------------------------------------------------------

    def load_settings(self, name: str) -> dict[str, Any]:
        """Small persistent settings (e.g. the privacy switch) that must survive a restart."""
        if name in self._unsaved_settings:
            return dict(self._unsaved_settings[name])
        try:
            row = self._read(
                lambda db: db.execute("SELECT value FROM settings WHERE name = ?", (name,)).fetchone()
            )
        except sqlite3.Error as exc:
            log.error("outbox: cannot read settings %r (%s): using the sidecar's copy", name, exc)
            return dict(self._settings.get(name, {}))
        value = json.loads(row[0]) if row else {}
        return value if isinstance(value, dict) else {}

    def save_settings(self, name: str, value: dict[str, Any]) -> None:
        """Written to the database and its sidecar; kept in memory and retried if the disk refuses."""
        value = dict(value)
        if self._settings.get(name) != value:
            self._settings[name] = value
            self._write_meta(max(self._reserved, self._last_seq))
        try:
            self._tx(
                lambda tx: tx.db.execute(
                    "INSERT INTO settings (name, value) VALUES (?, ?) "
                    "ON CONFLICT(name) DO UPDATE SET value = excluded.value",
                    (name, json.dumps(value)),
                )
            )
        except sqlite3.Error as exc:
            self._storage_failed("saving settings", exc)
            self._unsaved_settings[name] = value
        else:
            self._unsaved_settings.pop(name, None)

    def close(self) -> None:
        """Write what still waits (events kept in memory, acks, counters) if the disk allows; close."""
        if self.needs_flush or self._dirty:
            self.flush()
        if self._memory:
            log.error(
                "outbox: %d events kept in memory could not be written and are lost (seq %d..%d)",
                len(self._memory),
                next(iter(self._memory)),
                self._last_seq,
            )
        with contextlib.suppress(sqlite3.Error):
            self._db.close()


class AsyncOutbox:
    """The outbox behind one worker thread, so fsyncs never stall the event loop.

    Acks are coalesced: an ack waits up to ``ack_delay_s`` (or until ``ack_batch_max`` are
    waiting) and all acks waiting then are deleted in one transaction. Acks not yet written are
    never returned by :meth:`pending` and not counted as pending by :meth:`stats` (which writes
    them first). A clean :meth:`close` writes every ack received before it; after a crash, at most
    the acks of the last ``ack_delay_s`` are lost, and those events are sent again (QoS 1 allows
    it). A timer (every ``retry_interval_s``) retries what the disk refused and, every
    ``vacuum_interval_s``, runs the incremental vacuum.
    """

    def __init__(
        self,
        path: Path,
        max_events: int,
        max_age_s: float,
        *,
        ack_delay_s: float = 0.05,
        ack_batch_max: int = 1000,
        memory_max_events: int = 10_000,
        retry_interval_s: float = 1.0,
        vacuum_interval_s: float = 60.0,
    ) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="outbox")
        self._outbox = Outbox(
            path,
            max_events,
            max_age_s,
            memory_max_events=memory_max_events,
            retry_interval_s=retry_interval_s,
        )
        self.ack_delay_s = ack_delay_s
        self.ack_batch_max = ack_batch_max
        self.retry_interval_s = retry_interval_s
        self.vacuum_interval_s = vacuum_interval_s
        self._closed = False
        self._acks: list[int] = []  # acks waiting for the next batch
        self._acks_max = 0
        self._ack_future: asyncio.Future[set[int]] | None = None
        self._ack_timer: asyncio.TimerHandle | None = None
        self._ack_writer: asyncio.Task[None] | None = None
        self._upkeep: asyncio.Task[None] | None = None

    @classmethod
    def from_config(cls, config: OutboxConfig) -> AsyncOutbox:
        return cls(
            config.path,
            config.max_events,
            config.max_age_s,
            ack_delay_s=config.ack_delay_s,
            ack_batch_max=config.ack_batch_max,
            memory_max_events=config.memory_max_events,
            retry_interval_s=config.retry_interval_s,
            vacuum_interval_s=config.vacuum_interval_s,
        )

    @property
    def generation(self) -> int:
        """Identifies this seq space (see the module docstring); constant while the outbox is open."""
        return self._outbox.generation

    async def _run(self, fn: Callable[[], T]) -> T:
        if self._upkeep is None and not self._closed:
            self._upkeep = asyncio.get_running_loop().create_task(self._upkeep_loop(), name="outbox-upkeep")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    async def append(self, topic: str, build_payload: Callable[[int], bytes]) -> int:
        return await self._run(lambda: self._outbox.append(topic, build_payload))

    async def pending(self, after_seq: int = 0, limit: int = 1000) -> list[OutboxRow]:
        # Acks not yet handed to the worker must not come back as pending (a new link starting
        # from seq 0 would send them again). Those handed over are committed before this query runs.
        exclude = frozenset(s for s in self._acks if s > after_seq) if self._acks_max > after_seq else ()
        return await self._run(lambda: self._outbox.pending(after_seq, limit, exclude))

    async def ack(self, seq: int, wait: bool = False) -> bool:
        """Delete an acknowledged event, in the next batch; False once the outbox is closing.

        Returns as soon as the ack is taken (one per PUBACK, so this is kept cheap); the batch is
        committed within ``ack_delay_s``, by :meth:`flush_acks`, or at the latest by :meth:`close`.
        With ``wait``, returns once committed: True if the event was pending, False if not.
        """
        if self._closed:
            # A PUBACK that arrives during shutdown: the row stays and is sent again on the next
            # start (at-least-once), rather than failing on a closed database.
            return False
        loop = asyncio.get_running_loop()
        self._acks.append(seq)
        if seq > self._acks_max:
            self._acks_max = seq
        if len(self._acks) >= self.ack_batch_max or self.ack_delay_s <= 0:
            self._write_acks()
        elif self._ack_timer is None and self._ack_writer is None:
            self._ack_timer = loop.call_later(self.ack_delay_s, self._write_acks)
        if not wait:
            return True
        if self._ack_future is None:
            self._ack_future = loop.create_future()
        done = await asyncio.shield(self._ack_future)
        return seq in done

    def _write_acks(self) -> asyncio.Task[None] | None:
        if self._ack_timer is not None:
            self._ack_timer.cancel()
            self._ack_timer = None
        if self._ack_writer is None and self._acks:
            self._ack_writer = asyncio.get_running_loop().create_task(
                self._ack_writer_loop(), name="outbox-acks"
            )
        return self._ack_writer

    async def _ack_writer_loop(self) -> None:
        try:
            while self._acks:
                batch, future = self._acks, self._ack_future
                self._acks, self._acks_max, self._ack_future = [], 0, None
                try:
                    done = await self._run(partial(self._outbox.ack_many, batch))
                except Exception as exc:  # not a storage error (those are handled inside): a bug
                    log.exception(
                        "outbox: %d acks could not be written; those events will be sent again", len(batch)
                    )
                    if future is not None and not future.done():
                        future.set_exception(exc)
                    continue
                if future is not None and not future.done():
                    future.set_result(done)
                if len(self._acks) < self.ack_batch_max:
                    break  # a partial batch waits ack_delay_s for company
        finally:
            self._ack_writer = None
            if self._acks and self._ack_timer is None:
                self._ack_timer = asyncio.get_running_loop().call_later(self.ack_delay_s, self._write_acks)

    async def flush_acks(self) -> None:
        """Commit every ack received so far."""
        while self._acks or self._ack_writer is not None:
            writer = self._write_acks()
            if writer is not None:
                await asyncio.shield(writer)

    async def flush(self) -> int:
        """Commit waiting acks, then retry what the disk refused; returns events written from memory."""
        await self.flush_acks()
        return await self._run(self._outbox.flush)

    async def maintain(self) -> int:
        return await self._run(self._outbox.maintain)

    async def _upkeep_loop(self) -> None:
        last_vacuum = time.monotonic()
        while True:
            await asyncio.sleep(self.retry_interval_s)
            try:
                if self._outbox.needs_flush:
                    await self._run(self._outbox.flush)
                if time.monotonic() - last_vacuum >= self.vacuum_interval_s:
                    last_vacuum = time.monotonic()
                    await self._run(self._outbox.maintain)
            except Exception:
                log.exception("outbox upkeep failed; retrying")

    async def expire(self) -> int:
        return await self._run(self._outbox.expire)

    async def stats(self) -> dict[str, int]:
        await self.flush_acks()  # so that ``pending`` counts acks received so far
        return await self._run(self._outbox.stats)

    async def load_settings(self, name: str) -> dict[str, Any]:
        return await self._run(lambda: self._outbox.load_settings(name))

    async def save_settings(self, name: str, value: dict[str, Any]) -> None:
        await self._run(lambda: self._outbox.save_settings(name, dict(value)))

    async def close(self) -> None:
        if self._closed:
            return
        await self.flush_acks()  # every ack received before close is committed
        self._closed = True
        if self._upkeep is not None:
            self._upkeep.cancel()
            await asyncio.gather(self._upkeep, return_exceptions=True)
        await asyncio.get_running_loop().run_in_executor(self._executor, self._outbox.close)
        self._executor.shutdown(wait=True)
