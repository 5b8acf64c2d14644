"""SerialEmgSource in-process on a real pseudo-terminal: unexpected errors, backpressure, batching.

A thread writes ``n,v1,v2,v3`` lines into the pty's master side; the source opens the slave with
the real pyserial. Where an error must be forced, pyserial's ``Serial`` is subclassed (the data
still comes through the real pty).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import itertools
import logging
import os
import threading
import time
import tty
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
import serial

from edge.queues import CountingQueue
from edge.sources import serial_emg
from edge.sources.chunk import SampleChunk
from edge.sources.serial_emg import SerialEmgSource

LOGGER = "edge.sources.serial_emg"
ABSURD_BAUDRATE = 9223372036854775807  # passes `baudrate > 0`; pyserial raises OverflowError


class PtyBoard:
    """A fake board: a pty pair whose master side a thread writes counter lines into.

    Line ``k`` is ``k,k%1000,k//1000%1000,7``, so a sample tells which line it came from. The
    slave stays open here too, so the pty never hangs up when the source reopens it.
    """

    def __init__(self) -> None:
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        os.set_blocking(self.master, False)
        self.path = os.ttyname(self.slave)
        self.sent = 0
        self._stop = threading.Event()
        self._finish = threading.Event()
        self._thread: threading.Thread | None = None

    def stream(self, rate: float, lines_per_write: int = 1, total: int | None = None) -> None:
        self._thread = threading.Thread(target=self._write, args=(rate, lines_per_write, total), daemon=True)
        self._thread.start()

    def _write(self, rate: float, per_write: int, total: int | None) -> None:
        t0 = time.monotonic()
        while not self._finish.is_set() and (total is None or self.sent < total):
            due = t0 + (self.sent + per_write) / rate
            time.sleep(max(0.0, due - time.monotonic()))
            n = per_write if total is None else min(per_write, total - self.sent)
            data = b"".join(
                b"%d,%d,%d,7\n" % (k, k % 1000, k // 1000 % 1000) for k in range(self.sent, self.sent + n)
            )
            view = memoryview(data)
            while view and not self._stop.is_set():
                try:
                    view = view[os.write(self.master, view) :]
                except OSError as exc:  # the pty's buffer is full: the reader is not reading
                    if exc.errno not in (errno.EAGAIN, errno.EWOULDBLOCK):
                        raise
                    time.sleep(0.001)
            self.sent += n

    def finish(self) -> int:
        """Stop streaming after the write in progress; returns the number of lines sent."""
        self._finish.set()
        if self._thread is not None:
            self._thread.join(10)
            assert not self._thread.is_alive()
        return self.sent

    def close(self) -> None:
        self._finish.set()
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        os.close(self.master)
        os.close(self.slave)


@pytest.fixture
def board() -> Iterator[PtyBoard]:
    b = PtyBoard()
    yield b
    b.close()


def source_on(path: str, baudrate: int = 230400, min_s: float = 0.05, max_s: float = 0.2) -> SerialEmgSource:
    return SerialEmgSource(path, baudrate, 3, 0, 1023, reconnect_min_s=min_s, reconnect_max_s=max_s)


@dataclass
class Running:
    task: asyncio.Task[None]
    out: CountingQueue[SampleChunk]
    chunks: list[SampleChunk] = field(default_factory=list)
    consume_delay_s: float = 0.0

    @property
    def samples(self) -> int:
        return sum(len(c.samples) for c in self.chunks)


@contextlib.asynccontextmanager
async def running(
    source: SerialEmgSource, maxsize: int = 64, consume_delay_s: float = 0.0
) -> AsyncIterator[Running]:
    out = CountingQueue[SampleChunk](maxsize)
    run = Running(asyncio.create_task(source.run(out)), out, consume_delay_s=consume_delay_s)

    async def consume() -> None:
        while True:
            chunk = await out.get()
            run.chunks.append(chunk)
            if run.consume_delay_s:
                await asyncio.sleep(run.consume_delay_s)

    consumer = asyncio.create_task(consume())
    try:
        yield run
    finally:
        source.stop()
        await asyncio.wait_for(run.task, 5)
        consumer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await consumer


async def until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.01)


def check_samples_match_lines(chunks: list[SampleChunk]) -> None:
    """Every sample is the line its counter names, and first_sample advances with the counter."""
    for chunk in chunks:
        assert chunk.source_index is not None
        k = chunk.source_index + np.arange(len(chunk.samples))
        np.testing.assert_array_equal(chunk.samples[:, 0], k % 1000)
        np.testing.assert_array_equal(chunk.samples[:, 1], k // 1000 % 1000)
    for a, b in itertools.pairwise(chunks):
        assert a.source_index is not None and b.source_index is not None
        if not b.discontinuity:
            assert b.source_index == a.source_index + len(a.samples)
            assert b.first_sample == a.first_sample + len(a.samples)


def tracebacks(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == LOGGER and r.exc_info]


def errors(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == LOGGER and r.levelno >= logging.ERROR]


# --- an unexpected exception never ends EMG ----------------------------------------------------


def test_absurd_baudrate_is_retried_forever_with_one_traceback(
    board: PtyBoard, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real pyserial raises OverflowError opening the real pty at this baudrate."""
    caplog.set_level(logging.INFO, LOGGER)
    monkeypatch.setattr(serial_emg, "UNEXPECTED_LOG_INTERVAL_S", 0.4, raising=False)
    source = source_on(board.path, ABSURD_BAUDRATE, min_s=0.01, max_s=0.04)
    fds_before = len(os.listdir("/proc/self/fd"))

    async def scenario() -> None:
        async with running(source) as run:
            await asyncio.sleep(1.3)
            assert not run.task.done(), "the source ended: EMG would be gone for good"
            assert source.stats.open_failures >= 10, source.stats
            # It still opens the port as soon as the baudrate is one pyserial can set.
            source.baudrate = 230400
            board.stream(rate=1000, lines_per_write=2)
            await until(lambda: run.samples >= 100, 5, "samples once the baudrate is sane")

    asyncio.run(scenario())
    st = source.stats
    assert st.reader_errors == st.open_failures and st.connects == 1, st
    assert st.last_reader_error is not None and "OverflowError" in st.last_reader_error, st
    # One traceback, then a line per UNEXPECTED_LOG_INTERVAL_S naming how many were left out.
    assert len(tracebacks(caplog)) == 1, caplog.text
    later = errors(caplog)[1:]
    assert 1 <= len(later) <= 4, caplog.text
    assert all("more since the last report" in r.getMessage() for r in later), caplog.text
    assert len(os.listdir("/proc/self/fd")) == fds_before  # no descriptor leaks per failed open


class FailsOnce(serial.Serial):  # type: ignore[misc]  # pyserial has no type hints
    """The real pyserial, except that one call (``where``: "open" or "read") raises once."""

    where = "read"
    calls = 0
    error: Callable[[], BaseException] = lambda: OverflowError("forced by the test")

    def open(self) -> None:
        if FailsOnce.where == "open":
            self._maybe_fail()
        super().open()

    def read(self, size: int = 1) -> bytes:
        if FailsOnce.where == "read":
            self._maybe_fail()
        data: bytes = super().read(size)
        return data

    @staticmethod
    def _maybe_fail() -> None:
        FailsOnce.calls += 1
        if FailsOnce.calls == 5:
            raise FailsOnce.error()


@pytest.fixture
def fails_once(monkeypatch: pytest.MonkeyPatch) -> type[FailsOnce]:
    monkeypatch.setattr(serial, "Serial", FailsOnce)
    monkeypatch.setattr(FailsOnce, "calls", 0)
    monkeypatch.setattr(FailsOnce, "where", "read")
    monkeypatch.setattr(FailsOnce, "error", FailsOnce.error)
    return FailsOnce


@pytest.mark.parametrize("where", ["read", "open"])
def test_unexpected_exception_reopens_and_streaming_goes_on(
    board: PtyBoard, caplog: pytest.LogCaptureFixture, fails_once: type[FailsOnce], where: str
) -> None:
    caplog.set_level(logging.INFO, LOGGER)
    fails_once.where = where
    if where == "open":
        fails_once.calls = 4  # the first open fails
    source = source_on(board.path)
    board.stream(rate=1000, lines_per_write=2)

    async def scenario() -> Running:
        async with running(source) as run:
            await until(lambda: fails_once.calls >= 5, 5, "the forced error")
            after = run.samples
            await until(lambda: run.samples >= after + 300, 5, "samples after the error")
            assert not run.task.done()
            return run

    run = asyncio.run(scenario())
    check_samples_match_lines(run.chunks)
    # The reopen is a discontinuity (pyserial flushes the input on open): no window spans it.
    assert sum(c.discontinuity for c in run.chunks) == (2 if where == "read" else 1)
    st = source.stats
    assert st.reader_errors == 1, st
    assert st.last_reader_error is not None and "OverflowError: forced by the test" in st.last_reader_error
    if where == "read":
        assert (st.connects, st.disconnects, st.open_failures) == (2, 2, 0), st
    else:
        assert (st.connects, st.disconnects, st.open_failures) == (1, 1, 1), st
    assert len(tracebacks(caplog)) == 1, caplog.text
    assert "OverflowError: forced by the test" in caplog.text


def test_exception_in_parsing_reopens_and_streaming_goes_on(
    board: PtyBoard, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, LOGGER)
    source = source_on(board.path)
    real_feed = source.parser.feed_batch
    calls = 0

    def buggy_feed(data: bytes) -> Any:
        nonlocal calls
        calls += 1
        if calls == 5:
            raise ZeroDivisionError("a parser bug")
        return real_feed(data)

    source.parser.feed_batch = buggy_feed  # type: ignore[method-assign]
    board.stream(rate=1000, lines_per_write=2)

    async def scenario() -> None:
        async with running(source) as run:
            await until(lambda: source.stats.reader_errors >= 1, 5, "the parser error")
            after = run.samples
            await until(lambda: run.samples >= after + 300, 5, "samples after the error")

    asyncio.run(scenario())
    assert source.stats.connects == 2 and source.stats.reader_errors == 1, source.stats
    assert len(tracebacks(caplog)) == 1, caplog.text


class ThreadKiller(BaseException):
    """Not an Exception: gets past ``except Exception`` and ends the reader thread."""


def test_reader_thread_ended_by_a_base_exception_is_replaced(
    board: PtyBoard, caplog: pytest.LogCaptureFixture, fails_once: type[FailsOnce]
) -> None:
    caplog.set_level(logging.INFO, LOGGER)
    fails_once.where = "read"
    fails_once.error = lambda: ThreadKiller("stop reading")
    source = source_on(board.path)
    board.stream(rate=1000, lines_per_write=2)

    async def scenario() -> None:
        async with running(source) as run:
            await until(lambda: fails_once.calls >= 5, 5, "the thread to end")
            after = run.samples
            await until(lambda: run.samples >= after + 300, 5, "samples from a new reader thread")

    asyncio.run(scenario())
    assert source.stats.connects == 2 and source.stats.reader_errors == 1, source.stats
    assert "ThreadKiller: stop reading" in (source.stats.last_reader_error or "")
    assert "the reader thread ended; starting a new one" in caplog.text


# --- batching and hand-off ------------------------------------------------------------------


def test_reads_in_batches_at_1khz(board: PtyBoard) -> None:
    """One line per write (a board's USB packets), but about one read and one chunk per BATCH_S."""
    source = source_on(board.path)
    seconds = 1.5

    async def scenario() -> Running:
        async with running(source) as run:
            await until(lambda: source.stats.connected, 5, "the port to open")
            board.stream(rate=1000, lines_per_write=1, total=int(1000 * seconds))
            await until(lambda: run.samples >= 1000 * seconds - 1, 10, "every line")
            return run

    run = asyncio.run(scenario())
    check_samples_match_lines(run.chunks)
    # One chunk per write (a USB packet) would be 1500; one per 20 ms is 75.
    assert len(run.chunks) <= 100, len(run.chunks)
    assert source.stats.reads <= 1.3 * seconds / serial_emg.BATCH_S, source.stats
    assert source.parser.fast_lines == source.parse_stats.lines_ok  # all on the vectorised path


def test_reader_does_not_wait_for_the_loop_per_chunk(board: PtyBoard) -> None:
    """While the event loop is busy (the queue has room), the reader goes on reading."""
    source = source_on(board.path)
    board.stream(rate=1000, lines_per_write=1)

    async def scenario() -> None:
        async with running(source) as run:
            await until(lambda: run.samples >= 100, 5, "samples")
            # Block the loop (nothing can be put into the queue meanwhile) until the reader has read
            # 100 more lines (~12 bytes each), about 5 batches: a reader that waits for the loop
            # after each chunk reads one batch at most.
            read_before = source.stats.bytes_read
            deadline = time.monotonic() + 2.0
            while source.stats.bytes_read < read_before + 1200 and time.monotonic() < deadline:
                time.sleep(0.005)
            read_during = source.stats.bytes_read - read_before
            assert read_during >= 1200, read_during
            await until(lambda: run.samples >= board.sent - 30, 5, "the rest")
            check_samples_match_lines(run.chunks)

    asyncio.run(scenario())


def test_full_queue_makes_the_reader_wait_and_nothing_is_lost(board: PtyBoard) -> None:
    source = source_on(board.path)
    total = 0

    async def scenario() -> Running:
        nonlocal total
        async with running(source, maxsize=2, consume_delay_s=0.1) as run:
            await until(lambda: source.stats.connected, 5, "the port to open")
            board.stream(rate=8000, lines_per_write=40)
            await until(lambda: source.stats.waited_full >= 3, 20, "the reader to wait for room")
            assert run.out.stats.waited_full >= 1
            total = await asyncio.to_thread(board.finish)  # the writer may be waiting for room too
            run.consume_delay_s = 0.0
            await until(lambda: run.samples >= total - 1, 20, "every line")
            return run

    run = asyncio.run(scenario())
    check_samples_match_lines(run.chunks)
    assert not any(c.discontinuity for c in run.chunks[1:])
    assert run.samples == total - 1  # all but the first line, dropped as partial after the open
    assert source.parse_stats.as_dict() == {
        "lines_ok": total - 1,
        "samples_lost": 0,
        "counter_jumps": 0,
        "counter_resets": 0,
        "lines_rejected": 1,
        "rejected_partial": 1,
    }
    assert run.out.stats.put == run.out.stats.got == len(run.chunks)
    assert source.stats.chunks_dropped_at_stop == 0
