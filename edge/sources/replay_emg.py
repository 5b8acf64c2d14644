"""Replay a recording CSV through the live pipeline, at real time, N x, or as fast as it goes.

Timing comes from the sample clock, so a replay produces the same windows, the same
decisions and the same events at any speed.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from edge.emg.dsp import contiguous_segments
from edge.queues import CountingQueue
from edge.recording import Recording, RecordingError, iter_recording
from edge.sources.chunk import SampleChunk

log = logging.getLogger(__name__)


@dataclass
class ReplayStats:
    samples_sent: int = 0
    finished: bool = False
    started_at: float = 0.0  # time.monotonic()
    finished_at: float = 0.0


class ReplayEmgSource:
    """Streams the file block by block (:func:`edge.recording.iter_recording`): memory stays
    flat whatever the recording's length. Only the label runs are kept, for :meth:`label_at`."""

    def __init__(
        self,
        path: Path,
        sample_rate_hz: float,
        speed: float | None,
        chunk_ms: float = 10.0,
        loop_forever: bool = False,
        source_layout: bool = False,
    ) -> None:
        """``speed`` None means as fast as the pipeline accepts (``max``)."""
        self.path = path
        self.source_layout = source_layout
        self.sample_rate_hz = sample_rate_hz
        self.speed = speed
        # As fast as possible: bigger chunks, fewer hand-offs; the windows are the same.
        chunk_s = chunk_ms / 1000 if speed is not None else 1.0
        self.chunk = max(1, round(sample_rate_hz * chunk_s))
        self.loop_forever = loop_forever
        self.stats = ReplayStats()
        self._stop = asyncio.Event()
        self._run_starts: list[int] = []  # sample index where each label run begins (first pass)
        self._run_labels: list[str] = []
        # A wrong file (header, first rows) fails here, at start, with a clear error.
        next(iter_recording(path, source_layout, block_rows=64), None)

    @property
    def available(self) -> bool:
        # A file never goes away; the service marks EMG unavailable once the queued samples
        # of a finished replay have been processed.
        return True

    def stop(self) -> None:
        self._stop.set()

    def label_at(self, sample: int) -> str | None:
        """The recording's own label at ``sample`` (the file's sample column), if it has labels."""
        i = bisect.bisect_right(self._run_starts, sample) - 1
        return self._run_labels[i] if i >= 0 else None

    async def run(self, out: CountingQueue[SampleChunk]) -> None:
        try:
            await self._stream(out)
        except RecordingError as exc:
            # Found part-way through the file: the replay ends there (a restart would send the
            # first part again).
            log.error("replay stopped: %s", exc)
        self.stats.finished_at = time.monotonic()
        self.stats.finished = True

    async def _stream(self, out: CountingQueue[SampleChunk]) -> None:
        t0 = time.monotonic()
        self.stats.started_at = t0
        stream_pos = 0  # samples since the replay started, including earlier passes
        first_pass = True
        while not self._stop.is_set():
            blocks = iter_recording(self.path, self.source_layout)
            previous: tuple[int, str | None] | None = None  # last row of the previous block
            while (rec := await asyncio.to_thread(next, blocks, None)) is not None:
                labels = None if rec.labels is None else rec.labels.tolist()
                if first_pass:
                    self._remember_runs(rec, labels)
                for seg in contiguous_segments(rec.sample_index, labels):
                    # A gap in the file's sample column, or a new segment, is a break; the first
                    # segment of a block continues the previous block's when nothing changed.
                    start_label = None if labels is None else labels[seg.start]
                    first = previous is None or (
                        previous != (int(rec.sample_index[seg.start]) - 1, start_label) or seg.start > 0
                    )
                    for a in range(seg.start, seg.stop, self.chunk):
                        if self._stop.is_set():
                            return
                        b = min(a + self.chunk, seg.stop)
                        await self._pace(t0, stream_pos + b - a)
                        await out.put(
                            SampleChunk(
                                samples=rec.signal[a:b],
                                first_sample=stream_pos,
                                received_at=time.monotonic(),
                                discontinuity=first,
                                source_index=int(rec.sample_index[a]),
                            )
                        )
                        first = False
                        stream_pos += b - a
                        self.stats.samples_sent += b - a
                last = len(rec.sample_index) - 1
                previous = (int(rec.sample_index[last]), None if labels is None else labels[last])
            first_pass = False
            if not self.loop_forever:
                break

    async def _pace(self, t0: float, due_samples: int) -> None:
        if self.speed is None:
            # put() on a queue with room never yields: give the loop a turn.
            await asyncio.sleep(0)
            return
        delay = t0 + due_samples / (self.sample_rate_hz * self.speed) - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)

    def _remember_runs(self, rec: Recording, labels: list[str] | None) -> None:
        if labels is None:
            return
        for seg in contiguous_segments(rec.sample_index, labels):
            label = labels[seg.start]
            if not self._run_labels or self._run_labels[-1] != label:
                self._run_starts.append(int(rec.sample_index[seg.start]))
                self._run_labels.append(label)
