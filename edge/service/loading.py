"""Building the pipeline's parts from the config: models, detector and EMG source.

Loading is blocking (seconds on a Pi for the face model), so callers run it off the loop, and
it happens before anything running is touched: a bad file fails here, not half-way through a
reload.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING

from edge.config import Config, ConfigError
from edge.emg.classifier import EmgClassifier
from edge.paths import SHIPPED_EMG_MODEL, SHIPPED_FACE_MODEL, shipped_model
from edge.sources.replay_emg import ReplayEmgSource
from edge.sources.serial_emg import SerialEmgSource

if TYPE_CHECKING:
    from edge.face.classifier import FacePipeline


def modality_weights(config: Config) -> dict[str, float]:
    return {"emg": config.emg.weight, "face": config.face.weight}


def emg_classifier(config: Config) -> EmgClassifier:
    return EmgClassifier(config.models.emg or shipped_model(SHIPPED_EMG_MODEL), config.models.num_threads)


def emg_source(config: Config, n_channels: int) -> SerialEmgSource | ReplayEmgSource:
    if config.emg.source == "serial":
        s = config.emg.serial
        return SerialEmgSource(
            s.port, s.baudrate, n_channels, s.value_min, s.value_max, s.reconnect_min_s, s.reconnect_max_s
        )
    r = config.emg.replay
    assert r.path is not None  # guaranteed by config validation
    return ReplayEmgSource(
        r.path,
        config.emg.sample_rate_hz,
        None if r.speed == "max" else float(r.speed),
        loop_forever=r.loop,
        source_layout=r.source_layout,
    )


def face_pipeline(config: Config) -> FacePipeline:
    """The face model and detector. Raises CardError (models.face) or ConfigError
    (face.detector_model)."""
    import cv2

    from edge.face.classifier import FaceClassifier, FacePipeline
    from edge.face.detect import DetectorError, make_detector

    # OpenCV's own pool defaults to one thread per core. On a Pi the frames are small and the
    # other core serves EMG and MQTT: its wake-ups cost more CPU than they save (17.8% of a core
    # for EMG + a 15 fps camera with the pool, see README benchmarks).
    cv2.setNumThreads(config.models.num_threads)

    classifier = FaceClassifier(
        config.models.face or shipped_model(SHIPPED_FACE_MODEL), config.models.num_threads
    )
    try:
        detector = make_detector(config.face)
    except DetectorError as exc:
        raise ConfigError([(exc.key, exc.args[0])]) from None
    return FacePipeline(detector, classifier, config.face.policy)


@dataclass
class Prepared:
    """A new configuration's parts, loaded before anything running is touched (SIGHUP)."""

    emg_changed: bool
    camera_changed: bool
    emg_classifier: EmgClassifier | None = None
    face_pipeline: FacePipeline | None = None


async def prepare(old: Config, new: Config) -> Prepared:
    """Raises ConfigError, CardError, OSError or ValueError: the reload is then rejected."""
    models_changed = new.models != old.models
    prepared = Prepared(
        emg_changed=new.emg != old.emg or models_changed,
        camera_changed=new.camera != old.camera or new.face != old.face or models_changed,
    )
    if prepared.emg_changed and new.emg.source != "off":
        prepared.emg_classifier = await asyncio.to_thread(emg_classifier, new)
    if prepared.camera_changed and new.camera.source != "off":
        prepared.face_pipeline = await asyncio.to_thread(face_pipeline, new)
    return prepared
