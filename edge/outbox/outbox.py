"""The outbox's operations on events and settings: append, hand out, acknowledge, expire, upkeep.

Storage trouble is handled here, never raised: events the disk refuses wait in memory (see
memory.py) and are written, in order, by a later retry; refused acks and settings are retried too.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import time
from collections.abc import Callable, Collection, Iterable
from functools import partial
from typing import Any

from edge.logs import limited

from . import memory, sidecar, store
from .base import OutboxBase
from .store import MIGRATE_MAX_EVENTS, OutboxRow, Tx
from .vacuum import incremental_vacuum

log = logging.getLogger("edge.outbox")  # the package's one logger (see recovery.py)


class Outbox(OutboxBase):
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
        if reserve and not self._write_meta(seq - 1 + sidecar.SEQ_RESERVE):
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

    def _insert(self, rows: list[OutboxRow], tx: Tx) -> None:
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
            gone = store.delete_returning(
                tx,
                "DELETE FROM events WHERE seq IN (SELECT seq FROM events ORDER BY seq LIMIT ?)",
                (overflow,),
            )
            tx.bump("expired", len(gone))
            limited(log).warning(
                "full", "outbox full (%d events): dropped the %d oldest unsent", self.max_events, len(gone)
            )

    def _keep_in_memory(self, row: OutboxRow) -> None:
        dropped = memory.keep(self._memory, row, self.memory_max_events)
        self._count("buffered_in_memory")
        if dropped:
            self._count("dropped_memory_full", dropped)
            if self._dropped_in_outage == 0:
                log.error(
                    "outbox: %d events wait in memory, the most allowed: dropping the oldest (counted "
                    "as dropped_memory_full)",
                    self.memory_max_events,
                )
            self._dropped_in_outage += dropped

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
            memory.take_after(self._memory, after_seq, skip, rows, limit)
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
                existing = store.existing(self._db, disk)
            except sqlite3.Error:
                existing = set(disk)
            self._acked_unflushed.update(existing)
            done.update(existing)
        return done

    def _delete_acked(self, seqs: list[int], tx: Tx) -> set[int]:
        gone = store.delete_seqs(tx, seqs)
        tx.bump("acked", len(gone))
        return gone

    def expire(self, now: float | None = None) -> int:
        """Delete events older than ``max_age_s``; returns how many went."""
        cutoff = (time.time() if now is None else now) - self.max_age_s
        old = memory.expire(self._memory, cutoff)
        if old:
            self._count("expired", old)
        try:
            n = self._tx(partial(self._expire_rows, cutoff))
        except sqlite3.Error as exc:
            self._storage_failed("expiring events", exc)
            n = 0
        n += old
        if n:
            log.warning("outbox: %d unsent events older than %.0f s expired", n, self.max_age_s)
        return n

    def _expire_rows(self, cutoff: float, tx: Tx) -> int:
        gone = store.delete_returning(tx, "DELETE FROM events WHERE created < ?", (cutoff,))
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
                    store.migrate_vacuum(self._db, self.path)
                return 0
            return incremental_vacuum(self._db)
        except sqlite3.Error as exc:
            log.warning("outbox %s: incremental vacuum failed: %s", self.path, exc)
            return 0

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
