"""Personal EMG models in the state directory: saved atomically, validated, activated, rolled back.

Layout (``<state>`` is the folder of ``outbox.path``, ``/var/lib/emotion-edge`` by default; see
:func:`state_dir`)::

    <state>/calibration/
        models/<id>/emg-personal.tflite      the int8 model ...
        models/<id>/emg-personal.card.json   ... and its card (labels, validation, confusion)
        models/<id>/verdict.json             the gate's verdict: passed, reasons, thresholds
        recordings/<id>.csv                  the raw session: sample,EMG1,EMG2,EMG3,label,rep
        active.json                          {"active": id or null, "previous": [ids]}
        store.lock                           flock: one writer at a time (daemon or CLI)

Ids are UTC timestamps (``20261201T034012Z``), so they sort by age. The 3 newest models are kept
(:data:`KEEP_MODELS`), plus the active one if it is older; the recording of a pruned model goes
with it. Every write goes to a temporary name in the same folder, is fsynced and renamed, so a
power cut leaves the old state or the new one, never half of either.

Public API (the calibration session and ``emotion-edge models`` use it)::

    store = PersonalModelStore.for_config(config)     # or PersonalModelStore(state_dir)
    model_id = store.new_id()
    csv = store.recording_path(model_id)              # write the session here (parent exists)
    result = store.calibrate(model_id)                # blocking (seconds): run it in a thread;
                                                      # trains on the CSV, installs, gates
    result.model_id, result.activated, result.reasons # reasons: why it was not activated
    result.warnings                                   # e.g. an electrode that carries nothing
    store.list_models() -> list[StoredModel]          # newest first
    store.active() -> Path | None                     # the active .tflite, None: generic model
    store.activate(model_id) / store.rollback()       # UnknownModel for an unknown id
    store.forget_recordings() -> list[Path]           # deletes the kept raw recordings

``calibrate`` raises :class:`edge.recording.RecordingError` when the recording cannot calibrate
a model (a label with fewer than two repetitions, ...); nothing is installed then. To make the
running daemon use a newly activated model, reload it (:meth:`edge.service.Service.reload`, or
SIGHUP): :func:`edge.service.loading.emg_model_path` resolves the model at every (re)load.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge.atomic import atomic_write
from edge.calibration import DEFAULT_NAME
from edge.calibration.gate import assess
from edge.model_card import card_path_for

if TYPE_CHECKING:
    from edge.calibration.offline import CalibrationResult
    from edge.config import Config

KEEP_MODELS = 3
CALIBRATION_DIR = "calibration"
ACTIVE_FILE = "active.json"
LOCK_FILE = "store.lock"
VERDICT_FILE = "verdict.json"
_ID_FORMAT = "%Y%m%dT%H%M%SZ"


class StoreError(Exception):
    """A request the store cannot carry out (the message is one line for the user)."""


class UnknownModel(StoreError):
    pass


def state_dir(config: Config) -> Path:
    """The daemon's state directory: the folder of its outbox (systemd's StateDirectory)."""
    return config.outbox.path.parent


@dataclass(frozen=True)
class InstallResult:
    model_id: str
    activated: bool
    reasons: list[str]  # empty when activated; otherwise what to do about it
    warnings: list[str]  # worth fixing although it was activated
    model: Path  # the stored .tflite
    report: dict[str, Any]  # what `calibrate --json` prints, paths pointing into the store


@dataclass(frozen=True)
class StoredModel:
    model_id: str
    model: Path
    active: bool
    passed: bool
    accuracy: float | None
    labels: list[str]
    session_date: str | None
    reasons: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    recording: Path | None = None  # the raw session, while it is kept

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.model_id,
            "model": str(self.model),
            "active": self.active,
            "passed": self.passed,
            "accuracy": self.accuracy,
            "labels": self.labels,
            "session_date": self.session_date,
            "reasons": self.reasons,
            "warnings": self.warnings,
            "recording": None if self.recording is None else str(self.recording),
        }


class PersonalModelStore:
    def __init__(self, state: Path) -> None:
        self.state = Path(state)
        self.root = self.state / CALIBRATION_DIR
        self.models_dir = self.root / "models"
        self.recordings_dir = self.root / "recordings"
        self.pointer = self.root / ACTIVE_FILE
        self._thread_lock = threading.RLock()
        self._lock_depth = 0
        self._lock_fd: int | None = None

    @classmethod
    def for_config(cls, config: Config) -> PersonalModelStore:
        return cls(state_dir(config))

    # --- ids and recordings -------------------------------------------------------------

    def new_id(self, now: dt.datetime | None = None) -> str:
        """A fresh id, later than every stored one (two sessions in one second get ``-2``...)."""
        base = (now or dt.datetime.now(dt.UTC)).strftime(_ID_FORMAT)
        taken = set(self._model_ids()) | {p.stem for p in self._recordings()}
        candidate, n = base, 1
        while candidate in taken:
            n += 1
            candidate = f"{base}-{n}"
        return candidate

    def recording_path(self, model_id: str) -> Path:
        """Where the raw session of ``model_id`` is kept (the folder is created, mode 0700)."""
        _check_id(model_id)
        _mkdir_private(self.recordings_dir)
        return self.recordings_dir / f"{model_id}.csv"

    def forget_recordings(self) -> list[Path]:
        """Delete every kept raw recording; returns what was deleted."""
        deleted = []
        with self._locked():
            for path in self._recordings():
                path.unlink(missing_ok=True)
                deleted.append(path)
            if deleted:
                _fsync_dir(self.recordings_dir)
        return deleted

    # --- training and installing --------------------------------------------------------

    def calibrate(self, model_id: str, sample_rate_hz: float | None = None) -> InstallResult:
        """Train on ``recording_path(model_id)``, then :meth:`install` (blocking: use a thread)."""
        from edge.calibration.offline import calibrate_recording

        recording = self.recording_path(model_id)
        with self._scratch() as tmp:
            result = calibrate_recording(
                recording,
                tmp,
                name=DEFAULT_NAME,
                sample_rate_hz=sample_rate_hz,
                command="calibration session",
            )
            return self.install(result, model_id)

    def install(self, result: CalibrationResult, model_id: str | None = None) -> InstallResult:
        """Store the model ``result`` wrote (its files are copied, then renamed into place) and
        activate it if it passes the validation gate (:mod:`edge.calibration.gate`)."""
        model_id = model_id or self.new_id()
        _check_id(model_id)
        verdict = assess(result)
        src_model = Path(result.report["model"])
        src_card = Path(result.report["card"])
        _mkdir_private(self.models_dir)
        final = self.models_dir / model_id
        tmp = Path(tempfile.mkdtemp(dir=self.models_dir, prefix=f".incoming-{model_id}-"))
        try:
            for src in (src_model, src_card):
                shutil.copyfile(src, tmp / src.name)
                _fsync_file(tmp / src.name)
            _write_json_synced(tmp / VERDICT_FILE, verdict.as_json())
            _fsync_dir(tmp)
            with self._locked():
                if final.exists():
                    raise StoreError(f"model {model_id} already exists in {self.models_dir}")
                os.rename(tmp, final)
                _fsync_dir(self.models_dir)
                if verdict.passed:
                    self.activate(model_id)
                self._prune()
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        model_path = final / src_model.name
        report = dict(result.report, model=str(model_path), card=str(final / src_card.name))
        return InstallResult(model_id, verdict.passed, verdict.reasons, verdict.warnings, model_path, report)

    # --- activation ---------------------------------------------------------------------

    def active_id(self) -> str | None:
        active = self._read_pointer()["active"]
        return active if isinstance(active, str) and (self.models_dir / active).is_dir() else None

    def active(self) -> Path | None:
        """The active personal model's .tflite, or None (the generic model is used then)."""
        active = self.active_id()
        return None if active is None else self._model_file(active)

    def activate(self, model_id: str) -> None:
        """Make ``model_id`` the active model, whatever its verdict (the user's explicit choice)."""
        with self._locked():
            self._require(model_id)
            pointer = self._read_pointer()
            current = self.active_id()
            previous = [p for p in pointer["previous"] if p != model_id]
            if current is not None and current != model_id:
                previous.append(current)
            self._write_pointer(model_id, previous)

    def rollback(self) -> str | None:
        """Back to the model active before the current one; with none left, to the generic model
        (returns None then)."""
        with self._locked():
            previous = [p for p in self._read_pointer()["previous"] if (self.models_dir / p).is_dir()]
            target = previous.pop() if previous else None
            self._write_pointer(target, previous)
        return target

    def in_use(self, config: Config) -> str:
        """Which EMG model the daemon runs with ``config``, in words."""
        if config.models.emg is not None:
            return f"{config.models.emg} ([models] emg in the config; personal models are not used)"
        active = self.active_id()
        return f"personal model {active}" if active else "the shipped generic model"

    def list_models(self) -> list[StoredModel]:
        """Every stored model, newest first."""
        active = self.active_id()
        stored = []
        for model_id in sorted(self._model_ids(), reverse=True):
            verdict = _read_json(self.models_dir / model_id / VERDICT_FILE)
            card = _read_json(card_path_for(self._model_file(model_id)))
            recording = self.recordings_dir / f"{model_id}.csv"
            stored.append(
                StoredModel(
                    model_id=model_id,
                    model=self._model_file(model_id),
                    active=model_id == active,
                    passed=bool(verdict.get("passed", False)),
                    accuracy=card.get("metrics", {}).get("accuracy"),
                    labels=list(card.get("labels", [])),
                    session_date=card.get("training", {}).get("session_date"),
                    reasons=list(verdict.get("reasons", [])),
                    warnings=list(verdict.get("warnings", [])),
                    recording=recording if recording.is_file() else None,
                )
            )
        return stored

    # --- internals ----------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """The store to this thread alone: the daemon installing a session's model and
        ``emotion-edge models activate`` in another process must not interleave their
        read-modify-write of the pointer, or lose a model to the other's pruning. Re-entrant."""
        with self._thread_lock:
            if self._lock_depth == 0:
                _mkdir_private(self.root)
                fd = os.open(self.root / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX)
                except BaseException:
                    os.close(fd)
                    raise
                self._lock_fd = fd
            self._lock_depth += 1
            try:
                yield
            finally:
                self._lock_depth -= 1
                if self._lock_depth == 0 and self._lock_fd is not None:
                    os.close(self._lock_fd)  # closing releases the flock
                    self._lock_fd = None

    @contextlib.contextmanager
    def _scratch(self) -> Iterator[Path]:
        """A temporary folder on the store's file system, so installing is a copy on one disk."""
        _mkdir_private(self.root)
        tmp = Path(tempfile.mkdtemp(dir=self.root, prefix=".scratch-"))
        try:
            yield tmp
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def _model_ids(self) -> list[str]:
        if not self.models_dir.is_dir():
            return []
        return [p.name for p in self.models_dir.iterdir() if p.is_dir() and not p.name.startswith(".")]

    def _recordings(self) -> list[Path]:
        if not self.recordings_dir.is_dir():
            return []
        return sorted(p for p in self.recordings_dir.glob("*.csv") if p.is_file())

    def _model_file(self, model_id: str) -> Path:
        files = sorted((self.models_dir / model_id).glob("*.tflite"))
        return files[0] if files else self.models_dir / model_id / f"{DEFAULT_NAME}.tflite"

    def _require(self, model_id: str) -> None:
        if not (self.models_dir / model_id).is_dir() or model_id.startswith("."):
            known = ", ".join(sorted(self._model_ids(), reverse=True)) or "none"
            raise UnknownModel(f"no personal model {model_id!r} (stored: {known})")

    def _read_pointer(self) -> dict[str, Any]:
        data = _read_json(self.pointer)
        active = data.get("active")
        previous = data.get("previous", [])
        return {
            "active": active if isinstance(active, str) else None,
            "previous": [p for p in previous if isinstance(p, str)] if isinstance(previous, list) else [],
        }

    def _write_pointer(self, active: str | None, previous: list[str]) -> None:
        _mkdir_private(self.root)
        _write_json_synced(self.pointer, {"active": active, "previous": previous[-KEEP_MODELS * 2 :]})
        _fsync_dir(self.root)

    def _prune(self) -> None:
        """Keep the newest KEEP_MODELS models and the active one; drop the others' recordings too."""
        active = self.active_id()
        ids = sorted(self._model_ids(), reverse=True)
        keep = set(ids[:KEEP_MODELS]) | ({active} if active else set())
        for model_id in ids:
            if model_id not in keep:
                shutil.rmtree(self.models_dir / model_id, ignore_errors=True)
                (self.recordings_dir / f"{model_id}.csv").unlink(missing_ok=True)
        if ids:
            _fsync_dir(self.models_dir)


def _check_id(model_id: str) -> None:
    if not model_id or "/" in model_id or model_id.startswith(".") or model_id != model_id.strip():
        raise StoreError(f"not a model id: {model_id!r}")


def _mkdir_private(path: Path) -> None:
    # The recordings are biometric data: other users of the Pi must not read them. mkdir's mode
    # applies to the leaf only, so each missing level is made on its own.
    missing = [p for p in (path, *path.parents) if not p.exists()]
    for p in reversed(missing):
        p.mkdir(mode=0o700, exist_ok=True)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_json_synced(path: Path, data: dict[str, Any]) -> None:
    atomic_write(path, (json.dumps(data, indent=2) + "\n").encode())


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    # The rename itself is only durable once the folder holding it is synced.
    _fsync_file(path)
