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

The package, one job per module: ``store`` the SQLite file (schema, connection, statements),
``sidecar`` the ``*.meta.json`` file, ``recovery`` telling damage apart and moving a file aside,
``memory`` the bounded in-memory buffer, ``vacuum`` the incremental vacuum, ``base`` opening,
replacing and transactions, ``outbox`` the event operations, ``async_outbox`` the worker thread.
"""

from __future__ import annotations

# Constants are re-exported for reading; code reads them from their own module, so a test that
# changes one patches it there (e.g. ``edge.outbox.sidecar.SEQ_RESERVE``).
from .async_outbox import AsyncOutbox
from .base import COUNTERS
from .outbox import Outbox
from .recovery import CorruptOutbox, is_corrupt
from .sidecar import SEQ_RESERVE
from .store import MIGRATE_MAX_EVENTS, WAL_SIZE_LIMIT, OutboxRow
from .vacuum import VACUUM_BUDGET_S, VACUUM_MIN_FREE_PAGES, VACUUM_STEP_PAGES

__all__ = [
    "COUNTERS",
    "MIGRATE_MAX_EVENTS",
    "SEQ_RESERVE",
    "VACUUM_BUDGET_S",
    "VACUUM_MIN_FREE_PAGES",
    "VACUUM_STEP_PAGES",
    "WAL_SIZE_LIMIT",
    "AsyncOutbox",
    "CorruptOutbox",
    "Outbox",
    "OutboxRow",
    "is_corrupt",
]
