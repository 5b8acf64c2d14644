"""The EMG path: sample chunks -> windows -> int8 model (off the loop) -> decision readings."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from edge.decision import ModalityReading
from edge.emg.classifier import EmgClassifier
from edge.emg.dsp import RingWindower
from edge.latency import RecentLatencies
from edge.queues import CountingQueue
from edge.sources.chunk import SampleChunk

# Well above the jitter of serial reads (tens of ms), well below the decision's staleness_s.
MAX_CLOCK_DRIFT_S = 0.25


@dataclass
class EmgStageStats:
    samples: int = 0
    windows: int = 0
    paused_samples: int = 0  # received while paused: discarded on purpose, and counted
    discontinuities: int = 0
    chunks_done: int = 0  # fully processed, readings delivered
    clock_resyncs: int = 0  # sample clock re-anchored to the monotonic clock (gap, or board rate off)
    inference_ms: RecentLatencies = field(default_factory=RecentLatencies)  # per window


class EmgStage:
    """Consumes :class:`SampleChunk` and calls ``on_reading`` once per classified window.

    Inference runs on a single dedicated thread (a TFLite interpreter is not thread-safe),
    so the event loop stays free for I/O while a window is classified.
    """

    def __init__(
        self,
        classifier: EmgClassifier,
        hop: int,
        sample_rate_hz: float,
        on_reading: Callable[[ModalityReading, SampleChunk], Awaitable[None]],
        beat: Callable[[], None],
        anchor_to_monotonic: bool = True,
    ) -> None:
        """Readings are timed on the sample clock (``sample / rate``), so the EMG decisions
        depend only on the data, never on how fast it is read.

        ``anchor_to_monotonic`` offsets that clock to time.monotonic(): a live or real-time
        stream then shares the camera's clock, which fusion and staleness need. It is anchored at
        the first chunk and again after a gap, or when the board's real rate has made the two
        clocks drift apart by more than MAX_CLOCK_DRIFT_S (0.5% rate error is 3 s in 10 minutes).
        A replay faster than real time keeps the bare sample clock.
        """
        self.classifier = classifier
        self.sample_rate_hz = sample_rate_hz
        self.windower = RingWindower(classifier.window, hop, classifier.spec.n_channels)
        self.hop = hop
        self.on_reading = on_reading
        self.beat = beat
        self.paused = False
        self.stats = EmgStageStats()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="emg-inference")
        self._next_sample: int | None = None
        self._window_start = 0  # stream sample at which the next window begins
        self._anchored = anchor_to_monotonic
        self._epoch = 0.0
        self._pending: tuple[EmgClassifier, int] | None = None

    def use(self, classifier: EmgClassifier, hop: int) -> None:
        """Swap the model in from the next chunk on (a hot swap: the source and its queue stay).

        A model with another window or hop re-windows from that chunk, so its first reading
        comes one window later; a chunk already being classified finishes with the old model.
        """
        same = (classifier, hop) == (self.classifier, self.hop)
        self._pending = None if same else (classifier, hop)

    @property
    def target(self) -> EmgClassifier:
        """The model the next chunk runs: a swap not yet applied (EMG paused, no data), or the current."""
        return self._pending[0] if self._pending is not None else self.classifier

    async def run(self, queue: CountingQueue[SampleChunk]) -> None:
        loop = asyncio.get_running_loop()
        while True:
            chunk = await queue.get()
            try:
                await self._process(chunk, loop)
            finally:
                self.stats.chunks_done += 1

    async def _process(self, chunk: SampleChunk, loop: asyncio.AbstractEventLoop) -> None:
        self.beat()
        n = len(chunk.samples)
        if self.paused:
            self.stats.paused_samples += n
            self._next_sample = None
            return
        self.stats.samples += n
        if self._pending is not None:
            self._swap(*self._pending, chunk.first_sample)
        gap = chunk.discontinuity or self._next_sample != chunk.first_sample
        if self._anchored:
            drift = chunk.received_at - self._time_of(chunk.first_sample + n)
            if gap or abs(drift) > MAX_CLOCK_DRIFT_S:
                self._epoch += drift
                self.stats.clock_resyncs += 1
        if gap:
            self.windower.reset()
            self.stats.discontinuities += 1
            self._window_start = chunk.first_sample
        self._next_sample = chunk.first_sample + n
        # Within a gap-free run the source index moves in step with the stream position.
        index_offset = None if chunk.source_index is None else chunk.source_index - chunk.first_sample
        windows = list(self.windower.push(chunk.samples))
        if not windows:
            return
        # One hand-off to the inference thread per chunk, not per window: a thread
        # round trip costs more than classifying a window.
        t0 = time.perf_counter()
        classifier = self.classifier
        probs = await loop.run_in_executor(self._executor, classifier.predict_proba, np.stack(windows))
        self.stats.inference_ms.add((time.perf_counter() - t0) * 1000 / len(windows))
        for row in probs:
            end_sample = self._window_start + classifier.window
            self._window_start += self.hop
            self.stats.windows += 1
            reading = ModalityReading(
                modality="emg",
                labels=classifier.labels,
                probs=row,
                t=self._time_of(end_sample),
                sample=end_sample - 1 + (index_offset or 0),
            )
            await self.on_reading(reading, chunk)

    def _swap(self, classifier: EmgClassifier, hop: int, first_sample: int) -> None:
        self._pending = None
        if (classifier.window, hop) != (self.classifier.window, self.hop):
            self.windower = RingWindower(classifier.window, hop, classifier.spec.n_channels)
            self._window_start = first_sample
        self.classifier, self.hop = classifier, hop

    def _time_of(self, sample: int) -> float:
        return self._epoch + sample / self.sample_rate_hz

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
