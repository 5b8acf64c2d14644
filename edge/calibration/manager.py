"""Runs calibration sessions: feeds them samples and time, tells listeners, fits and installs.

One manager per process (the daemon, or ``emotion-edge calibrate`` on the port when no daemon
runs). It holds at most one :class:`~edge.calibration.session.CalibrationSession`:

- :meth:`tap` receives every EMG sample chunk (the pipeline's tap; the daemon's events keep
  flowing, the session only looks at the samples);
- :meth:`run` is the supervised loop that moves the session on by the clock and hands snapshots
  to the listeners (control-socket clients, the MQTT sensors);
- once every repetition is recorded, :meth:`_finish` writes the raw recording, fits it with
  :func:`edge.calibration.offline.calibrate_recording` in a thread, and hands the candidate to the
  :class:`Installer`, which validates, installs and activates it (or refuses it, with reasons) and
  then swaps it into the running pipeline. A session cancelled before the install changes nothing.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from edge.calibration.plan import build_plan
from edge.calibration.session import FINAL_PHASES, CalibrationSession
from edge.config import Config
from edge.queues import LatestSlot
from edge.sources.chunk import SampleChunk

log = logging.getLogger(__name__)

TICK_S = 0.05
# Snapshots to listeners at most this often (phase changes go out at once).
SNAPSHOT_INTERVAL_S = 0.2


class CalibrationBusy(RuntimeError):
    """A session is already running, or calibration is impossible now (EMG off)."""


class Installer(Protocol):
    """Turns a finished session's recording into an active model (the model store)."""

    async def install(self, session: CalibrationSession) -> tuple[str, str, dict[str, Any]]:
        """Fit, validate and activate. Returns ``(phase, message, result)`` with phase ``done``,
        ``refused`` or ``failed``; must check ``session.phase == "cancelled"`` before activating."""
        ...


class CalibrationManager:
    def __init__(
        self,
        get_config: Callable[[], Config],
        installer: Installer,
        channel_names: tuple[str, ...] = (),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._get_config = get_config
        self.installer = installer
        self.channel_names = channel_names
        self.clock = clock
        self.session: CalibrationSession | None = None
        self.last_result: dict[str, Any] | None = None  # of the last session that reached an outcome
        self.listeners: set[LatestSlot[dict[str, Any]]] = set()
        self.on_snapshot: list[Callable[[dict[str, Any]], None]] = []
        self.available: Callable[[], bool] = lambda: True
        self.emg_paused: Callable[[], bool] = lambda: False  # the "Pause EMG" switch
        self._finishing: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._last_sent = 0.0
        self._last_phase: str | None = None
        self.sessions_started = 0
        self.outcomes: dict[str, int] = {}  # sessions by how they ended: done, refused, failed, cancelled
        self.flagged_repetitions = 0
        self._counted: CalibrationSession | None = None

    # --- commands -----------------------------------------------------------------

    def start(self) -> dict[str, Any]:
        if self.session is not None and not self.session.finished:
            raise CalibrationBusy("a calibration session is already running")
        config = self._get_config()
        if config.emg.source == "off":
            raise CalibrationBusy('EMG is off (emg.source = "off"): nothing to calibrate')
        if config.models.emg is not None:
            # The configured model wins over personal ones: a new one would be stored but never run.
            raise CalibrationBusy(
                f"[models] emg = {config.models.emg} is set: unset it to use a personal model"
            )
        if self.emg_paused():
            raise CalibrationBusy("EMG is paused: switch 'Pause EMG' off to calibrate")
        if not self.available():
            raise CalibrationBusy("no EMG signal right now: check the board and its cable")
        cal = config.calibration
        rng = random.Random(cal.seed)
        now = self.clock()
        self.session = CalibrationSession(
            cal,
            build_plan(cal, rng),
            config.emg.sample_rate_hz,
            (config.emg.serial.value_min, config.emg.serial.value_max),
            len(self.channel_names) or 3,
            now,
            self.channel_names,
        )
        self.sessions_started += 1
        self._wake.set()
        log.info("calibration session started: %d repetitions", len(self.session.plan))
        self._send(force=True)
        return self.session.snapshot(now)

    def cancel(self) -> bool:
        """True when a running session was cancelled (nothing it recorded is kept)."""
        session = self.session
        if session is None or not session.cancel():
            return False
        log.info("calibration session cancelled")
        self._send(force=True)
        return True

    def status(self) -> dict[str, Any]:
        if self.session is None:
            return {
                "type": "progress",
                "phase": "idle",
                "prompt": "",
                "progress": 0.0,
                "result": self.last_result,
            }
        snap = self.session.snapshot(self.clock())
        snap.setdefault("result", self.last_result)
        return snap

    # --- inputs -------------------------------------------------------------------

    def tap(self, chunk: SampleChunk) -> None:
        session = self.session
        if session is None or session.finished:
            return
        if self.emg_paused():
            # Paused means "don't use my EMG": what comes in now must not train a model.
            if session.cancel():
                log.warning("calibration session cancelled: EMG was paused")
                self._send(force=True)
            return
        try:
            session.feed(chunk.samples, self.clock(), chunk.discontinuity)
        except Exception:  # the EMG stage calls this: a calibration bug must not stop inference
            log.exception("calibration: the session failed on a sample chunk")
            session.finish("failed", "internal error while recording; nothing was changed")

    async def run(self) -> None:
        """The session's clock: phases move on even when no samples arrive (a pulled cable)."""
        while True:
            session = self.session
            if session is not None and session.finished and session is not self._counted:
                self._counted = session
                self.outcomes[session.phase] = self.outcomes.get(session.phase, 0) + 1
                self.flagged_repetitions += len(session.flagged)
            if session is None or (session.finished and self._finishing is None):
                # Idle (no session, or its outcome sent): no wake-ups until the next start.
                self._wake.clear()
                await self._wake.wait()
                continue
            await asyncio.sleep(TICK_S)
            session.advance(self.clock())
            if session.phase == "recorded" and self._finishing is None:
                session.finish("fitting", "training your personal model")
                self._finishing = asyncio.get_running_loop().create_task(self._finish(session))
            self._send()

    async def _finish(self, session: CalibrationSession) -> None:
        try:
            phase, message, result = await self.installer.install(session)
        except Exception as exc:  # a bug or an I/O error: the session fails, the daemon goes on
            log.exception("calibration: fitting or installing failed")
            phase, message, result = "failed", f"could not train or install the model: {exc}", {}
        finally:
            self._finishing = None
        if session.phase == "cancelled":
            return
        session.finish(phase, message, result)  # type: ignore[arg-type]
        if result:
            self.last_result = result
        log.info("calibration %s: %s", phase, message)
        self._send(force=True)

    # --- outputs ------------------------------------------------------------------

    def _send(self, force: bool = False) -> None:
        session = self.session
        if session is None:
            return
        now = self.clock()
        changed = session.phase != self._last_phase
        if not (force or changed or now - self._last_sent >= SNAPSHOT_INTERVAL_S):
            return
        if session.finished and not changed and not force:
            return
        self._last_sent, self._last_phase = now, session.phase
        snap = session.snapshot(now)
        for slot in list(self.listeners):
            slot.put(snap)
        for callback in self.on_snapshot:
            callback(snap)

    @property
    def running(self) -> bool:
        return self.session is not None and self.session.phase not in FINAL_PHASES

    async def wait_finished(self) -> CalibrationSession:
        while self.session is None or not self.session.finished:
            await asyncio.sleep(TICK_S)
        return self.session


def socket_path(state_dir: Path) -> Path:
    return state_dir / "calibration.sock"
