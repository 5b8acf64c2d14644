"""The camera path: latest frame -> face pipeline (off the loop) -> decision readings, at most ``fps``."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from edge.decision import ModalityReading
from edge.face.classifier import FacePipeline, FaceResult
from edge.latency import RecentLatencies
from edge.queues import LatestSlot
from edge.sources.camera import Frame

log = logging.getLogger(__name__)


@dataclass
class CameraStageStats:
    frames: int = 0
    frames_with_face: int = 0
    faces: int = 0
    ignored_paused: int = 0  # frames that arrived while privacy or the camera pause was on
    discarded_paused: int = 0  # classified, then dropped: the pause came while they were in flight
    errors: int = 0  # frames the pipeline raised on; they are skipped, the stage keeps going
    inference_ms: RecentLatencies = field(default_factory=RecentLatencies)  # per frame


class CameraStage:
    """Takes the newest frame at most ``fps`` times a second; older frames are never processed."""

    def __init__(
        self,
        pipeline: FacePipeline,
        fps: float,
        on_reading: Callable[[ModalityReading | None, list[FaceResult], float], Awaitable[None]],
        beat: Callable[[], None],
    ) -> None:
        self.pipeline = pipeline
        self.min_interval_s = 1.0 / fps
        self.on_reading = on_reading
        self.beat = beat
        self.paused = False
        # The last classified frame, for the live page: its faces are the state's. Memory only, never
        # written anywhere; cleared when the camera is paused or private.
        self.last_frame: Frame | None = None
        self.stats = CameraStageStats()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="face-inference")

    async def run(self, slot: LatestSlot[Frame]) -> None:
        loop = asyncio.get_running_loop()
        next_due = 0.0
        while True:
            frame = await slot.get()
            self.beat()
            if self.paused:
                self.stats.ignored_paused += 1
                continue
            delay = next_due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
                frame = slot.take_newer(frame)
            next_due = time.monotonic() + self.min_interval_s
            t0 = time.perf_counter()
            try:
                results = await loop.run_in_executor(self._executor, self.pipeline.process, frame.image)
            except Exception:
                # One odd frame (an OpenCV assertion on a corrupt image) must not end face recognition.
                self.stats.errors += 1
                if self.stats.errors == 1 or self.stats.errors % 100 == 0:
                    log.exception(
                        "face pipeline failed on a frame (%d so far); skipping it", self.stats.errors
                    )
                continue
            self.stats.inference_ms.add((time.perf_counter() - t0) * 1000)
            self.stats.frames += 1
            if self.paused:  # privacy switched on while this frame was being classified
                self.stats.discarded_paused += 1
                continue
            reading = None
            if results:
                self.stats.frames_with_face += 1
                self.stats.faces += len(results)
                # The decision follows the largest face; the state lists every face.
                reading = ModalityReading("face", self.pipeline.labels, results[0].probs, frame.t)
            self.last_frame = frame
            # Called for frames without a face too: their time lets a face that left go stale.
            await self.on_reading(reading, results, frame.t)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
