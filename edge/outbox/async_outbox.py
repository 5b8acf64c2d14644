"""The outbox behind one worker thread, with acks coalesced into batches and a retry/vacuum timer."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from .outbox import Outbox
from .store import OutboxRow

if TYPE_CHECKING:
    from edge.config.outbox import OutboxConfig

log = logging.getLogger("edge.outbox")  # the package's one logger (see recovery.py)
T = TypeVar("T")


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
        """Identifies this seq space (see :mod:`edge.outbox`); constant while the outbox is open."""
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
