"""Replay a recording CSV through the live pipeline, at real time, N x, or as fast as it goes.

Timing comes from the sample clock, so a replay produces the same windows, the same
decisions and the same events at any speed.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path

from edge.dsp import contiguous_segments
from edge.queues import CountingQueue
from edge.recording import Recording, load_recording
from edge.sources.chunk import SampleChunk


@dataclass
class ReplayStats:
    samples_sent: int = 0
    finished: bool = False
    started_at: float = 0.0  # time.monotonic()
    finished_at: float = 0.0


class ReplayEmgSource:
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
        self.recording: Recording = load_recording(path, source_layout=source_layout)
        self.sample_rate_hz = sample_rate_hz
        self.speed = speed
        # As fast as possible: bigger chunks, fewer hand-offs; the windows are the same.
        chunk_s = chunk_ms / 1000 if speed is not None else 1.0
        self.chunk = max(1, round(sample_rate_hz * chunk_s))
        self.loop_forever = loop_forever
        self.stats = ReplayStats()
        self._stop = asyncio.Event()

    @property
    def available(self) -> bool:
        # A file never goes away; the service marks EMG unavailable once the queued samples
        # of a finished replay have been processed.
        return True

    def stop(self) -> None:
        self._stop.set()

    async def run(self, out: CountingQueue[SampleChunk]) -> None:
        rec = self.recording
        labels = None if rec.labels is None else list(rec.labels)
        segments = contiguous_segments(rec.sample_index, labels)
        t0 = time.monotonic()
        self.stats.started_at = t0
        stream_pos = 0  # samples since the replay started, including earlier passes
        while not self._stop.is_set():
            for seg in segments:
                first = True
                for a in range(seg.start, seg.stop, self.chunk):
                    if self._stop.is_set():
                        return
                    b = min(a + self.chunk, seg.stop)
                    if self.speed is not None:
                        due = t0 + (stream_pos + b - a) / (self.sample_rate_hz * self.speed)
                        delay = due - time.monotonic()
                        if delay > 0:
                            await asyncio.sleep(delay)
                    else:
                        # put() on a queue with room never yields: give the loop a turn.
                        await asyncio.sleep(0)
                    await out.put(
                        SampleChunk(
                            samples=rec.signal[a:b],
                            first_sample=stream_pos,
                            received_at=time.monotonic(),
                            # A gap in the file's sample column, or a new segment, is a break.
                            discontinuity=first,
                            source_index=int(rec.sample_index[a]),
                        )
                    )
                    first = False
                    stream_pos += b - a
                    self.stats.samples_sent += b - a
            if not self.loop_forever:
                break
        self.stats.finished_at = time.monotonic()
        self.stats.finished = True
