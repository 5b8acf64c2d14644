"""The service: lifecycle, signals, reload, the systemd watchdog and task supervision.

It wires the pipeline (sources -> stages -> decision) to the publisher (outbox -> MQTT) and
runs the periodic loops. Every long-lived task runs under :class:`edge.tasks.Supervisor`: a
task that dies is restarted with backoff, and one that keeps dying stops the daemon with exit
70, so systemd restarts it. The daemon never runs on with a dead part.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge import __version__
from edge.broker import EmbeddedBroker
from edge.calibration.in_daemon import DaemonCalibration
from edge.config import Config, ConfigError, load_config
from edge.decision import EpisodeEvent
from edge.model_card import CardError
from edge.outbox import AsyncOutbox
from edge.publish.commands import LIVE_VIEW
from edge.publish.mqtt_link import MqttLink
from edge.publish.publisher import EventSink, Publisher
from edge.publish.topics import Topics
from edge.sdnotify import ProgressWatchdog, SystemdNotifier
from edge.service import loading
from edge.service.health import Health
from edge.service.instance_lock import InstanceLock
from edge.service.open_episode import OpenEpisode
from edge.service.pipeline import Pipeline
from edge.service.stats import collect_stats
from edge.tasks import Supervisor
from edge.web import start_web

if TYPE_CHECKING:
    from edge.sources.replay_emg import ReplayEmgSource
    from edge.sources.serial_emg import SerialEmgSource
    from edge.web.server import WebServer

log = logging.getLogger(__name__)

# How quickly a lost or paused modality shows as unavailable (and ends its episode).
AVAILABILITY_POLL_S = 0.1
EXIT_SOFTWARE = 70  # sysexits EX_SOFTWARE: a part of the daemon kept failing


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
        self.health = Health(self.notifier, self.watchdog)
        self.supervisor = Supervisor(self._fatal)
        self.switches = {"emg_paused": False, "camera_paused": False, "privacy": False}
        if config.web.enabled:
            self.switches[LIVE_VIEW] = True  # the page's video; off from Home Assistant hides it
        self.web: WebServer | None = None
        self.pipeline = Pipeline(
            config,
            self.switches,
            self.watchdog,
            self.supervisor,
            self.health.max_silence_s,
            self._emit,
            self._on_decided,
            self._on_emg_ended,
        )
        self.broker: EmbeddedBroker | None = None
        self.outbox: AsyncOutbox | None = None
        self.open_episode: OpenEpisode | None = None
        self.publisher: Publisher | None = None
        self._stop = asyncio.Event()
        self._reload_requested = asyncio.Event()
        self._exit_code = 0
        self.lock = InstanceLock(config.outbox.path)
        self.calibration = DaemonCalibration(self)
        self.started = False  # True once READY: a later failure is not a start-up failure

    # Read by the demo's event view.
    @property
    def link(self) -> MqttLink | None:
        return self.publisher.link if self.publisher is not None else None

    @property
    def topics(self) -> Topics:
        assert self.publisher is not None
        return self.publisher.topics

    @property
    def emg_source(self) -> SerialEmgSource | ReplayEmgSource | None:
        return self.pipeline.emg_source

    # --- lifecycle ------------------------------------------------------------------

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        loop.add_signal_handler(signal.SIGHUP, self.request_reload)
        try:
            await self._start()
            if self.on_started is not None:
                self.on_started(self)
            self.started = True
            self.notifier.ready()
            self.notifier.status(self._status_line())
            log.info("emotion-edge %s running as %s", __version__, self.config.device_id)
            await self._main_loop()
        finally:
            self.notifier.stopping()
            await self._shutdown()
        return self._exit_code

    def request_reload(self) -> None:
        """What SIGHUP does (also the live page's model buttons): reload in the main loop, one at a time."""
        self._reload_requested.set()

    def request_stop(self) -> None:
        log.info("stopping")
        self._stop.set()

    def _fatal(self, why: str) -> None:
        self._exit_code = EXIT_SOFTWARE
        self.notifier.status(f"failed: {why}")
        self._stop.set()

    async def _start(self) -> None:
        cfg = self.config
        self.lock.acquire()
        self.outbox = AsyncOutbox.from_config(cfg.outbox)
        saved = await self.outbox.load_settings("switches")
        self.switches.update({k: bool(v) for k, v in saved.items() if k in self.switches})
        host, port = cfg.mqtt.host, cfg.mqtt.port
        if host is None:
            self.broker = EmbeddedBroker()
            host, port = await self.broker.start()
            log.info("no mqtt.host configured: started an embedded broker on %s:%d", host, port)
        self.publisher = Publisher(
            cfg,
            self.outbox,
            self.switches,
            self.pipeline.state_body,
            self.pipeline.availability,
            self._on_switch,
            self.supervisor,
            self._on_event,
        )
        # An episode the previous run died with gets its end before anything new can start.
        self.open_episode = OpenEpisode(self.outbox)
        await self._emit(await self.open_episode.recover(time.monotonic()))
        await self.publisher.start(host, port)
        if cfg.web.enabled:
            self.web = await start_web(self)
            traces = self.web.feed.traces
            # The page's traces show what is classified: nothing while EMG is paused.
            self.pipeline.emg_taps.append(
                lambda chunk: None if self.switches["emg_paused"] else traces.push(chunk)
            )
        self.pipeline.start_emg()
        await self.pipeline.start_camera()
        await self.calibration.start()
        for name, loop in (
            ("stats", self._stats_loop),
            ("availability", self._availability_loop),
            ("watchdog", self._watchdog_loop),
            ("housekeeping", self._housekeeping_loop),
        ):
            self.supervisor.start(name, loop)

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
        """SIGHUP: re-read the config file and models; events in flight stay in the outbox.

        Everything new is loaded before anything running is touched, so a bad file or model is
        rejected and the running configuration kept.
        """
        self.notifier.reloading()
        try:
            new = load_config(self.config_path)
            running = self.pipeline.emg_stage.target if self.pipeline.emg_stage is not None else None
            prepared = await loading.prepare(self.config, new, running)
        except ConfigError as exc:
            for path, message in exc.errors:
                log.error("reload rejected, keeping the running config: %s: %s", path, message)
            self.notifier.ready()
            return
        except (CardError, OSError, ValueError) as exc:
            log.error("reload rejected, keeping the running config: %s", exc)
            self.notifier.ready()
            return
        if new.web != self.config.web:
            log.warning("[web] changes take effect at the next restart; the page keeps its settings")
            # Keep the running [web] in the effective config, so discovery keeps declaring exactly
            # the switches that exist (live_view comes and goes with the page).
            new = new.model_copy(update={"web": self.config.web})
        old, self.config = self.config, new
        logging.getLogger().setLevel(new.logging.level)
        await self.pipeline.reconfigure(new, prepared)
        assert self.publisher is not None
        if new.mqtt != old.mqtt or new.device_id != old.device_id:
            await self.publisher.reconnect(new)
        else:
            self.publisher.reconfigure(new)
        log.info("configuration reloaded")
        self.notifier.ready()
        self.notifier.status(self._status_line())

    async def _shutdown(self) -> None:
        await self.calibration.stop()
        if self.web is not None:
            await self.web.stop()
        await self.pipeline.close()
        await self.supervisor.stop_group("core")  # the loops; the link stops its drain itself
        if self.publisher is not None:
            await self.publisher.stop()
        if self.outbox is not None:
            await self.outbox.close()
        if self.broker is not None:
            await self.broker.stop()
        self.lock.release()

    # --- between pipeline and publisher -------------------------------------------------

    async def _emit(self, events: list[EpisodeEvent]) -> None:
        if self.publisher is not None and self.open_episode is not None:
            await self.open_episode.before_store(events)
            await self.publisher.emit(events)
            await self.open_episode.after_store(events)

    def _on_decided(self, forced: bool) -> None:
        if self.publisher is not None:
            self.publisher.maybe_publish_state(self.pipeline.decision.state, force=forced)

    def _on_event(self, event: EpisodeEvent, body: dict[str, Any]) -> None:
        if self.web is not None:
            self.web.feed.on_event(body)
        if self.on_event is not None:
            self.on_event(event, body)

    def _on_emg_ended(self) -> None:
        if self.exit_when_input_ends:
            self.request_stop()

    def _on_switch(self, switch: str, on: bool) -> None:
        if switch in ("privacy", "camera_paused"):
            self.pipeline.apply_camera_switches()
        elif switch == "emg_paused":
            self.pipeline.set_emg_paused(on)

    # --- periodic -------------------------------------------------------------------

    async def _stats_loop(self) -> None:
        last = 0.0
        while True:
            await asyncio.sleep(min(self.config.mqtt.stats_interval_s, 1.0))
            now = time.monotonic()
            if now - last >= self.config.mqtt.stats_interval_s:
                last = now
                if self.publisher is not None:
                    self.publisher.publish_stats(await collect_stats(self))
                self.notifier.status(self._status_line())

    async def _availability_loop(self) -> None:
        """Follow each modality's availability; a source that goes away ends its episode."""
        published: dict[str, bool] = {}
        previous = self.pipeline.availability()
        while True:
            await asyncio.sleep(AVAILABILITY_POLL_S)
            current = self.pipeline.availability()
            for modality, up in current.items():
                if previous.get(modality) and not up:
                    await self.pipeline.drop_modality(modality)
            previous = current
            if current != published and self.publisher is not None and self.publisher.connected:
                published = current
                await self.publisher.publish_availability()

    async def _watchdog_loop(self) -> None:
        pipeline = self.pipeline

        def running() -> dict[str, bool]:
            return {"emg": pipeline.emg_source is not None, "camera": pipeline.camera is not None}

        async def publishing() -> tuple[bool, int, int]:
            link, outbox = self.link, self.outbox
            if link is None or outbox is None:
                return False, 0, 0
            return link.connected, (await outbox.stats())["pending"], link.stats.events_acked

        await self.health.run(pipeline.availability, running, publishing)

    async def _housekeeping_loop(self) -> None:
        while True:
            await asyncio.sleep(60)
            if self.outbox is not None:
                await self.outbox.expire()

    def _status_line(self) -> str:
        mqtt_state = (
            "connected" if self.publisher is not None and self.publisher.connected else "disconnected"
        )
        return (
            f"MQTT {mqtt_state}; EMG {self.config.emg.source}; emotion {self.pipeline.decision.state.emotion}"
        )
