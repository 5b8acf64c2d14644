"""Signal quality of each EMG channel: is its electrode doing its job?

One pure function, :func:`channel_quality`, over a block of samples ``(n, channels)`` in ADC units.
It is what a calibration session checks after every repetition (a bad one is recorded again and the
wearer told which electrode to check), and the badge per channel of the live page; it keeps no state.

Verdicts, most serious first (a channel gets the first that applies):

- ``disconnected``: the channel sits on a rail of the ADC for almost the whole block. A lead-off
  amplifier input is pulled to a supply rail; a live electrode never stays there.
- ``saturated``: a large share of samples at a rail: the signal clips, its shape is lost. The
  source recording itself clips up to 17% of a repetition on its loudest channel, so the limit is
  well above that.
- ``flat``: hardly any variation: a dry or detached electrode, or a shorted input. Real EMG of a
  relaxed face still moves by several ADC steps.
- ``mains``: most of the signal's power sits at 50 or 60 Hz and their harmonics: an electrode with
  poor contact picks up the room's wiring instead of the muscle. The source recording has at most
  22% of its power there.

A channel that is ``ok`` can still be ``clipping``: a few peaks cut at a rail. That biases the
amplitude features a little but is no reason to repeat a repetition (the source recording clips
too), so it is a badge for the live page, not a verdict.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from edge.emg.dsp import FloatArray

Status = Literal["ok", "disconnected", "saturated", "flat", "mains"]

# Within this share of the full range from either end counts as "at the rail".
RAIL_MARGIN = 0.005
DISCONNECTED_AT_RAIL = 0.9
SATURATED_AT_RAIL = 0.3
# More than this share at a rail, but below SATURATED_AT_RAIL: peaks are cut off (clipping).
CLIPPING_AT_RAIL = 0.001
# Standard deviation below this share of the full range: flat. About a third of a step of a 10-bit
# ADC, one step of a 12-bit one: a quiet but live channel (a relaxed face) moves by more.
FLAT_STD = 0.0003
MAINS_SHARE = 0.5
MAINS_HZ = (50.0, 60.0)
MAINS_HARMONICS = 3
MAINS_BAND_HZ = 2.0
# Standard deviation that fills a level bar: a quarter of the full range.
LEVEL_FULL_STD = 0.25

ADVICE: dict[Status, str] = {
    "ok": "",
    "disconnected": "no signal (the lead looks unplugged): check that its cable is plugged in",
    "saturated": "the signal clips: press the electrode on firmly, or lower the amplifier gain",
    "flat": "the signal is flat: check the electrode's contact with the skin",
    "mains": "mostly mains hum: the electrode has poor skin contact, or its reference is off",
}


@dataclass(frozen=True)
class ChannelVerdict:
    channel: int  # 0-based column
    status: Status
    level: float  # 0..1, the channel's activity for a level bar
    at_rail: float  # share of samples at a rail
    std: float  # ADC units
    mains_share: float  # share of the AC power at mains frequencies

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def badge(self) -> str:
        """What the live page shows: the status, or "clipping" for an ok channel with cut peaks."""
        return "clipping" if self.ok and self.at_rail > CLIPPING_AT_RAIL else self.status

    @property
    def electrode(self) -> int:
        """The number a user sees on the board (EMG1, EMG2, ...)."""
        return self.channel + 1

    def as_dict(self) -> dict[str, object]:
        return {
            "channel": self.channel,
            "electrode": self.electrode,
            "status": self.status,
            "badge": self.badge,
            "level": round(self.level, 3),
            "at_rail": round(self.at_rail, 3),
            "std": round(self.std, 2),
            "mains_share": round(self.mains_share, 3),
        }


def mains_share(samples: FloatArray, fs: float) -> FloatArray:
    """Per channel: the share of the AC power within MAINS_BAND_HZ of 50/60 Hz and their harmonics."""
    x = samples - samples.mean(axis=0)
    power = np.abs(np.fft.rfft(x, axis=0)) ** 2
    freqs = np.fft.rfftfreq(len(x), 1.0 / fs)
    band = np.zeros(len(freqs), dtype=bool)
    for base in MAINS_HZ:
        for k in range(1, MAINS_HARMONICS + 1):
            band |= np.abs(freqs - base * k) <= MAINS_BAND_HZ
    total = power[1:].sum(axis=0)
    share: FloatArray = np.where(total > 0, power[band].sum(axis=0) / np.maximum(total, 1e-12), 0.0)
    return share


def channel_quality(
    samples: FloatArray, fs: float, value_range: tuple[float, float] = (0.0, 4095.0)
) -> list[ChannelVerdict]:
    """One verdict per column of ``samples`` (n, channels), raw ADC units in ``value_range``."""
    x = np.asarray(samples, dtype=np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(f"expected (n >= 2, channels) samples, got shape {x.shape}")
    lo, hi = value_range
    span = hi - lo
    margin = RAIL_MARGIN * span
    at_rail = ((x <= lo + margin) | (x >= hi - margin)).mean(axis=0)
    std = x.std(axis=0)
    hum = mains_share(x, fs)
    verdicts = []
    for ch in range(x.shape[1]):
        status: Status = "ok"
        if at_rail[ch] >= DISCONNECTED_AT_RAIL:
            status = "disconnected"
        elif at_rail[ch] >= SATURATED_AT_RAIL:
            status = "saturated"
        elif std[ch] < FLAT_STD * span:
            status = "flat"
        elif hum[ch] >= MAINS_SHARE:
            status = "mains"
        level = float(min(1.0, std[ch] / (LEVEL_FULL_STD * span)))
        verdicts.append(ChannelVerdict(ch, status, level, float(at_rail[ch]), float(std[ch]), float(hum[ch])))
    return verdicts


def advice(verdicts: list[ChannelVerdict], channel_names: tuple[str, ...] = ()) -> str:
    """What to tell the wearer: one clause per bad electrode, or "" when all are fine."""
    parts = []
    for v in verdicts:
        if v.ok:
            continue
        name = f" ({channel_names[v.channel]})" if v.channel < len(channel_names) else ""
        parts.append(f"check electrode {v.electrode}{name}: {v.status}, {ADVICE[v.status]}")
    return "; ".join(parts)


def envelope(samples: FloatArray, buckets: int) -> tuple[FloatArray, FloatArray]:
    """Min and max of each of ``buckets`` equal slices, ``(buckets, channels)`` each: a downsampled trace
    that still shows every spike and every flat stretch, which plain decimation would hide."""
    n = len(samples)
    if n == 0:
        empty = np.zeros((0, samples.shape[1] if samples.ndim == 2 else 0))
        return empty, empty
    buckets = min(buckets, n)
    edges = np.linspace(0, n, buckets + 1).astype(np.int64)
    return np.minimum.reduceat(samples, edges[:-1], axis=0), np.maximum.reduceat(samples, edges[:-1], axis=0)
