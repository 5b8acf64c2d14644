"""Bounded hand-offs between pipeline stages, with counters so nothing disappears unseen."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass
class QueueStats:
    put: int = 0
    got: int = 0
    max_depth: int = 0
    # Producer had to wait for room: backpressure, not loss.
    waited_full: int = 0
    # Items replaced before anyone read them (latest-wins slots only).
    superseded: int = 0


class CountingQueue(Generic[T]):
    """A bounded FIFO that applies backpressure instead of dropping.

    ``taps`` see every item as the consumer takes it, on the consumer's task (calibration listens
    to the EMG samples this way without a second copy of the stream).
    """

    def __init__(self, maxsize: int) -> None:
        if maxsize < 1:
            raise ValueError("a queue needs room for at least one item")
        self._q: asyncio.Queue[T] = asyncio.Queue(maxsize)
        self.stats = QueueStats()
        self.taps: list[Callable[[T], None]] = []

    async def put(self, item: T) -> None:
        if self._q.full():
            self.stats.waited_full += 1
        await self._q.put(item)
        self.stats.put += 1
        self.stats.max_depth = max(self.stats.max_depth, self._q.qsize())

    def try_put(self, item: T) -> bool:
        """Put ``item`` if there is room, without waiting. False when full: nothing is put or
        counted, and the caller still owns the item (it must :meth:`put` it or account for it)."""
        if self._q.full():
            return False
        self._q.put_nowait(item)
        self.stats.put += 1
        self.stats.max_depth = max(self.stats.max_depth, self._q.qsize())
        return True

    async def get(self) -> T:
        item = await self._q.get()
        self.stats.got += 1
        for tap in self.taps:
            tap(item)
        return item


class LatestSlot(Generic[T]):
    """Holds only the newest item: for camera frames, where a stale frame is worse than none."""

    def __init__(self) -> None:
        self._item: T | None = None
        self._event = asyncio.Event()
        self.stats = QueueStats()

    def put(self, item: T) -> None:
        if self._item is not None:
            self.stats.superseded += 1
        self._item = item
        self.stats.put += 1
        self._event.set()

    async def get(self) -> T:
        while self._item is None:
            self._event.clear()
            await self._event.wait()
        item, self._item = self._item, None
        self.stats.got += 1
        return item

    def take_newer(self, current: T) -> T:
        """The newest item if one arrived since ``current`` was taken, else ``current``."""
        if self._item is None:
            return current
        # ``current`` was taken and then overtaken before use: it counts as superseded too.
        self.stats.superseded += 1
        item, self._item = self._item, None
        self.stats.got += 1
        return item
