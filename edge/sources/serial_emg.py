"""EMG from a microcontroller over USB serial, read in a thread so the event loop never blocks.

The port is reopened with exponential backoff whenever it disappears (cable pulled, board
reset); every reconnect marks a discontinuity so no window joins samples across it. Any other
error in the reader (a bad setting such as an absurd baudrate, a bug) is logged, counted and
handled the same way: a live serial source never ends on its own.

Cost: the thread reads whatever has arrived every BATCH_S (not every USB packet), parses the
whole read at once (LineParser.feed_batch) and posts the chunk to the loop without waiting for
it; it waits only when the pipeline is full (backpressure, counted), so nothing is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import select
import threading
import time
from collections import deque
from dataclasses import dataclass

import numpy as np
import serial

from edge.queues import CountingQueue
from edge.sources.chunk import SampleChunk
from edge.sources.line_protocol import NO_COUNTER, LineParser, ParsedBatch, ParseStats

log = logging.getLogger(__name__)

# One read (and one hand-off to the loop) per this many seconds: ~20 lines at 1 kHz. It adds at
# most this much latency (10 ms on average) and saves a thread and loop wake-up per USB packet.
BATCH_S = 0.02
READ_MAX = 1 << 16  # bytes per read: far more than BATCH_S brings at any baudrate
IDLE_WAIT_S = 0.1  # nothing arrived: wait this long for the first byte (or a hang-up, or stop)
# Chunks posted to the loop but not yet in the queue (160 ms at BATCH_S). A full queue, or a loop
# busy for that long, holds them up; then the reader waits and the data waits in the port's buffer.
MAX_IN_FLIGHT = 8
ROOM_POLL_S = 0.1  # a waiting reader checks for stop this often
# An unexpected error is logged with its traceback the first time (per place and type), then at
# most once per this many seconds, with the number left out in between.
UNEXPECTED_LOG_INTERVAL_S = 60.0


@dataclass
class SerialStats:
    connected: bool = False
    connects: int = 0
    disconnects: int = 0
    open_failures: int = 0
    bytes_read: int = 0
    reads: int = 0  # reads that returned data: bytes_read / reads is the batch size
    last_error: str | None = None  # cleared by the next successful open
    # The reader waited for room: MAX_IN_FLIGHT chunks were posted but not yet in the queue,
    # because the queue was full (backpressure) or the loop was busy for that long.
    waited_full: int = 0
    # Exceptions other than the port's own (SerialException, OSError): a bad setting or a bug.
    # Each one closes the port and reopens it with backoff.
    reader_errors: int = 0
    last_reader_error: str | None = None  # kept after a reopen, unlike last_error
    chunks_dropped_at_stop: int = 0  # posted but never queued because the source was stopped


class _Handoff:
    """Chunks from the reader thread into the loop's :class:`CountingQueue`, in order.

    The thread posts a chunk with ``call_soon_threadsafe`` and does not wait for it. Normally the
    callback puts it into the queue at once (``try_put``); when the queue is full it waits in a
    backlog, which :meth:`serve` feeds into the queue with a blocking ``put``. At most
    MAX_IN_FLIGHT chunks are posted but not yet in the queue: then the thread waits (counted in
    ``waited_full``) and the data waits in the serial port's buffer. Nothing is dropped.
    """

    def __init__(
        self, loop: asyncio.AbstractEventLoop, out: CountingQueue[SampleChunk], stats: SerialStats
    ) -> None:
        self.loop = loop
        self.out = out
        self.stats = stats
        # Each counter has one writer (no lock needed): posted - queued is the number in flight.
        self._posted = 0  # the reader thread
        self._queued = 0  # the loop
        self._reader_waiting = False
        self._room = threading.Event()
        self._backlog: deque[SampleChunk] = deque()  # loop side only
        self._wake = asyncio.Event()
        self._reader_done = False

    # --- the reader thread ---

    def send(self, chunk: SampleChunk, stop: threading.Event) -> bool:
        """Post ``chunk``; False (not posted) if ``stop`` was set while waiting for room."""
        if self._posted - self._queued >= MAX_IN_FLIGHT:
            self.stats.waited_full += 1
            self._reader_waiting = True
            try:
                while True:
                    self._room.clear()
                    # Checked after clear(): a chunk queued from here on sets _room again.
                    if self._posted - self._queued < MAX_IN_FLIGHT:
                        break
                    self._room.wait(ROOM_POLL_S)
                    if stop.is_set():
                        return False
            finally:
                self._reader_waiting = False
        self._posted += 1
        self.loop.call_soon_threadsafe(self._arrive, chunk)
        return True

    def reader_exited(self) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting any more
            self.loop.call_soon_threadsafe(self._on_reader_exit)

    # --- the event loop ---

    def _arrive(self, chunk: SampleChunk) -> None:
        if not self._backlog and self.out.try_put(chunk):
            self._did_queue()
        else:
            self._backlog.append(chunk)
            self._wake.set()

    def _did_queue(self) -> None:
        self._queued += 1
        if self._reader_waiting:
            self._room.set()

    def _on_reader_exit(self) -> None:
        self._reader_done = True
        self._wake.set()

    async def serve(self) -> None:
        """Feed held-up chunks into the queue until the reader thread has exited."""
        self._reader_done = False
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._backlog:
                await self.out.put(self._backlog[0])
                self._backlog.popleft()
                self._did_queue()
            if self._reader_done:
                return

    def abandon(self) -> int:
        """Forget held-up chunks (the source is stopping); returns how many."""
        n = len(self._backlog)
        self._backlog.clear()
        return n


class SerialEmgSource:
    """Reads ``n,v1,v2,v3`` / ``v1,v2,v3`` lines from ``port`` into a :class:`CountingQueue`."""

    def __init__(
        self,
        port: str,
        baudrate: int,
        n_channels: int,
        value_min: float,
        value_max: float,
        reconnect_min_s: float,
        reconnect_max_s: float,
    ) -> None:
        self.port = port
        self.baudrate = baudrate
        self.parser = LineParser(n_channels, value_min, value_max)
        self.reconnect_min_s = reconnect_min_s
        self.reconnect_max_s = reconnect_max_s
        self.stats = SerialStats()
        self._stop = threading.Event()
        self._next_sample = 0
        self._tracebacks_logged: set[tuple[str, type[BaseException]]] = set()
        self._unexpected_logged_at = -float("inf")
        self._unexpected_unlogged = 0

    @property
    def parse_stats(self) -> ParseStats:
        return self.parser.stats

    @property
    def available(self) -> bool:
        return self.stats.connected

    def stop(self) -> None:
        self._stop.set()

    async def run(self, out: CountingQueue[SampleChunk]) -> None:
        """Read until :meth:`stop` (or cancellation); returns when the reader thread has exited."""
        self._stop.clear()
        handoff = _Handoff(asyncio.get_running_loop(), out, self.stats)
        thread: threading.Thread | None = None
        try:
            while not self._stop.is_set():
                thread = threading.Thread(
                    target=self._reader_main, args=(handoff,), name="emg-serial", daemon=True
                )
                thread.start()
                await handoff.serve()
                if not self._stop.is_set():
                    # Only a BaseException gets past the reader's own guards (it is logged there).
                    # EMG must not end for good: start a new reader after the longest backoff.
                    log.error("EMG serial: the reader thread ended; starting a new one")
                    await asyncio.sleep(self.reconnect_max_s)
        finally:
            self._stop.set()
            if thread is not None:
                await asyncio.to_thread(thread.join)
            dropped = handoff.abandon()
            if dropped:
                self.stats.chunks_dropped_at_stop += dropped
                log.info("EMG serial: stopped with %d chunks not yet queued", dropped)

    # --- the reader thread ---

    def _reader_main(self, handoff: _Handoff) -> None:
        try:
            while not self._stop.is_set():
                try:
                    self._read_forever(handoff)
                except Exception as exc:  # a bug outside the per-connection guards: go on reading
                    self._unexpected("EMG serial reader", exc)
                    self._stop.wait(self.reconnect_max_s)
        except BaseException as exc:  # e.g. SystemExit: end this thread, run() starts another
            self._unexpected("EMG serial reader thread", exc)
        finally:
            handoff.reader_exited()

    def _read_forever(self, handoff: _Handoff) -> None:
        delay = self.reconnect_min_s
        while not self._stop.is_set():
            opened_at = self._connect_and_pump(handoff)
            if self._stop.is_set():
                return
            if opened_at is not None and time.monotonic() - opened_at >= self.reconnect_max_s:
                # It was up for a while (a cable pulled): reopen at once, then back off from the start.
                delay = self.reconnect_min_s
            else:
                # It could not be opened, or dropped right after opening (a flaky board, another
                # program such as ModemManager holding the port, an error on every read): back off
                # rather than reopen in a busy loop.
                self._stop.wait(delay)
                delay = min(delay * 2, self.reconnect_max_s)

    def _connect_and_pump(self, handoff: _Handoff) -> float | None:
        """Open the port and read it until it fails or stop; when it opened, or None."""
        try:
            # timeout=0: a read takes what has arrived and never waits (the pacing is BATCH_S).
            port = serial.Serial(self.port, self.baudrate, timeout=0)
        except (serial.SerialException, OSError) as exc:
            self.stats.open_failures += 1
            self._note_error(f"cannot open {self.port}: {exc}")
            return None
        except Exception as exc:  # e.g. OverflowError for an absurd baudrate: retried all the same
            self.stats.open_failures += 1
            self._unexpected(f"cannot open {self.port}", exc)
            return None
        opened_at = time.monotonic()
        self.stats.connected = True
        self.stats.connects += 1
        self.stats.last_error = None
        log.info("EMG serial connected on %s at %d baud", self.port, self.baudrate)
        self.parser.resync()
        try:
            self._pump(port, handoff)
        except (serial.SerialException, OSError) as exc:
            self._note_error(f"{self.port} lost: {exc}")
        except Exception as exc:
            self._unexpected(f"reading {self.port}", exc)
        finally:
            self.stats.connected = False
            self.stats.disconnects += 1
            try:
                port.close()
            except Exception as exc:  # a port that is gone may fail to close; it is dropped anyway
                log.debug("EMG serial: closing %s: %r", self.port, exc)
        return opened_at

    def _pump(self, port: serial.Serial, handoff: _Handoff) -> None:
        discontinuity = True
        idle: select.poll | None = None
        next_read = time.monotonic()
        while True:
            pause = next_read - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            if self._stop.is_set():
                return
            next_read = time.monotonic() + BATCH_S
            # Everything that has arrived, in one system call or two; a lost port raises here.
            data = port.read(READ_MAX)
            if not data:
                # Nothing yet: sleep until the first byte rather than poll every BATCH_S. A hang-up
                # wakes this too, and the next read reports it.
                if idle is None:
                    idle = select.poll()
                    idle.register(port.fileno(), select.POLLIN)
                idle.poll(IDLE_WAIT_S * 1000)
                continue
            self.stats.reads += 1
            self.stats.bytes_read += len(data)
            batch = self.parser.feed_batch(data)
            if len(batch):
                if not self._emit(batch, discontinuity, handoff):
                    return
                discontinuity = False

    def _emit(self, batch: ParsedBatch, discontinuity: bool, handoff: _Handoff) -> bool:
        """One chunk per gap-free run of ``batch``; False if stopped while waiting for room."""
        received_at = time.monotonic()
        gaps, counters = batch.gaps, batch.counters
        n = len(batch)
        cuts = [0, n] if gaps is None else [0, *(i for i in np.flatnonzero(gaps).tolist() if i), n]
        for start, end in itertools.pairwise(cuts):
            gap = 0 if gaps is None else int(gaps[start])
            if gap:
                self._next_sample += gap
                discontinuity = True
            counter = NO_COUNTER if counters is None else int(counters[start])
            chunk = SampleChunk(
                samples=batch.values[start:end] if end - start < n else batch.values,
                first_sample=self._next_sample,
                received_at=received_at,
                discontinuity=discontinuity,
                source_index=None if counter == NO_COUNTER else counter,
            )
            self._next_sample += end - start
            discontinuity = False
            if not handoff.send(chunk, self._stop):
                return False
        return True

    def _note_error(self, message: str) -> None:
        if message != self.stats.last_error:
            log.warning("EMG serial: %s", message)
        self.stats.last_error = message

    def _unexpected(self, where: str, exc: BaseException) -> None:
        message = f"{where}: {type(exc).__name__}: {exc}"
        self.stats.reader_errors += 1
        self.stats.last_error = self.stats.last_reader_error = message
        now = time.monotonic()
        key = (where, type(exc))
        if key not in self._tracebacks_logged:
            self._tracebacks_logged.add(key)
            log.error("EMG serial: unexpected error, retrying with backoff: %s", message, exc_info=exc)
        elif now - self._unexpected_logged_at >= UNEXPECTED_LOG_INTERVAL_S:
            log.error(
                "EMG serial: unexpected error, retrying with backoff: %s (%d more since the last report)",
                message,
                self._unexpected_unlogged,
            )
            self._unexpected_unlogged = 0
        else:
            self._unexpected_unlogged += 1
            return
        self._unexpected_logged_at = now
