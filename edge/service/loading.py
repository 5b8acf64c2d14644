"""Building the pipeline's parts from the config: models, detector and EMG source.

Loading is blocking (seconds on a Pi for the face model), so callers run it off the loop, and
it happens before anything running is touched: a bad file fails here, not half-way through a
reload.

Which EMG model runs (:func:`emg_model_path`), first that applies:

1. ``[models] emg`` in the config: an explicit choice always wins, calibration or not;
2. the active personal model of the state directory (``emotion-edge calibrate``, ``emotion-edge
   models activate``; :mod:`edge.calibration.store`);
3. the generic model shipped with the package.

It is resolved at start and at every reload, so a newly activated personal model is picked up by
SIGHUP. A personal model that fails to load is skipped with an error in the log (the shipped one
runs): state on disk must never keep the daemon from starting.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from edge.calibration.store import PersonalModelStore
from edge.config import Config, ConfigError
from edge.emg.classifier import EmgClassifier
from edge.model_card import CardError
from edge.paths import SHIPPED_EMG_MODEL, SHIPPED_FACE_MODEL, shipped_model
from edge.sources.replay_emg import ReplayEmgSource
from edge.sources.serial_emg import SerialEmgSource

if TYPE_CHECKING:
    from edge.face.classifier import FacePipeline

log = logging.getLogger(__name__)


def modality_weights(config: Config) -> dict[str, float]:
    return {"emg": config.emg.weight, "face": config.face.weight}


def emg_model_path(config: Config) -> Path:
    """The EMG model to run: the config's, else the active personal one, else the shipped one."""
    if config.models.emg is not None:
        return config.models.emg
    return PersonalModelStore.for_config(config).active() or shipped_model(SHIPPED_EMG_MODEL)


def emg_classifier(config: Config) -> EmgClassifier:
    path = emg_model_path(config)
    if config.models.emg is None and path != shipped_model(SHIPPED_EMG_MODEL):
        try:
            classifier = EmgClassifier(path, config.models.num_threads)
        except (CardError, OSError, ValueError) as exc:
            log.error("the active personal EMG model does not load, running the shipped one: %s", exc)
            path = shipped_model(SHIPPED_EMG_MODEL)
        else:
            log.info("EMG model: personal, %s (labels %s)", path, ", ".join(classifier.labels))
            trained_hz, rate_hz = classifier.model.card.sample_rate_hz, config.emg.sample_rate_hz
            if trained_hz is not None and abs(trained_hz - rate_hz) > 0.01 * rate_hz:
                # Its features were fitted on windows of another length in time: it still runs, but
                # the user should recalibrate (or fix emg.sample_rate_hz).
                log.warning(
                    "the personal EMG model was calibrated at %g Hz, emg.sample_rate_hz is %g Hz: "
                    "calibrate again at this rate",
                    trained_hz,
                    rate_hz,
                )
            return classifier
    return EmgClassifier(path, config.models.num_threads)


def swappable(running: EmgClassifier, new: EmgClassifier) -> bool:
    """Whether ``new`` can replace ``running`` in the running EMG stage: it reads the same channels,
    so the source and its queue stay as they are. Another window or hop (a personal model reads
    100 samples, the generic one 300) only re-windows the stream (EmgStage.use)."""
    return running.spec.n_channels == new.spec.n_channels


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

    emg_changed: bool  # EMG restarts (source included) with emg_classifier
    camera_changed: bool
    emg_classifier: EmgClassifier | None = None
    # Only the EMG model changed (a personal model activated) and it fits the running stage:
    # emg_classifier replaces the stage's classifier between two chunks, nothing is restarted.
    emg_swap: bool = False
    face_pipeline: FacePipeline | None = None


async def prepare(old: Config, new: Config, running_emg: EmgClassifier | None = None) -> Prepared:
    """Raises ConfigError, CardError, OSError or ValueError: the reload is then rejected.

    ``running_emg``, the classifier the EMG stage runs now, lets a reload with an unchanged config
    pick up a newly activated personal model (or a rollback to the shipped one).
    """
    models_changed = new.models != old.models
    prepared = Prepared(
        emg_changed=new.emg != old.emg or models_changed,
        camera_changed=new.camera != old.camera or new.face != old.face or models_changed,
    )
    if prepared.emg_changed and new.emg.source != "off":
        prepared.emg_classifier = await asyncio.to_thread(emg_classifier, new)
    elif running_emg is not None and new.emg.source != "off":
        wanted = await asyncio.to_thread(emg_model_path, new)
        if wanted != running_emg.model.model_path:
            classifier = await asyncio.to_thread(emg_classifier, new)
            if classifier.model.model_path != running_emg.model.model_path:
                prepared.emg_classifier = classifier
                prepared.emg_swap = swappable(running_emg, classifier)
                prepared.emg_changed = not prepared.emg_swap
                log.info(
                    "the EMG model changes from %s to %s (%s)",
                    running_emg.model.model_path,
                    classifier.model.model_path,
                    "swapped in between two chunks"
                    if prepared.emg_swap
                    else "EMG restarts: it reads another number of channels",
                )
    if prepared.camera_changed and new.camera.source != "off":
        prepared.face_pipeline = await asyncio.to_thread(face_pipeline, new)
    return prepared
