"""The data path: sources -> stages -> decision, for EMG and the camera.

The pipeline starts and stops each modality's source and stage, feeds their readings to the
decision engine one step at a time, and hands the resulting episode events to ``emit`` (the
publisher). It knows nothing of MQTT: availability and the state body are read from it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from edge.config import Config
from edge.decision import DecisionEngine, EpisodeEvent, ModalityReading
from edge.emg.classifier import EmgClassifier
from edge.emg.stage import EmgStage
from edge.queues import CountingQueue, LatestSlot
from edge.sdnotify import ProgressWatchdog
from edge.service import loading
from edge.sources.chunk import SampleChunk
from edge.sources.replay_emg import ReplayEmgSource
from edge.sources.serial_emg import SerialEmgSource
from edge.tasks import Supervisor

if TYPE_CHECKING:
    from edge.face.classifier import FacePipeline, FaceResult
    from edge.face.stage import CameraStage
    from edge.sources.camera import Frame, ThreadedCamera

log = logging.getLogger(__name__)

# Availability topics name the sensor; the decision engine names the model's modality.
DECISION_MODALITY = {"emg": "emg", "camera": "face"}


class Pipeline:
    def __init__(
        self,
        config: Config,
        switches: dict[str, bool],
        watchdog: ProgressWatchdog,
        supervisor: Supervisor,
        max_silence_s: Callable[[], float],
        emit: Callable[[list[EpisodeEvent]], Awaitable[None]],
        on_decided: Callable[[bool], None],
        on_emg_ended: Callable[[], None],
    ) -> None:
        self.config = config
        self.switches = switches
        self.watchdog = watchdog
        self.supervisor = supervisor
        self._max_silence_s = max_silence_s
        self._emit = emit
        self._on_decided = on_decided  # called after each step; True when the state must be published now
        self._on_emg_ended = on_emg_ended
        self.decision = DecisionEngine(config.decision, weights=loading.modality_weights(config))
        self.emg_source: SerialEmgSource | ReplayEmgSource | None = None
        self.emg_stage: EmgStage | None = None
        self.emg_queue: CountingQueue[SampleChunk] | None = None
        self.emg_input_ended = False
        # Called with every EMG sample chunk, paused or not (a calibration session records them).
        self.emg_taps: list[Callable[[SampleChunk], None]] = []
        self.camera: ThreadedCamera | None = None
        self.camera_stage: CameraStage | None = None
        self.camera_slot: LatestSlot[Frame] | None = None
        self.faces: list[dict[str, object]] = []
        self._last_reading_t = 0.0
        self._decision_lock = asyncio.Lock()

    async def reconfigure(self, new: Config, prepared: loading.Prepared) -> None:
        """Apply a reloaded config whose parts ``prepared`` already loaded."""
        self.config = new
        self.decision.config = new.decision
        if prepared.emg_changed:
            await self.stop_emg()
            self.start_emg(prepared.emg_classifier)
        elif prepared.emg_swap and self.emg_stage is not None and prepared.emg_classifier is not None:
            # The next chunk uses it; the source and its queue are untouched.
            self.emg_stage.use(prepared.emg_classifier, new.emg.hop or prepared.emg_classifier.spec.hop)
        if prepared.camera_changed:
            await self.stop_camera()
            await self.start_camera(prepared.face_pipeline)
        self.decision.set_weights(loading.modality_weights(new))

    # --- EMG ------------------------------------------------------------------------

    def start_emg(self, classifier: EmgClassifier | None = None) -> None:
        cfg = self.config
        if cfg.emg.source == "off":
            return
        classifier = classifier or loading.emg_classifier(cfg)
        self.emg_queue = CountingQueue(cfg.emg.queue_size)
        self.emg_queue.taps = self.emg_taps
        self.emg_input_ended = False
        self.emg_source = loading.emg_source(cfg, classifier.spec.n_channels)
        self.watchdog.register("emg_source", self._max_silence_s())
        self.watchdog.register("emg_inference", self._max_silence_s())
        self.emg_stage = EmgStage(
            classifier,
            cfg.emg.hop or classifier.spec.hop,
            cfg.emg.sample_rate_hz,
            self._on_emg_reading,
            lambda: self.watchdog.beat("emg_inference"),
            anchor_to_monotonic=cfg.emg.source == "serial" or cfg.emg.replay.speed == 1.0,
        )
        self.emg_stage.paused = self.switches["emg_paused"]
        stage, queue = self.emg_stage, self.emg_queue
        # A source's run() returns when a replay ends; the stage never returns on its own.
        self.supervisor.start("emg-source", self._run_emg_source, group="emg", finishes=True)
        self.supervisor.start("emg-stage", lambda: stage.run(queue), group="emg")

    async def stop_emg(self) -> None:
        if self.emg_source is not None:
            self.emg_source.stop()
        await self.supervisor.stop_group("emg")
        if self.emg_stage is not None:
            self.emg_stage.close()
        self.emg_source = self.emg_stage = self.emg_queue = None
        self.watchdog.unregister("emg_source")
        self.watchdog.unregister("emg_inference")

    def set_emg_paused(self, paused: bool) -> None:
        if self.emg_stage is None:
            return
        # The availability loop sees EMG go unavailable and ends its episode.
        self.emg_stage.paused = paused
        (self.watchdog.pause if paused else self.watchdog.resume)("emg_inference")

    async def _run_emg_source(self) -> None:
        assert self.emg_source is not None and self.emg_queue is not None and self.emg_stage is not None
        stage, queue, source = self.emg_stage, self.emg_queue, self.emg_source
        await source.run(queue)
        # Input ended (replay finished): let the stage finish what is queued, then close.
        while stage.stats.chunks_done < queue.stats.put:
            await asyncio.sleep(0.01)
        self.watchdog.pause("emg_source")
        self.watchdog.pause("emg_inference")
        self.emg_input_ended = True
        # Forced: the state empties (no stale probabilities), which the recorder budget might hold back.
        await self.decide(lambda: self.decision.close(self.decision_time()), force_state=True)
        if isinstance(source, ReplayEmgSource):
            st = source.stats
            wall = max(time.monotonic() - st.started_at, 1e-9)
            signal_s = st.samples_sent / self.config.emg.sample_rate_hz
            log.info(
                "replay finished: %d samples (%.1f s of signal) in %.3f s = %.0fx real time",
                st.samples_sent,
                signal_s,
                wall,
                signal_s / wall,
            )
        log.info("EMG input ended")
        self._on_emg_ended()

    async def _on_emg_reading(self, reading: ModalityReading, chunk: SampleChunk) -> None:
        self.watchdog.beat("emg_source")
        self._last_reading_t = max(self._last_reading_t, reading.t)
        await self.decide(lambda: self.decision.observe(reading))

    # --- camera ---------------------------------------------------------------------

    async def start_camera(self, pipeline: FacePipeline | None = None) -> None:
        cfg = self.config
        if cfg.camera.source == "off":
            return
        # Imported only with a camera: OpenCV alone adds ~15 MB and start-up time.
        from edge.face.stage import CameraStage
        from edge.sources.camera import make_camera

        camera = make_camera(cfg.camera)
        if camera is None:
            return
        if pipeline is None:
            pipeline = await asyncio.to_thread(loading.face_pipeline, cfg)
        self.camera = camera
        slot: LatestSlot[Frame] = LatestSlot()
        self.camera_slot = slot
        stage = CameraStage(
            pipeline, cfg.camera.fps, self._on_face_reading, lambda: self.watchdog.beat("camera")
        )
        self.camera_stage = stage
        self.watchdog.register("camera", self._max_silence_s())
        self.apply_camera_switches()
        # run() returns at the end of a finite input (a file or folder without loop): the camera is then
        # unavailable, and that is not a failure. A crashed capture thread raises and is restarted.
        self.supervisor.start("camera-source", lambda: camera.run(slot), group="camera", finishes=True)
        self.supervisor.start("camera-stage", lambda: stage.run(slot), group="camera")

    def apply_camera_switches(self) -> None:
        """Privacy and camera pause both release the camera itself, not just the inference."""
        off = self.switches["privacy"] or self.switches["camera_paused"]
        if self.camera is not None:
            (self.camera.pause if off else self.camera.resume)()
        if self.camera_stage is not None:
            self.camera_stage.paused = off
            (self.watchdog.pause if off else self.watchdog.resume)("camera")
        if off:
            self.faces = []
            if self.camera_stage is not None:
                self.camera_stage.last_frame = None  # the page must not show the last picture either

    async def stop_camera(self) -> None:
        if self.camera is not None:
            self.camera.stop()
        await self.supervisor.stop_group("camera")
        if self.camera_stage is not None:
            self.camera_stage.close()
        self.camera = self.camera_stage = self.camera_slot = None
        self.faces = []
        self.watchdog.unregister("camera")

    async def _on_face_reading(
        self, reading: ModalityReading | None, results: list[FaceResult], t: float
    ) -> None:
        assert self.camera_stage is not None
        stage = self.camera_stage
        self.faces = [r.as_dict(stage.pipeline.labels) for r in results]
        self._last_reading_t = max(self._last_reading_t, t)

        def step() -> list[EpisodeEvent]:
            # Checked under the decision lock: privacy may have been switched on (and the face estimate
            # dropped) while this step waited for it.
            if stage.paused:
                return []
            if reading is None:
                # No face in this frame: time still passes, so a face that left goes stale and its
                # episode ends even when the camera is the only modality.
                return self.decision.tick(self.decision_time())
            return self.decision.observe(reading)

        await self.decide(step)

    # --- decision -------------------------------------------------------------------

    def decision_time(self) -> float:
        return self._last_reading_t

    async def decide(
        self, step: Callable[[], list[EpisodeEvent]], force_state: bool = False
    ) -> list[EpisodeEvent]:
        """Run one decision step and store its events, one step at a time.

        The lock keeps events in the order the engine produced them even when a step from
        another task (a source going away, shutdown) arrives while events are being stored.
        """
        async with self._decision_lock:
            events = step()
            await self._emit(events)
        # Events alone do not force it: an episode's updates would exceed the recorder budget, and its
        # start and end change the stated emotion, which the budget publishes at once anyway.
        self._on_decided(force_state)
        return events

    async def drop_modality(self, sensor: str) -> None:
        """A pulled cable or a closed camera must not leave a stale emotion on display: the
        modality's estimate is dropped, and the episode ends unless another modality still
        supports it."""

        def step() -> list[EpisodeEvent]:
            self.decision.forget(DECISION_MODALITY[sensor])
            if self.decision.fuse(self.decision_time())[1]:
                return self.decision.tick(self.decision_time())
            return self.decision.close(self.decision_time())

        # The state changes even without an event (the modality left it): publish it now.
        await self.decide(step, force_state=True)

    async def close(self) -> None:
        await self.stop_camera()
        await self.stop_emg()
        await self.decide(lambda: self.decision.close(self.decision_time()), force_state=True)

    def availability(self) -> dict[str, bool]:
        emg = (
            self.emg_source is not None
            and self.emg_source.available
            and not self.emg_input_ended
            and not self.switches["emg_paused"]
        )
        camera = (
            self.camera is not None
            and self.camera.available
            and not self.switches["privacy"]
            and not self.switches["camera_paused"]
        )
        return {"emg": emg, "camera": camera}

    def state_body(self) -> dict[str, Any]:
        state = self.decision.state
        return {
            "emotion": state.emotion,
            "confidence": round(state.confidence, 4),
            "probs": {k: round(v, 4) for k, v in state.probs.items()},
            "modalities": state.modalities,
            "faces": self.faces,
            "ts": round(time.time(), 3),
        }
