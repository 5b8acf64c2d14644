"""The long-running service: wires sources, models, decision, outbox and MQTT together.

sources -> dsp -> models -> decision -> publish -> service (this module)
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import time
from collections.abc import Callable
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge import __version__
from edge.broker import EmbeddedBroker
from edge.classifier import EmgClassifier
from edge.config import Config, ConfigError, load_config
from edge.decision import DecisionEngine, EpisodeEvent, ModalityReading
from edge.emg_stage import EmgStage
from edge.model_card import CardError
from edge.outbox import AsyncOutbox
from edge.paths import SHIPPED_EMG_MODEL, SHIPPED_FACE_MODEL, shipped_model
from edge.publish.commands import CommandError, parse_command
from edge.publish.discovery import discovery_payload
from edge.publish.mqtt_link import MqttLink, event_payload
from edge.publish.topics import Topics
from edge.queues import CountingQueue, LatestSlot
from edge.sdnotify import ProgressWatchdog, SystemdNotifier
from edge.sources.chunk import SampleChunk
from edge.sources.replay_emg import ReplayEmgSource
from edge.sources.serial_emg import SerialEmgSource
from edge.tasks import TaskSet

if TYPE_CHECKING:
    from edge.camera_stage import CameraStage
    from edge.face import FacePipeline, FaceResult
    from edge.sources.camera import Frame, ThreadedCamera

log = logging.getLogger(__name__)

# Retained state is refreshed at most this often unless the emotion changes: Home
# Assistant records every state message, and 10 windows/s would flood its database.
STATE_MIN_INTERVAL_S = 1.0
# A stage that has not made progress for this long stops the systemd watchdog pings. With
# systemd supervision it scales with WatchdogSec (4 ping periods = 2 x WatchdogSec).
STAGE_MAX_SILENCE_S = 10.0
# How quickly a lost or paused modality shows as unavailable (and ends its episode).
AVAILABILITY_POLL_S = 0.1
# Availability topics name the sensor; the decision engine names the model's modality.
DECISION_MODALITY = {"emg": "emg", "camera": "face"}


def _modality_weights(config: Config) -> dict[str, float]:
    return {"emg": config.emg.weight, "face": config.face.weight}


def _logged(task: asyncio.Task[Any]) -> asyncio.Task[Any]:
    """A pipeline task that dies is logged at once, not only when (if ever) someone awaits it."""

    def done(t: asyncio.Task[Any]) -> None:
        if not t.cancelled() and t.exception() is not None:
            log.error("%s stopped with an error", t.get_name(), exc_info=t.exception())

    task.add_done_callback(done)
    return task


MIN_STAGE_SILENCE_S = 2.0

EventSink = Callable[[EpisodeEvent, dict[str, Any]], None]


class Service:
    def __init__(
        self,
        config: Config,
        config_path: Path | None = None,
        on_event: EventSink | None = None,
        exit_when_input_ends: bool = False,
        on_started: Callable[[Service], object] | None = None,
    ) -> None:
        self.config = config
        self.config_path = config_path
        self.on_event = on_event
        self.exit_when_input_ends = exit_when_input_ends
        self.on_started = on_started
        self.started_monotonic = time.monotonic()
        self.notifier = SystemdNotifier()
        self.watchdog = ProgressWatchdog()
        self.switches = {"emg_paused": False, "camera_paused": False, "privacy": False}
        self.topics = Topics(config.mqtt.topic_prefix, config.device_id, config.mqtt.discovery_prefix)
        self.decision = DecisionEngine(config.decision, weights=_modality_weights(config))
        self._stop = asyncio.Event()
        self._reload_requested = asyncio.Event()
        self._last_state_publish = 0.0
        self._last_state_emotion: str | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self.background = TaskSet()
        self.broker: EmbeddedBroker | None = None
        self.outbox: AsyncOutbox | None = None
        self.link: MqttLink | None = None
        self.emg_source: SerialEmgSource | ReplayEmgSource | None = None
        self.emg_stage: EmgStage | None = None
        self.emg_queue: CountingQueue[SampleChunk] | None = None
        self._emg_tasks: list[asyncio.Task[Any]] = []
        self.camera: ThreadedCamera | None = None
        self.camera_stage: CameraStage | None = None
        self.camera_slot: LatestSlot[Frame] | None = None
        self._camera_tasks: list[asyncio.Task[Any]] = []
        self._faces: list[dict[str, object]] = []
        self._last_reading_t = 0.0
        self._last_stats = 0.0
        self._decision_lock = asyncio.Lock()
        self._emg_input_ended = False

    # --- lifecycle ------------------------------------------------------------------

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        loop.add_signal_handler(signal.SIGHUP, self._reload_requested.set)
        try:
            await self._start()
            if self.on_started is not None:
                self.on_started(self)
            self.notifier.ready()
            self.notifier.status(self._status_line())
            log.info("emotion-edge %s running as %s", __version__, self.config.device_id)
            await self._main_loop()
        finally:
            self.notifier.stopping()
            await self._shutdown()
        return 0

    def request_stop(self) -> None:
        log.info("stopping")
        self._stop.set()

    async def _start(self) -> None:
        cfg = self.config
        self.outbox = AsyncOutbox(cfg.outbox.path, cfg.outbox.max_events, cfg.outbox.max_age_s)
        settings_switches = await self.outbox.load_settings("switches")
        self.switches.update({k: bool(v) for k, v in settings_switches.items() if k in self.switches})
        host, port = cfg.mqtt.host, cfg.mqtt.port
        if host is None:
            self.broker = EmbeddedBroker()
            host, port = await self.broker.start()
            log.info("no mqtt.host configured: started an embedded broker on %s:%d", host, port)
        self.link = MqttLink(
            cfg.mqtt, self.topics, self.outbox, host, port, self._on_connected, self._on_message
        )
        await self.link.start()
        self._start_emg()
        await self._start_camera()
        self._tasks.append(asyncio.create_task(self._stats_loop(), name="stats"))
        self._tasks.append(asyncio.create_task(self._availability_loop(), name="availability"))
        self._tasks.append(asyncio.create_task(self._watchdog_loop(), name="watchdog"))
        self._tasks.append(asyncio.create_task(self._housekeeping_loop(), name="housekeeping"))

    def _start_emg(self) -> None:
        cfg = self.config
        if cfg.emg.source == "off":
            return
        classifier = EmgClassifier(cfg.models.emg or shipped_model(SHIPPED_EMG_MODEL), cfg.models.num_threads)
        hop = cfg.emg.hop or classifier.window
        self.emg_queue = CountingQueue(cfg.emg.queue_size)
        self._emg_input_ended = False
        if cfg.emg.source == "serial":
            s = cfg.emg.serial
            self.emg_source = SerialEmgSource(
                s.port,
                s.baudrate,
                classifier.spec.n_channels,
                s.value_min,
                s.value_max,
                s.reconnect_min_s,
                s.reconnect_max_s,
            )
        else:
            r = cfg.emg.replay
            assert r.path is not None  # guaranteed by config validation
            self.emg_source = ReplayEmgSource(
                r.path,
                cfg.emg.sample_rate_hz,
                None if r.speed == "max" else float(r.speed),
                loop_forever=r.loop,
                source_layout=r.source_layout,
            )
        self.watchdog.register("emg_source", self._max_silence_s())
        self.watchdog.register("emg_inference", self._max_silence_s())
        self.emg_stage = EmgStage(
            classifier,
            hop,
            cfg.emg.sample_rate_hz,
            self._on_emg_reading,
            lambda: self.watchdog.beat("emg_inference"),
            anchor_to_monotonic=cfg.emg.source == "serial" or cfg.emg.replay.speed == 1.0,
        )
        self.emg_stage.paused = self.switches["emg_paused"]
        self._emg_tasks = [
            _logged(asyncio.create_task(self._run_emg_source(), name="emg-source")),
            _logged(asyncio.create_task(self.emg_stage.run(self.emg_queue), name="emg-stage")),
        ]

    def _build_face_pipeline(self, cfg: Config) -> FacePipeline:
        """Load the face model and detector (blocking: seconds on a Pi; run it off the loop).

        Raises CardError (models.face) or ConfigError (face.detector_model) before anything running
        is touched.
        """
        from edge.face import FaceClassifier, FacePipeline
        from edge.face_detect import DetectorError, make_detector

        classifier = FaceClassifier(
            cfg.models.face or shipped_model(SHIPPED_FACE_MODEL), cfg.models.num_threads
        )
        try:
            detector = make_detector(cfg.face)
        except DetectorError as exc:
            raise ConfigError([(exc.key, exc.args[0])]) from None
        return FacePipeline(detector, classifier, cfg.face.policy)

    async def _start_camera(self, pipeline: FacePipeline | None = None) -> None:
        cfg = self.config
        if cfg.camera.source == "off":
            return
        # Imported only with a camera: OpenCV alone adds ~15 MB and start-up time.
        from edge.camera_stage import CameraStage
        from edge.sources.camera import make_camera

        camera = make_camera(cfg.camera)
        if camera is None:
            return
        if pipeline is None:
            pipeline = await asyncio.to_thread(self._build_face_pipeline, cfg)
        self.camera = camera
        self.camera_slot = LatestSlot()
        self.camera_stage = CameraStage(
            pipeline, cfg.camera.fps, self._on_face_reading, lambda: self.watchdog.beat("camera")
        )
        self.watchdog.register("camera", self._max_silence_s())
        self._apply_camera_switches()
        self._camera_tasks = [
            _logged(asyncio.create_task(self.camera.run(self.camera_slot), name="camera-source")),
            _logged(asyncio.create_task(self.camera_stage.run(self.camera_slot), name="camera-stage")),
        ]

    def _apply_camera_switches(self) -> None:
        """Privacy and camera pause both release the camera itself, not just the inference."""
        off = self.switches["privacy"] or self.switches["camera_paused"]
        if self.camera is not None:
            (self.camera.pause if off else self.camera.resume)()
        if self.camera_stage is not None:
            self.camera_stage.paused = off
            (self.watchdog.pause if off else self.watchdog.resume)("camera")
        if off:
            self._faces = []

    async def _stop_camera(self) -> None:
        if self.camera is not None:
            self.camera.stop()
        for task in self._camera_tasks:
            task.cancel()
        await asyncio.gather(*self._camera_tasks, return_exceptions=True)
        if self.camera_stage is not None:
            self.camera_stage.close()
        self.camera = self.camera_stage = self.camera_slot = None
        self._camera_tasks = []
        self._faces = []
        self.watchdog.unregister("camera")

    def _max_silence_s(self) -> float:
        interval = self.notifier.watchdog_interval_s()
        return STAGE_MAX_SILENCE_S if interval is None else max(MIN_STAGE_SILENCE_S, 4 * interval)

    async def _run_emg_source(self) -> None:
        assert self.emg_source is not None and self.emg_queue is not None
        await self.emg_source.run(self.emg_queue)
        # Input ended (replay finished): let the stage finish what is queued, then close.
        assert self.emg_stage is not None
        while self.emg_stage.stats.chunks_done < self.emg_queue.stats.put:
            await asyncio.sleep(0.01)
        self.watchdog.pause("emg_source")
        self.watchdog.pause("emg_inference")
        self._emg_input_ended = True
        await self._decide(lambda: self.decision.close(self._decision_time()))
        if isinstance(self.emg_source, ReplayEmgSource):
            st = self.emg_source.stats
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
        if self.exit_when_input_ends:
            self.request_stop()

    async def _main_loop(self) -> None:
        while not self._stop.is_set():
            reload_wait = asyncio.create_task(self._reload_requested.wait())
            stop_wait = asyncio.create_task(self._stop.wait())
            await asyncio.wait({reload_wait, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
            reload_wait.cancel()
            stop_wait.cancel()
            if self._reload_requested.is_set() and not self._stop.is_set():
                self._reload_requested.clear()
                await self.reload()

    async def reload(self) -> None:
        """SIGHUP: re-read the config file and models; events in flight stay in the outbox."""
        self.notifier.reloading()
        try:
            new = load_config(self.config_path)
        except ConfigError as exc:
            for path, message in exc.errors:
                log.error("reload rejected, keeping the running config: %s: %s", path, message)
            self.notifier.ready()
            return
        old = self.config
        if (new.emg != old.emg or new.models != old.models) and new.emg.source != "off":
            try:
                # Load the new model before touching the running pipeline.
                EmgClassifier(new.models.emg or shipped_model(SHIPPED_EMG_MODEL), new.models.num_threads)
            except (CardError, OSError, ValueError) as exc:
                log.error("reload rejected, keeping the running config: %s", exc)
                self.notifier.ready()
                return
        camera_changed = new.camera != old.camera or new.face != old.face or new.models != old.models
        pipeline = None
        if camera_changed and new.camera.source != "off":
            try:
                pipeline = await asyncio.to_thread(self._build_face_pipeline, new)
            except (CardError, ConfigError, OSError) as exc:
                log.error("reload rejected, keeping the running config: %s", exc)
                self.notifier.ready()
                return
        self.config = new
        self.decision.config = new.decision
        logging.getLogger().setLevel(new.logging.level)
        if new.emg != old.emg or new.models != old.models:
            await self._stop_emg()
            self._start_emg()
        if camera_changed:
            await self._stop_camera()
            await self._start_camera(pipeline)
        self.decision.set_weights(_modality_weights(new))
        if new.mqtt != old.mqtt or new.device_id != old.device_id:
            log.info("MQTT settings changed: reconnecting")
            assert self.link is not None and self.outbox is not None
            await self.link.stop()
            self.topics = Topics(new.mqtt.topic_prefix, new.device_id, new.mqtt.discovery_prefix)
            host = new.mqtt.host or self.link.host
            port = new.mqtt.port if new.mqtt.host else self.link.port
            self.link = MqttLink(
                new.mqtt, self.topics, self.outbox, host, port, self._on_connected, self._on_message
            )
            await self.link.start()
        log.info("configuration reloaded")
        self.notifier.ready()
        self.notifier.status(self._status_line())

    async def _stop_emg(self) -> None:
        if self.emg_source is not None:
            self.emg_source.stop()
        for task in self._emg_tasks:
            task.cancel()
        await asyncio.gather(*self._emg_tasks, return_exceptions=True)
        if self.emg_stage is not None:
            self.emg_stage.close()
        self.emg_source = self.emg_stage = self.emg_queue = None
        self._emg_tasks = []
        self.watchdog.unregister("emg_source")
        self.watchdog.unregister("emg_inference")

    async def _shutdown(self) -> None:
        await self._stop_camera()
        await self._stop_emg()
        await self._decide(lambda: self.decision.close(self._decision_time()))
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.background.wait()
        if self.link is not None:
            await self._flush_outbox(timeout_s=3.0)
            await self.link.stop("stopped")
        if self.outbox is not None:
            await self.outbox.close()
        if self.broker is not None:
            await self.broker.stop()

    async def _flush_outbox(self, timeout_s: float) -> None:
        """Give the broker a moment to acknowledge what is queued; the rest stays on disk."""
        assert self.outbox is not None and self.link is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self.link.connected:
            if (await self.outbox.stats())["pending"] == 0:
                return
            self.link.notify_new_events()
            await asyncio.sleep(0.05)

    # --- data path ------------------------------------------------------------------

    async def _on_emg_reading(self, reading: ModalityReading, chunk: SampleChunk) -> None:
        self.watchdog.beat("emg_source")
        self._last_reading_t = max(self._last_reading_t, reading.t)
        events = await self._decide(lambda: self.decision.observe(reading))
        self._maybe_publish_state(force=bool(events))

    async def _on_face_reading(
        self, reading: ModalityReading | None, results: list[FaceResult], t: float
    ) -> None:
        assert self.camera_stage is not None
        stage = self.camera_stage
        self._faces = [r.as_dict(stage.pipeline.labels) for r in results]
        self._last_reading_t = max(self._last_reading_t, t)

        def step() -> list[EpisodeEvent]:
            # Checked under the decision lock: privacy may have been switched on (and the face estimate
            # dropped) while this step waited for it.
            if stage.paused:
                return []
            if reading is None:
                # No face in this frame: time still passes, so a face that left goes stale and its
                # episode ends even when the camera is the only modality.
                return self.decision.tick(self._decision_time())
            return self.decision.observe(reading)

        events = await self._decide(step)
        self._maybe_publish_state(force=bool(events))

    def _decision_time(self) -> float:
        return self._last_reading_t

    async def _decide(self, step: Callable[[], list[EpisodeEvent]]) -> list[EpisodeEvent]:
        """Run one decision step and store its events, one step at a time.

        The lock keeps events in the order the engine produced them even when a step from
        another task (a source going away, shutdown) arrives while events are being stored.
        """
        async with self._decision_lock:
            events = step()
            await self._emit(events)
        return events

    def _drop_modality(self, sensor: str) -> list[EpisodeEvent]:
        # A pulled cable or a closed camera must not leave a stale emotion on display: the
        # modality's estimate is dropped, and the episode ends unless another modality
        # still supports it.
        self.decision.forget(DECISION_MODALITY[sensor])
        if self.decision.fuse(self._decision_time())[1]:
            return self.decision.tick(self._decision_time())
        return self.decision.close(self._decision_time())

    async def _emit(self, events: list[EpisodeEvent]) -> None:
        if not events or self.outbox is None:
            return
        for ev in events:
            body = {
                "type": ev.type,
                "id": ev.episode_id,
                "emotion": ev.emotion,
                "confidence": ev.confidence,
                "probs": ev.probs,
                "modalities": ev.modalities,
                "ts": round(time.time(), 3),
                "sample": ev.sample,
                "device_id": self.config.device_id,
            }
            seq = await self.outbox.append(self.topics.event, partial(event_payload, body=body))
            if self.on_event is not None:
                self.on_event(ev, {**body, "seq": seq})
            log.debug("event %s seq=%d %s %.2f", ev.type, seq, ev.emotion, ev.confidence)
        if self.link is not None:
            self.link.notify_new_events()

    def _maybe_publish_state(self, force: bool = False) -> None:
        state = self.decision.state
        now = time.monotonic()
        changed = state.emotion != self._last_state_emotion
        if not (force or changed or now - self._last_state_publish >= STATE_MIN_INTERVAL_S):
            return
        self._last_state_publish = now
        self._last_state_emotion = state.emotion
        if self.link is None or not self.link.connected:
            return  # retained state is re-sent on connect
        self.background.spawn(self.link.publish_retained(self.topics.state, json.dumps(self._state_body())))

    def _state_body(self) -> dict[str, Any]:
        state = self.decision.state
        return {
            "emotion": state.emotion,
            "confidence": round(state.confidence, 4),
            "probs": {k: round(v, 4) for k, v in state.probs.items()},
            "modalities": state.modalities,
            "faces": self._faces,
            "ts": round(time.time(), 3),
        }

    # --- MQTT -----------------------------------------------------------------------

    async def _on_connected(self) -> None:
        assert self.link is not None
        self.link.subscribe(self.topics.command_filter)
        if self.config.mqtt.discovery:
            self.link.subscribe(self.topics.ha_status)
        await self._publish_all()

    async def _publish_all(self) -> None:
        """Everything retained that describes the device: sent on connect and when HA restarts."""
        link = self.link
        assert link is not None
        await link.publish_retained(self.topics.availability, "online")
        if self.config.mqtt.discovery:
            await self._publish_discovery()
        for name, on in self.switches.items():
            await link.publish_retained(self.topics.switch_state(name), "ON" if on else "OFF")
        await self._publish_availability()
        await link.publish_retained(self.topics.state, json.dumps(self._state_body()))

    async def _publish_discovery(self) -> None:
        assert self.link is not None
        payload = json.dumps(discovery_payload(self.topics), separators=(",", ":"))
        await self.link.publish_retained(self.topics.discovery, payload)

    async def _publish_availability(self) -> None:
        assert self.link is not None
        for modality, available in self._modality_availability().items():
            await self.link.publish_retained(
                self.topics.modality_available(modality), "ON" if available else "OFF"
            )

    def _modality_availability(self) -> dict[str, bool]:
        emg = (
            self.emg_source is not None
            and self.emg_source.available
            and not self._emg_input_ended
            and not self.switches["emg_paused"]
        )
        camera = (
            self.camera is not None
            and self.camera.available
            and not self.switches["privacy"]
            and not self.switches["camera_paused"]
        )
        return {"emg": emg, "camera": camera}

    def _on_message(self, topic: str, payload: bytes) -> None:
        assert self.link is not None
        if topic == self.topics.ha_status:
            if payload.strip() == b"online" and self.config.mqtt.discovery:
                log.info("Home Assistant came online: re-sending discovery")
                self.background.spawn(self._publish_all())
            return
        self.link.stats.commands_received += 1
        try:
            cmd = parse_command(self.topics.base, topic, payload)
        except CommandError as exc:
            self.link.stats.commands_rejected += 1
            log.warning("ignored command: %s", exc)
            return
        log.info("command: %s -> %s", cmd.switch, "ON" if cmd.on else "OFF")
        self.switches[cmd.switch] = cmd.on
        if cmd.switch in ("privacy", "camera_paused"):
            self._apply_camera_switches()
        if cmd.switch == "emg_paused" and self.emg_stage is not None:
            # The availability loop sees EMG go unavailable and ends its episode.
            self.emg_stage.paused = cmd.on
            if cmd.on:
                self.watchdog.pause("emg_inference")
            else:
                self.watchdog.resume("emg_inference")
        self.background.spawn(self._after_switch(cmd.switch))

    async def _after_switch(self, switch: str) -> None:
        assert self.link is not None and self.outbox is not None
        await self.outbox.save_settings("switches", self.switches)
        await self.link.publish_retained(
            self.topics.switch_state(switch), "ON" if self.switches[switch] else "OFF"
        )
        await self._publish_availability()

    # --- periodic -------------------------------------------------------------------

    async def _stats_loop(self) -> None:
        while True:
            await asyncio.sleep(min(self.config.mqtt.stats_interval_s, 1.0))
            now = time.monotonic()
            if now - self._last_stats >= self.config.mqtt.stats_interval_s:
                self._last_stats = now
                stats = await self.stats()
                if self.link is not None:
                    self.link.publish_volatile(self.topics.stats, json.dumps(stats))
                self.notifier.status(self._status_line())

    async def _availability_loop(self) -> None:
        """Follow each modality's availability; a source that goes away ends its episode."""
        published: dict[str, bool] = {}
        previous = self._modality_availability()
        while True:
            await asyncio.sleep(AVAILABILITY_POLL_S)
            current = self._modality_availability()
            for modality, up in current.items():
                if previous.get(modality) and not up:
                    await self._decide(partial(self._drop_modality, modality))
                    self._maybe_publish_state(force=True)
            previous = current
            if current != published and self.link is not None and self.link.connected:
                published = current
                await self._publish_availability()

    async def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "version": __version__,
            "device_id": self.config.device_id,
            "uptime_s": round(time.monotonic() - self.started_monotonic, 1),
            "switches": dict(self.switches),
            "modalities": self._modality_availability(),
        }
        if self.link is not None:
            out["mqtt"] = asdict(self.link.stats)
        if self.outbox is not None:
            out["outbox"] = await self.outbox.stats()
        if self.emg_stage is not None:
            st = self.emg_stage.stats
            lat = st.inference_ms.summary()
            out["emg"] = {
                "samples": st.samples,
                "windows": st.windows,
                "paused_samples": st.paused_samples,
                "discontinuities": st.discontinuities,
                "clock_resyncs": st.clock_resyncs,
                "inference_ms_p50": lat["p50"],
                "inference_ms_max": lat["max"],
            }
        if self.emg_queue is not None:
            out.setdefault("emg", {})["queue"] = asdict(self.emg_queue.stats)
        if self.camera is not None:
            out["camera"] = {
                **asdict(self.camera.stats),
                "paused": self.camera_stage.paused if self.camera_stage else None,
            }
        if self.camera_stage is not None:
            cst = self.camera_stage.stats
            out.setdefault("camera", {}).update(
                frames_classified=cst.frames,
                frames_with_face=cst.frames_with_face,
                faces=cst.faces,
                frames_ignored_paused=cst.ignored_paused,
                frames_discarded_paused=cst.discarded_paused,
                frame_errors=cst.errors,
                inference_ms_p50=cst.inference_ms.summary()["p50"],
            )
        if self.camera_slot is not None:
            out.setdefault("camera", {})["slot"] = asdict(self.camera_slot.stats)
        if isinstance(self.emg_source, SerialEmgSource):
            out.setdefault("emg", {})["serial"] = {
                **asdict(self.emg_source.stats),
                **self.emg_source.parse_stats.as_dict(),
            }
        return out

    async def _watchdog_loop(self) -> None:
        interval = self.notifier.watchdog_interval_s()
        if interval is None:
            return
        while True:
            await asyncio.sleep(interval)
            # A source that is down is handled by reconnecting, not by a restart, and a paused or
            # finished one (a replay at its end) has nothing to deliver; only an available source that
            # delivers nothing counts as stalled. Decided afresh on every tick from the same availability
            # that MQTT reports (pause/resume are idempotent), so switches, reloads and reconnects
            # elsewhere cannot leave a stage watched while its source is down.
            available = self._modality_availability()
            for sensor, stage, running in (
                ("emg", "emg_source", self.emg_source),
                ("camera", "camera", self.camera),
            ):
                if running is not None:
                    (self.watchdog.resume if available[sensor] else self.watchdog.pause)(stage)
            healthy, stalled = self.watchdog.healthy()
            if healthy:
                self.notifier.watchdog()
            else:
                log.error("stalled stage(s): %s; withholding the watchdog ping", ", ".join(stalled))

    async def _housekeeping_loop(self) -> None:
        while True:
            await asyncio.sleep(60)
            if self.outbox is not None:
                await self.outbox.expire()

    def _status_line(self) -> str:
        mqtt_state = "connected" if self.link is not None and self.link.connected else "disconnected"
        emg = self.config.emg.source
        return f"MQTT {mqtt_state}; EMG {emg}; emotion {self.decision.state.emotion}"
