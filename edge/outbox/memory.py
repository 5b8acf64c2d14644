"""The bounded in-memory buffer: events the disk refused, in seq order, until a write succeeds."""

from __future__ import annotations

from collections.abc import Collection

from .store import OutboxRow


def keep(memory: dict[int, OutboxRow], row: OutboxRow, max_events: int) -> int:
    """Add ``row`` (the newest); beyond ``max_events`` the oldest give way. Returns how many went."""
    memory[row.seq] = row
    dropped = 0
    while len(memory) > max_events:
        del memory[next(iter(memory))]
        dropped += 1
    return dropped


def take_after(
    memory: dict[int, OutboxRow], after_seq: int, skip: Collection[int], rows: list[OutboxRow], limit: int
) -> None:
    """Append to ``rows``, up to ``limit`` in all, the kept events after ``after_seq`` not in ``skip``."""
    for row in memory.values():
        if row.seq > after_seq and row.seq not in skip:
            rows.append(row)
            if len(rows) == limit:
                break


def expire(memory: dict[int, OutboxRow], cutoff: float) -> int:
    """Drop kept events created before ``cutoff``; returns how many."""
    old = [seq for seq, row in memory.items() if row.created < cutoff]
    for seq in old:
        del memory[seq]
    return len(old)
