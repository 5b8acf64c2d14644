"""The EMG path: sample chunks -> windows -> int8 model (off the loop) -> decision readings."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from edge.classifier import EmgClassifier
from edge.decision import ModalityReading
from edge.dsp import RingWindower
from edge.queues import CountingQueue
from edge.sources.chunk import SampleChunk


@dataclass
class EmgStageStats:
    samples: int = 0
    windows: int = 0
    paused_samples: int = 0  # received while paused: discarded on purpose, and counted
    discontinuities: int = 0
    chunks_done: int = 0  # fully processed, readings delivered
    inference_ms: list[float] = field(default_factory=list)  # recent window latencies
    last_label: str | None = None


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
    ) -> None:
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

    def swap_classifier(self, classifier: EmgClassifier) -> None:
        """Use a reloaded model from the next window on; a new window size restarts windowing."""
        if classifier.window != self.classifier.window:
            self.windower = RingWindower(classifier.window, self.hop, classifier.spec.n_channels)
        self.classifier = classifier

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
        if chunk.discontinuity or self._next_sample != chunk.first_sample:
            self.windower.reset()
            self.stats.discontinuities += 1
            self._window_start = chunk.first_sample
        self._next_sample = chunk.first_sample + n
        # Within a gap-free run the source index moves in step with the stream position.
        index_offset = None if chunk.source_index is None else chunk.source_index - chunk.first_sample
        self.stats.last_label = chunk.label
        windows = list(self.windower.push(chunk.samples))
        if not windows:
            return
        # One hand-off to the inference thread per chunk, not per window: a thread
        # round trip costs more than classifying a window.
        t0 = time.perf_counter()
        classifier = self.classifier
        probs = await loop.run_in_executor(self._executor, classifier.predict_proba, np.stack(windows))
        self._record_latency((time.perf_counter() - t0) * 1000 / len(windows))
        for row in probs:
            end_sample = self._window_start + classifier.window
            self._window_start += self.hop
            self.stats.windows += 1
            reading = ModalityReading(
                modality="emg",
                labels=classifier.labels,
                probs=row,
                t=end_sample / self.sample_rate_hz,
                sample=end_sample - 1 + (index_offset or 0),
            )
            await self.on_reading(reading, chunk)

    def _record_latency(self, ms: float) -> None:
        lat = self.stats.inference_ms
        lat.append(ms)
        if len(lat) > 1000:
            del lat[:500]

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
