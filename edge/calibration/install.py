"""From a recorded session to an active model: write the recording, fit, install, swap.

The raw session goes to the model store's recording path in the recording CSV format
(``sample,EMG1,EMG2,EMG3,label,rep``), so it can be replayed and retrained with
``calibrate --from-recording``. Fitting (:func:`edge.calibration.offline.calibrate_recording`)
runs in a thread. The store (:class:`edge.calibration.store.PersonalModelStore`) then installs the
candidate and activates it only if its validation passes; a refused one is kept, inactive, with
the reasons. A session cancelled while fitting is dropped before anything is installed, its
recording deleted.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import shutil
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from edge.atomic import atomic_write
from edge.calibration import DEFAULT_NAME
from edge.calibration.offline import calibrate_recording
from edge.calibration.session import CalibrationSession
from edge.calibration.store import PersonalModelStore
from edge.emg.dsp import FloatArray
from edge.recording import EMG_CHANNELS, RecordingError

log = logging.getLogger(__name__)


def write_recording(path: Path, samples: FloatArray, labels: list[str], reps: list[int]) -> None:
    """The session as a recording CSV, atomically. Repetitions are separated by a gap of one in
    ``sample``, so no window of a reader that ignores ``rep`` spans two of them."""
    rows = [f"sample,{','.join(EMG_CHANNELS)},label,rep\n"]
    sample = 0
    for i, (row, label, rep) in enumerate(zip(samples, labels, reps, strict=True)):
        if i and (label != labels[i - 1] or rep != reps[i - 1]):
            sample += 1
        rows.append(f"{sample},{','.join(f'{v:g}' for v in row)},{label},{rep}\n")
        sample += 1
    atomic_write(path, "".join(rows).encode())


class StoreInstaller:
    """Implements :class:`edge.calibration.manager.Installer` on the model store."""

    def __init__(
        self,
        store: PersonalModelStore,
        swap: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.store = store
        self.swap = swap  # makes the running pipeline use the newly active model

    async def install(self, session: CalibrationSession) -> tuple[str, str, dict[str, Any]]:
        store = self.store
        model_id = store.new_id()
        csv = store.recording_path(model_id)
        samples, labels, reps = session.recording_rows()
        await asyncio.to_thread(write_recording, csv, samples, labels, reps)
        store.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(dir=store.root, prefix=".session-"))
        try:
            try:
                result = await asyncio.to_thread(
                    calibrate_recording,
                    csv,
                    scratch,
                    name=DEFAULT_NAME,
                    sample_rate_hz=session.fs,  # the rate it was recorded at, even after a reload
                    command="calibration session",
                )
            except RecordingError as exc:
                return "failed", f"the session cannot train a model: {exc}", {}
            if session.phase == "cancelled":
                csv.unlink(missing_ok=True)
                return "cancelled", "cancelled: nothing was changed", {}
            session.committed = True
            installed = await asyncio.to_thread(store.install, result, model_id)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        report = installed.report
        summary: dict[str, Any] = {
            "model_id": installed.model_id,
            "activated": installed.activated,
            "reasons": installed.reasons,
            "warnings": installed.warnings,
            "accuracy": report["accuracy"],
            "macro_f1": report["macro_f1"],
            "labels": report["labels"],
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "training_s": report["seconds"]["total"],
            "repetitions": sum(len(r) for r in report["repetitions"].values()),
            "flagged": len(session.flagged),
            "model": str(installed.model),
            "recording": str(csv),
        }
        if not installed.activated:
            why = "; ".join(installed.reasons)
            return "refused", f"accuracy {report['accuracy']:.0%}, not activated: {why}", summary
        if self.swap is not None:
            await self.swap()
        notes = "".join(f"; {w}" for w in installed.warnings)
        return "done", f"accuracy {report['accuracy']:.0%}: your personal model is active{notes}", summary
