"""EMG from a microcontroller over USB serial, read in a thread so the event loop never blocks.

The port is reopened with exponential backoff whenever it disappears (cable pulled, board
reset); every reconnect marks a discontinuity so no window joins samples across it.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass

import numpy as np
import serial

from edge.queues import CountingQueue
from edge.sources.chunk import SampleChunk
from edge.sources.line_protocol import LineParser, ParsedLine, ParseStats

log = logging.getLogger(__name__)

READ_TIMEOUT_S = 0.02  # bounds latency of a partial read and of noticing a stop request


@dataclass
class SerialStats:
    connected: bool = False
    connects: int = 0
    disconnects: int = 0
    open_failures: int = 0
    bytes_read: int = 0
    last_error: str | None = None


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

    @property
    def parse_stats(self) -> ParseStats:
        return self.parser.stats

    @property
    def available(self) -> bool:
        return self.stats.connected

    def stop(self) -> None:
        self._stop.set()

    async def run(self, out: CountingQueue[SampleChunk]) -> None:
        """Read until :meth:`stop`; returns when the reader thread has exited."""
        loop = asyncio.get_running_loop()
        self._stop.clear()
        thread = threading.Thread(target=self._read_forever, args=(loop, out), name="emg-serial", daemon=True)
        thread.start()
        try:
            while thread.is_alive():
                await asyncio.sleep(0.1)
        finally:
            self._stop.set()
            await asyncio.to_thread(thread.join)

    def _read_forever(self, loop: asyncio.AbstractEventLoop, out: CountingQueue[SampleChunk]) -> None:
        delay = self.reconnect_min_s
        while not self._stop.is_set():
            try:
                port = serial.Serial(self.port, self.baudrate, timeout=READ_TIMEOUT_S)
            except (serial.SerialException, OSError) as exc:
                self.stats.open_failures += 1
                self._note_error(f"cannot open {self.port}: {exc}")
                self._stop.wait(delay)
                delay = min(delay * 2, self.reconnect_max_s)
                continue
            opened_at = time.monotonic()
            self.stats.connected = True
            self.stats.connects += 1
            self.stats.last_error = None
            log.info("EMG serial connected on %s at %d baud", self.port, self.baudrate)
            self.parser.resync()
            try:
                self._pump(port, loop, out)
            except (serial.SerialException, OSError) as exc:
                self._note_error(f"{self.port} lost: {exc}")
            finally:
                self.stats.connected = False
                self.stats.disconnects += 1
                port.close()
            if time.monotonic() - opened_at >= self.reconnect_max_s:
                # It was up for a while (a cable pulled): reopen at once, then back off from the start.
                delay = self.reconnect_min_s
            else:
                # It dropped right after opening (a flaky board, or another program such as
                # ModemManager holding the port): back off rather than reopen in a busy loop.
                self._stop.wait(delay)
                delay = min(delay * 2, self.reconnect_max_s)

    def _pump(
        self, port: serial.Serial, loop: asyncio.AbstractEventLoop, out: CountingQueue[SampleChunk]
    ) -> None:
        discontinuity = True
        while not self._stop.is_set():
            data = port.read(max(1, port.in_waiting))
            if not data:
                continue
            self.stats.bytes_read += len(data)
            rows = self.parser.feed(data)
            if not rows:
                continue
            # Split at counter gaps so each chunk is gap-free.
            start = 0
            for i, row in enumerate(rows):
                if row.gap_before and i > start:
                    self._emit(rows[start:i], discontinuity, loop, out)
                    discontinuity = False
                    start = i
                if row.gap_before:
                    self._next_sample += row.gap_before
                    discontinuity = True
            self._emit(rows[start:], discontinuity, loop, out)
            discontinuity = False

    def _emit(
        self,
        rows: list[ParsedLine],
        discontinuity: bool,
        loop: asyncio.AbstractEventLoop,
        out: CountingQueue[SampleChunk],
    ) -> None:
        chunk = SampleChunk(
            samples=np.array([r.values for r in rows], dtype=np.float64),
            first_sample=self._next_sample,
            received_at=time.monotonic(),
            discontinuity=discontinuity,
            source_index=rows[0].counter,
        )
        self._next_sample += len(rows)
        # Blocks this thread (never the loop) while the pipeline is full: backpressure, not loss.
        future = asyncio.run_coroutine_threadsafe(out.put(chunk), loop)
        while not self._stop.is_set():
            try:
                future.result(timeout=0.5)
                return
            except TimeoutError:
                continue
        future.cancel()

    def _note_error(self, message: str) -> None:
        if message != self.stats.last_error:
            log.warning("EMG serial: %s", message)
        self.stats.last_error = message
