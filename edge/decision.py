"""From per-window probabilities to emotion episodes.

Each modality's probabilities are smoothed (EMA), fused across the modalities that are
fresh, and fed through a small state machine:

* a label must top the fused estimate with at least ``enter_threshold`` for
  ``min_consecutive`` windows in a row before an episode starts (``new``);
* the episode is kept alive while its label stays above ``exit_threshold`` (hysteresis, so
  it does not flicker), with ``update`` events at most every ``update_min_interval_s``;
* it ends (``end``) when another label has taken over, or after ``end_after_s`` without
  support. Below ``enter_threshold`` and outside an episode the state is ``uncertain``.

The state (what the sensor shows) names an emotion only while its episode is open *and* its own
fused probability is at least ``exit_threshold``; ``confidence`` is that probability. Otherwise
the state is ``uncertain`` with confidence 0: it names no emotion, so it cannot be confident.
A label therefore never sits under ``exit_threshold`` while stated, and the only lag between
the probabilities and the label is the ``min_consecutive`` windows an episode needs to start.
When every modality is gone (input ended, paused, closed) the probabilities are emptied too.

Time is whatever clock the caller passes (seconds, monotonic): the sample clock in replay,
so a replay decides identically at any speed.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from edge.config.decision import DecisionConfig
from edge.emg.dsp import FloatArray
from edge.emotions import UNCERTAIN

EventType = Literal["new", "update", "end"]


@dataclass(frozen=True)
class ModalityReading:
    """One classifier output: probabilities over that model's own labels."""

    modality: str
    labels: Sequence[str]
    probs: FloatArray
    t: float
    sample: int | None = None  # stream position at the end of the window, for tracing


@dataclass(frozen=True)
class EpisodeEvent:
    type: EventType
    episode_id: str
    emotion: str
    confidence: float
    probs: dict[str, float]
    modalities: list[str]
    t: float
    started_t: float
    sample: int | None = None
    # Why an episode ended when it is not the decision's own doing ("restart": the daemon died with it open).
    reason: str | None = None


@dataclass(frozen=True)
class EmotionState:
    emotion: str
    confidence: float
    probs: dict[str, float]
    modalities: list[str]
    t: float


@dataclass
class _Modality:
    labels: list[str]
    smoothed: FloatArray
    t: float
    weight: float


@dataclass
class _Episode:
    episode_id: str
    emotion: str
    started_t: float
    last_support_t: float
    last_event_t: float
    last_confidence: float
    modalities: set[str] = field(default_factory=set)


class DecisionEngine:
    def __init__(
        self,
        config: DecisionConfig,
        weights: Mapping[str, float] | None = None,
        new_id: Callable[[], str] = lambda: uuid.uuid4().hex,
    ) -> None:
        self.config = config
        self.weights = dict(weights or {})
        self._new_id = new_id
        self._modalities: dict[str, _Modality] = {}
        self._episode: _Episode | None = None
        self._candidate: str | None = None
        self._candidate_run = 0
        self._state = EmotionState(UNCERTAIN, 0.0, {}, [], 0.0)

    @property
    def state(self) -> EmotionState:
        return self._state

    @property
    def episode_open(self) -> bool:
        return self._episode is not None

    def observe(self, reading: ModalityReading) -> list[EpisodeEvent]:
        """Add one window's probabilities; return the events it causes."""
        probs = np.asarray(reading.probs, dtype=np.float64)
        m = self._modalities.get(reading.modality)
        if m is None or m.labels != list(reading.labels) or reading.t - m.t > self.config.staleness_s:
            # First reading, or the old estimate is stale: start the EMA afresh.
            m = _Modality(
                list(reading.labels), probs.copy(), reading.t, self.weights.get(reading.modality, 1.0)
            )
            self._modalities[reading.modality] = m
        else:
            a = self.config.ema_alpha
            m.smoothed = a * probs + (1 - a) * m.smoothed
            m.t = reading.t
        return self._step(reading.t, reading.sample)

    def set_weights(self, weights: Mapping[str, float]) -> None:
        """New per-modality weights (a reload), applied to the estimates already held too."""
        self.weights = dict(weights)
        for name, m in self._modalities.items():
            m.weight = self.weights.get(name, 1.0)

    def tick(self, t: float) -> list[EpisodeEvent]:
        """Advance time without a reading (ends episodes whose support went stale)."""
        return self._step(t, None)

    def forget(self, modality: str) -> None:
        """Drop a modality's estimate at once (it was paused, or its source failed)."""
        self._modalities.pop(modality, None)

    def close(self, t: float) -> list[EpisodeEvent]:
        """End the open episode, e.g. on shutdown or when the input ended.

        The state becomes ``uncertain`` with no probabilities: what was estimated before no longer
        describes anything, and a sensor must not keep showing it as attributes.
        """
        self._state = EmotionState(UNCERTAIN, 0.0, {}, [], t)
        if self._episode is None:
            return []
        fused, _ = self.fuse(t)
        return [self._end(t, fused, None)]

    def fuse(self, t: float) -> tuple[dict[str, float], list[str]]:
        """Weighted late fusion of the fresh modalities on the union of their labels.

        Each modality counts with its configured weight times its own confidence (its top
        smoothed probability), so a confident modality outweighs an unsure one. A modality that
        lacks a label (the shipped EMG model has no "neutral") defers on it: it takes the mass that
        the modalities able to express that label give it, and spreads the rest over its own
        labels. Otherwise EMG, which always names some emotion, would cap "neutral" below the entry
        threshold. A model that has the label votes on it like on any other: a calibrated EMG model
        with "neutral" (``emotion-edge calibrate``) weighs in on the face's neutral, and on its own
        can open and hold a neutral episode.
        """
        fresh: list[tuple[str, dict[str, float], float]] = []
        for name, m in sorted(self._modalities.items()):
            if t - m.t > self.config.staleness_s:
                continue
            w = m.weight * float(m.smoothed.max())
            if w > 0:
                fresh.append((name, dict(zip(m.labels, m.smoothed.tolist(), strict=True)), w))
        if not fresh:
            return {}, []
        labels = list(dict.fromkeys(label for _, probs, _ in fresh for label in probs))
        expressed: dict[str, float] = {}
        for label in labels:
            voters = [(probs[label], w) for _, probs, w in fresh if label in probs]
            expressed[label] = sum(p * w for p, w in voters) / sum(w for _, w in voters)
        total = dict.fromkeys(labels, 0.0)
        norm = 0.0
        for _, probs, w in fresh:
            deferred = {label: expressed[label] for label in labels if label not in probs}
            keep = max(0.0, 1.0 - sum(deferred.values()))
            for label in labels:
                total[label] += w * (deferred[label] if label in deferred else probs[label] * keep)
            norm += w
        mass = sum(total.values())
        return {k: v / mass for k, v in total.items()}, [name for name, _, _ in fresh]

    def _step(self, t: float, sample: int | None) -> list[EpisodeEvent]:
        cfg = self.config
        fused, used = self.fuse(t)
        events: list[EpisodeEvent] = []
        top, conf = max(fused.items(), key=lambda kv: kv[1]) if fused else (UNCERTAIN, 0.0)
        if fused and conf >= cfg.enter_threshold:
            self._candidate_run = self._candidate_run + 1 if top == self._candidate else 1
            self._candidate = top
        else:
            self._candidate, self._candidate_run = None, 0
        established = self._candidate if self._candidate_run >= cfg.min_consecutive else None

        ep = self._episode
        if ep is not None:
            support = fused.get(ep.emotion, 0.0)
            if support >= cfg.exit_threshold:
                ep.last_support_t = t
                ep.modalities.update(used)
            taken_over = established is not None and established != ep.emotion
            if taken_over or t - ep.last_support_t >= cfg.end_after_s:
                events.append(self._end(t, fused, sample))
                ep = None
            elif (
                support >= cfg.exit_threshold
                and t - ep.last_event_t >= cfg.update_min_interval_s
                and abs(support - ep.last_confidence) >= 0.05
            ):
                ep.last_event_t = t
                ep.last_confidence = support
                events.append(self._event("update", ep, support, fused, used, t, sample))
        if ep is None and established is not None:
            ep = _Episode(self._new_id(), established, t, t, t, conf, set(used))
            self._episode = ep
            events.append(self._event("new", ep, conf, fused, used, t, sample))

        self._state = self._stated(ep, fused, used, t)
        return events

    def _stated(
        self, ep: _Episode | None, fused: dict[str, float], used: list[str], t: float
    ) -> EmotionState:
        """The episode's emotion while its own probability supports it, else ``uncertain`` at 0."""
        support = fused.get(ep.emotion, 0.0) if ep is not None else 0.0
        if ep is not None and support >= self.config.exit_threshold:
            return EmotionState(ep.emotion, support, fused, used, t)
        return EmotionState(UNCERTAIN, 0.0, fused, used, t)

    def _end(self, t: float, fused: dict[str, float], sample: int | None) -> EpisodeEvent:
        ep = self._episode
        assert ep is not None
        self._episode = None
        return self._event("end", ep, fused.get(ep.emotion, 0.0), fused, sorted(ep.modalities), t, sample)

    @staticmethod
    def _event(
        kind: EventType,
        ep: _Episode,
        confidence: float,
        fused: dict[str, float],
        used: list[str],
        t: float,
        sample: int | None,
    ) -> EpisodeEvent:
        return EpisodeEvent(
            type=kind,
            episode_id=ep.episode_id,
            emotion=ep.emotion,
            confidence=round(confidence, 4),
            probs={k: round(v, 4) for k, v in fused.items()},
            modalities=sorted(used),
            t=t,
            started_t=ep.started_t,
            sample=sample,
        )
