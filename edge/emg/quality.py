"""Per-channel signal quality of raw EMG: is an electrode flat, saturated, clipping or full of mains hum?

Shared by the live page (a badge per channel) and calibration (a recording with a bad electrode is
refused before it trains anything). Works on raw samples in ADC units, ``(n, channels)``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from numpy.typing import NDArray

from edge.emg.dsp import DEFAULT_ZC_THRESHOLD

# A channel whose standard deviation stays below this (ADC counts) carries nothing: an electrode off the
# skin or a dead input. Tied to the deadband the features already treat as quantisation noise.
FLAT_STD = DEFAULT_ZC_THRESHOLD / 5
# Samples within this fraction of the ADC range from either rail count as "at the rail".
RAIL_MARGIN = 0.005
# More than this share of samples at a rail: the signal is lost there (saturated); fewer, but still more
# than CLIP_FRACTION: peaks are cut off (clipping) and the amplitude features are biased.
SATURATED_FRACTION = 0.5
CLIP_FRACTION = 0.001
# Share of the (mean-removed) signal power within MAINS_BAND_HZ of 50 or 60 Hz above which the channel is
# dominated by hum rather than muscle: EMG power is spread over 20-450 Hz, so a few Hz should hold little.
MAINS_RATIO = 0.3
MAINS_BAND_HZ = 2.0
MAINS_HZ = (50.0, 60.0)
BADGES = ("saturated", "flat", "clipping", "mains")


@dataclass(frozen=True)
class ChannelQuality:
    flat: bool
    saturated: bool
    clipping: bool
    mains: bool
    std: float
    rail_fraction: float
    mains_ratio: float

    @property
    def badge(self) -> str:
        """The worst problem, in BADGES order, or "ok"."""
        return next((name for name in BADGES if getattr(self, name)), "ok")

    def as_dict(self) -> dict[str, object]:
        return {**asdict(self), "badge": self.badge}


def mains_ratio(signal: NDArray[np.float64], rate_hz: float) -> float:
    """Share of the power of ``signal`` (one channel, mean removed) near 50 or 60 Hz; 0 if unmeasurable."""
    if rate_hz < 2 * (max(MAINS_HZ) + MAINS_BAND_HZ) or len(signal) < rate_hz / MAINS_BAND_HZ:
        return 0.0  # too slow to see 60 Hz, or too short to resolve a few Hz
    power = np.abs(np.fft.rfft(signal - signal.mean())) ** 2
    freqs = np.fft.rfftfreq(len(signal), 1.0 / rate_hz)
    total = float(power[1:].sum())
    if total <= 0.0:
        return 0.0
    near = np.zeros(len(freqs), dtype=bool)
    for hz in MAINS_HZ:
        near |= np.abs(freqs - hz) <= MAINS_BAND_HZ
    return float(power[near].sum()) / total


def channel_quality(
    samples: NDArray[np.float64], rate_hz: float, value_min: float, value_max: float
) -> list[ChannelQuality]:
    """One :class:`ChannelQuality` per column of ``samples`` (a few seconds is enough)."""
    data = np.asarray(samples, dtype=np.float64)
    if data.ndim != 2 or len(data) == 0:
        raise ValueError(f"expected samples shaped (n, channels), got {data.shape}")
    margin = (value_max - value_min) * RAIL_MARGIN
    at_rail = (data <= value_min + margin) | (data >= value_max - margin)
    out = []
    for ch in range(data.shape[1]):
        std = float(data[:, ch].std())
        rail = float(at_rail[:, ch].mean())
        ratio = mains_ratio(data[:, ch], rate_hz)
        out.append(
            ChannelQuality(
                flat=std < FLAT_STD and rail < SATURATED_FRACTION,
                saturated=rail >= SATURATED_FRACTION,
                clipping=CLIP_FRACTION < rail < SATURATED_FRACTION,
                mains=ratio >= MAINS_RATIO and std >= FLAT_STD,
                std=round(std, 2),
                rail_fraction=round(rail, 4),
                mains_ratio=round(ratio, 3),
            )
        )
    return out


def envelope(samples: NDArray[np.float64], buckets: int) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Min and max of each of ``buckets`` equal slices, ``(buckets, channels)`` each: a downsampled trace
    that still shows every spike and every flat stretch, which plain decimation would hide."""
    n = len(samples)
    if n == 0:
        empty = np.zeros((0, samples.shape[1] if samples.ndim == 2 else 0))
        return empty, empty
    buckets = min(buckets, n)
    edges = np.linspace(0, n, buckets + 1).astype(np.int64)
    return np.minimum.reduceat(samples, edges[:-1], axis=0), np.maximum.reduceat(samples, edges[:-1], axis=0)
