"""Calibration inside the running daemon: the session, its control socket and the model swap.

The daemon owns the serial port, so a session runs here, on the samples the pipeline already
receives (a tap on its EMG queue). EMG events keep flowing throughout. When a new model is
activated it is swapped into the running EMG stage between two sample chunks: the source, its
queue and the outbox are untouched, so no sample and no event is lost. A model with another window
length or hop re-windows from the next chunk; only one with another channel count restarts EMG,
the way a SIGHUP reload does.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from edge.calibration.control import ControlServer
from edge.calibration.install import StoreInstaller
from edge.calibration.manager import CalibrationManager, socket_path
from edge.calibration.mqtt import CalibrationMqtt
from edge.calibration.offline import CHANNEL_NAMES
from edge.calibration.store import PersonalModelStore, state_dir
from edge.service import loading

if TYPE_CHECKING:
    from edge.service.supervisor import Service

log = logging.getLogger(__name__)


class DaemonCalibration:
    def __init__(self, service: Service) -> None:
        self.service = service
        config = service.config
        self.store = PersonalModelStore.for_config(config)
        self.manager = CalibrationManager(
            lambda: self.service.config,
            StoreInstaller(self.store, swap=self.swap),
            CHANNEL_NAMES,
        )
        self.manager.available = lambda: self.service.pipeline.availability()["emg"]
        self.manager.emg_paused = lambda: self.service.switches["emg_paused"]
        self.control = ControlServer(self.manager, socket_path(state_dir(config)))
        self.mqtt = CalibrationMqtt(self.manager, self.store, lambda: self.service.publisher)
        self.manager.on_snapshot.append(self.mqtt.on_snapshot)
        self.swaps = 0

    async def start(self) -> None:
        """After the publisher and the pipeline have started."""
        self.service.pipeline.emg_taps.append(self.manager.tap)
        if self.service.publisher is not None:
            self.service.publisher.on_action = self.mqtt.on_action
        self.mqtt.load_stored_result()
        # A daemon killed mid-session left its last prompt retained ("Show happy, 40%"): replace it.
        self.mqtt.on_snapshot(self.manager.status())
        try:
            await self.control.start()
        except OSError as exc:  # e.g. a path over the 107 bytes a UNIX socket name may have
            # Calibration is an extra: the daemon runs on, MQTT can still start a session.
            log.error("calibration control socket %s unavailable: %s", self.control.path, exc)
        self.service.supervisor.start("calibration", self.manager.run)
        self.service.supervisor.start("calibration-mqtt", self.mqtt.run)

    async def stop(self) -> None:
        self.manager.cancel()
        await self.control.stop()

    def stats(self) -> dict[str, Any]:
        manager, control = self.manager, self.control
        return {
            "phase": manager.session.phase if manager.session is not None else "idle",
            "sessions": manager.sessions_started,
            "outcomes": dict(manager.outcomes),
            "flagged_repetitions": manager.flagged_repetitions,
            "swaps": self.swaps,
            "control_requests": control.requests,
            "control_rejected": control.rejected,
            "watch_superseded": control.superseded,
            "mqtt_starts_refused": self.mqtt.rejected,
        }

    async def swap(self) -> None:
        """Run the now active model, as a reload with an unchanged config would pick it up
        (loaded off the loop, swapped between two chunks when it windows like the running one)."""
        pipeline, config = self.service.pipeline, self.service.config
        running = pipeline.emg_stage.target if pipeline.emg_stage is not None else None
        prepared = await loading.prepare(config, config, running)
        await pipeline.reconfigure(config, prepared)
        self.swaps += 1
        classifier = pipeline.emg_stage.target if pipeline.emg_stage is not None else None
        if classifier is not None:
            labels = ", ".join(classifier.labels)
            log.info("EMG model swapped in: %s (labels %s)", classifier.model.model_path, labels)
