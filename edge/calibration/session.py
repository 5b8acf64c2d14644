"""A guided calibration session as a state machine: EMG samples and a clock in, prompts out.

It does no I/O and never reads a clock itself: the caller feeds it the sample chunks the daemon
already receives (:meth:`CalibrationSession.feed`) and the monotonic time (:meth:`advance`), so a
test can drive it with a fake clock and the daemon with its own loop.

For each :class:`~edge.calibration.plan.Step` the phases are::

    countdown (countdown_s) -> record (repetition_s) -> rest (rest_s) -> next step ...

The first ``reaction_s`` of a recording are not kept (the wearer is still reacting to the prompt).
At the end of a recording the kept samples are checked (:func:`edge.emg.quality.channel_quality`):
a repetition with a bad channel, a gap in the stream or too few samples is flagged, the wearer is
told what to check, and the same step is done again (at most ``max_retries`` times, then the
session fails). When every step has a good repetition the session is ``recorded``: its samples are
ready for :meth:`recording_rows`, and fitting is the caller's job. ``cancel`` at any time discards
everything.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from edge.calibration.plan import Step
from edge.config.calibration import CalibrationConfig
from edge.emg.dsp import FloatArray
from edge.emg.quality import ChannelVerdict, advice, channel_quality

Phase = Literal[
    "countdown", "record", "rest", "recorded", "fitting", "done", "refused", "failed", "cancelled"
]
FINAL_PHASES: frozenset[str] = frozenset({"done", "refused", "failed", "cancelled"})
# A repetition needs at least this share of the samples its duration should hold.
MIN_SAMPLE_SHARE = 0.8
# Seconds of recent samples behind the live level bars.
LEVEL_WINDOW_S = 0.25


@dataclass
class Take:
    """One accepted repetition."""

    step: Step
    samples: FloatArray


@dataclass
class _Recorder:
    """The samples of the repetition being recorded."""

    chunks: list[FloatArray] = field(default_factory=list)
    gaps: int = 0

    def samples(self, n_channels: int) -> FloatArray:
        if not self.chunks:
            return np.empty((0, n_channels))
        return np.concatenate(self.chunks)


class CalibrationSession:
    def __init__(
        self,
        config: CalibrationConfig,
        plan: list[Step],
        sample_rate_hz: float,
        value_range: tuple[float, float],
        n_channels: int,
        now: float,
        channel_names: tuple[str, ...] = (),
    ) -> None:
        self.config = config
        self.plan = plan
        self.fs = sample_rate_hz
        self.value_range = value_range
        self.n_channels = n_channels
        self.channel_names = channel_names
        self.started_at = now
        self.started_wall = time.time()
        self.phase: Phase = "countdown"
        self.index = 0  # the step in progress
        self.phase_end = now + config.countdown_s
        self.retries = 0  # of the current step
        self.flagged: list[dict[str, Any]] = []  # every bad repetition, with what was wrong
        self.takes: list[Take] = []
        self.message = ""  # what the wearer should know now (e.g. which electrode to check)
        self.result: dict[str, Any] = {}  # set by the caller once fitting has an outcome
        self._recorder: _Recorder | None = None
        self._record_from = 0.0
        self._recent: deque[FloatArray] = deque()
        self._recent_n = 0
        self.samples_seen = 0
        # Set once the model is being installed: from then on a cancel comes too late.
        self.committed = False

    # --- inputs -------------------------------------------------------------------

    def feed(self, samples: FloatArray, now: float, discontinuity: bool = False) -> None:
        """Samples ``(n, channels)`` that arrived at ``now`` (phase changes first, by the clock)."""
        self.advance(now)
        self.samples_seen += len(samples)
        self._remember(samples)
        if self.phase != "record" or self._recorder is None or now < self._record_from:
            return
        if discontinuity:
            self._recorder.gaps += 1
        self._recorder.chunks.append(np.asarray(samples, dtype=np.float64))

    def advance(self, now: float) -> None:
        """Move through the phases whose time has come."""
        while self.phase in ("countdown", "record", "rest") and now >= self.phase_end:
            if self.phase == "countdown":
                self._start_recording(self.phase_end)
            elif self.phase == "record":
                self._finish_recording(self.phase_end)
            else:
                self._next_step(self.phase_end)

    def cancel(self) -> bool:
        """Discard everything; False when it is too late (finished, or being installed)."""
        if self.phase in FINAL_PHASES or self.committed:
            return False
        self.phase = "cancelled"
        self.takes = []
        self._recorder = None
        self.message = "cancelled: nothing was changed"
        return True

    def finish(self, phase: Phase, message: str, result: dict[str, Any] | None = None) -> None:
        """The caller's verdict after ``recorded``: fitting, done, refused or failed."""
        if self.phase == "cancelled":
            return
        self.phase = phase
        self.message = message
        if result is not None:
            self.result = result

    # --- transitions --------------------------------------------------------------

    def _start_recording(self, at: float) -> None:
        self.phase = "record"
        self.phase_end = at + self.config.repetition_s
        self._record_from = at + self.config.reaction_s
        self._recorder = _Recorder()

    def _finish_recording(self, at: float) -> None:
        assert self._recorder is not None
        step = self.plan[self.index]
        samples = self._recorder.samples(self.n_channels)
        problem = self._problem(samples, self._recorder.gaps)
        self._recorder = None
        if problem is None:
            self.takes.append(Take(step, samples))
            self.retries = 0
            self.message = ""
            self.index += 1
        else:
            self.flagged.append(
                {"label": step.label, "rep": step.rep, "attempt": self.retries + 1, **problem}
            )
            self.retries += 1
            self.message = f"repeating {step.label}: {problem['reason']}"
            if self.retries > self.config.max_retries:
                self.phase = "failed"
                self.message = (
                    f"gave up after {self.retries} bad recordings of {step.label}: {problem['reason']}; "
                    "nothing was changed"
                )
                self.takes = []
                return
        if self.index >= len(self.plan):
            self.phase = "recorded"
            return
        self.phase = "rest"
        self.phase_end = at + self.config.rest_s

    def _next_step(self, at: float) -> None:
        self.phase = "countdown"
        self.phase_end = at + self.config.countdown_s

    def _problem(self, samples: FloatArray, gaps: int) -> dict[str, Any] | None:
        expected = (self.config.repetition_s - self.config.reaction_s) * self.fs
        if len(samples) < MIN_SAMPLE_SHARE * expected:
            return {
                "reason": f"only {len(samples)} of {expected:.0f} samples arrived: check the board's cable",
                "channels": [],
            }
        if gaps:
            return {
                "reason": "samples were lost during the recording: check the board's cable",
                "channels": [],
            }
        verdicts = channel_quality(samples, self.fs, self.value_range)
        bad = advice(verdicts, self.channel_names)
        if not bad:
            return None
        return {"reason": bad, "channels": [v.as_dict() for v in verdicts if not v.ok]}

    # --- outputs ------------------------------------------------------------------

    @property
    def finished(self) -> bool:
        return self.phase in FINAL_PHASES

    def _remember(self, samples: FloatArray) -> None:
        keep = max(2, int(LEVEL_WINDOW_S * self.fs))
        self._recent.append(np.asarray(samples, dtype=np.float64))
        self._recent_n += len(samples)
        while self._recent and self._recent_n - len(self._recent[0]) >= keep:
            self._recent_n -= len(self._recent.popleft())

    def live_quality(self) -> list[ChannelVerdict]:
        """Verdicts over the last LEVEL_WINDOW_S of samples, for level bars (empty before any)."""
        if self._recent_n < 2:
            return []
        return channel_quality(np.concatenate(self._recent), self.fs, self.value_range)

    def progress(self, now: float) -> float:
        """Share of the session done: a step counts once recorded (its rest is then part of it)."""
        steps = len(self.plan)
        if self.phase in ("recorded", "fitting", "done", "refused"):
            return 1.0
        cfg = self.config
        total = cfg.countdown_s + cfg.repetition_s + cfg.rest_s
        within = 0.0
        if self.phase in ("countdown", "record") and total > 0:
            left = max(0.0, self.phase_end - now)
            end = cfg.countdown_s + (cfg.repetition_s if self.phase == "record" else 0.0)
            within = (end - left) / total
        return min(1.0, (self.index + within) / steps)

    def prompt(self) -> str:
        if self.phase in ("countdown", "record"):
            step = self.plan[self.index]
            face = "relax your face" if step.label == "neutral" else f"show {step.label}"
            return f"get ready: {face}" if self.phase == "countdown" else face.capitalize()
        if self.phase == "rest":
            return "Rest"
        return {
            "recorded": "Training your model",
            "fitting": "Training your model",
            "done": "Calibration done",
            "refused": "Calibration not good enough",
            "failed": "Calibration failed",
            "cancelled": "Calibration cancelled",
        }[self.phase]

    def snapshot(self, now: float) -> dict[str, Any]:
        """Everything a front-end shows, JSON-ready."""
        step = self.plan[self.index] if self.index < len(self.plan) else None
        active = self.phase in ("countdown", "record", "rest")
        live = self.live_quality() if active else []
        return {
            "type": "progress",
            "phase": self.phase,
            "prompt": self.prompt(),
            "label": step.label if step is not None and active else None,
            "rep": step.rep if step is not None and active else None,
            "remaining_s": round(max(0.0, self.phase_end - now), 2) if active else 0.0,
            "step": min(self.index + 1, len(self.plan)),
            "steps": len(self.plan),
            "progress": round(self.progress(now), 4),
            "levels": [round(v.level, 3) for v in live],
            "channels": [v.status for v in live],
            "message": self.message,
            "flagged": self.flagged,
            "result": self.result,
        }

    def recording_rows(self) -> tuple[FloatArray, list[str], list[int]]:
        """The accepted takes as one recording: samples, label and repetition per row, in order."""
        if not self.takes:
            return np.empty((0, self.n_channels)), [], []
        samples = np.concatenate([t.samples for t in self.takes])
        labels = [t.step.label for t in self.takes for _ in range(len(t.samples))]
        reps = [t.step.rep for t in self.takes for _ in range(len(t.samples))]
        return samples, labels, reps
