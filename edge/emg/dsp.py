"""Windowing, smoothing and feature extraction for multi-channel EMG.

This is the single implementation used by training, evaluation and the daemon, so a
model sees exactly the same numbers offline and on the device. Every function works on
a batch of windows shaped ``(n_windows, window, n_channels)``; the streaming
:class:`RingWindower` emits windows that are fed through the very same functions.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property, lru_cache
from itertools import pairwise
from typing import Literal

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]
FeatureSet = Literal["td", "raw_gauss"]

# Per-channel time-domain features, in output order. Level features carry much of the
# signal in this dataset (sensor tone differs per expression); the dynamic ones
# (Hudgins' MAV/WL/ZC/SSC family, Hjorth parameters) describe activation bursts.
TD_CHANNEL_FEATURES: tuple[str, ...] = (
    "mean",
    "log_std",
    "log_wl",
    "zc",
    "ssc",
    "p10",
    "p50",
    "p90",
    "hjorth_mobility",
    "hjorth_complexity",
)
# Default deadband for zero crossings and slope sign changes, in ADC units: it stops
# quantisation noise on a quiet channel from counting as activity.
DEFAULT_ZC_THRESHOLD = 5.0
_EPS = 1e-6


@dataclass(frozen=True)
class Segment:
    """A stretch of consecutive samples with one label, free of gaps."""

    start: int
    stop: int
    label: str | None


def contiguous_segments(
    sample_index: NDArray[np.int64], labels: Sequence[str] | None = None
) -> list[Segment]:
    """Split rows into runs that share a label and have no gap in ``sample_index``.

    A window must never span a discontinuity (a dropped stretch of recording) or a change
    of emotion, so every windowing call goes through these runs.
    """
    n = len(sample_index)
    if n == 0:
        return []
    breaks = np.flatnonzero(np.diff(sample_index) != 1) + 1
    if labels is not None:
        lab = np.asarray(labels)
        breaks = np.union1d(breaks, np.flatnonzero(lab[1:] != lab[:-1]) + 1)
    edges = [0, *breaks.tolist(), n]
    return [Segment(a, b, None if labels is None else str(labels[a])) for a, b in pairwise(edges)]


def sliding_windows(signal: FloatArray, window: int, hop: int) -> FloatArray:
    """Return every full window of ``signal`` (time, channels) as ``(n, window, channels)``.

    A view, not a copy. Windows start at 0, hop, 2*hop, ...; a trailing partial window is
    not emitted, exactly as the streaming form behaves.
    """
    if window <= 0 or hop <= 0:
        raise ValueError(f"window and hop must be positive, got {window} and {hop}")
    if signal.shape[0] < window:
        return np.empty((0, window, signal.shape[1]), dtype=signal.dtype)
    view = np.lib.stride_tricks.sliding_window_view(signal, window, axis=0)
    # sliding_window_view puts the window axis last: (n, channels, window).
    return view[::hop].transpose(0, 2, 1)


def smooth(windows: FloatArray, sigma: float) -> FloatArray:
    """Gaussian-smooth each window along time (the source notebook's ``sigma=5`` filter)."""
    if sigma <= 0:
        return windows
    # Imported here: scipy.ndimage costs ~0.2 s and ~10 MB at start-up, and the shipped
    # model does not smooth.
    from scipy.ndimage import gaussian_filter1d

    smoothed: FloatArray = gaussian_filter1d(windows, sigma=sigma, axis=1, mode="reflect")
    return smoothed


def td_features(windows: FloatArray, zc_threshold: float = DEFAULT_ZC_THRESHOLD) -> FloatArray:
    """Time-domain features per channel: ``(n, window, c)`` -> ``(n, c * len(TD_CHANNEL_FEATURES))``.

    Written with sums and one sort rather than ``np.std``/``np.percentile``: this runs once
    per window on the device and those generic routines cost several times more.
    """
    x = np.asarray(windows, dtype=np.float64)
    n, t, c = x.shape
    # Plain sums and slices: np.mean, np.diff and np.stack are Python-level wrappers whose
    # overhead outweighs the arithmetic on a 100-sample window.
    mean = x.sum(axis=1) / t
    centred = x - mean[:, None, :]
    std = np.sqrt(np.einsum("ntc,ntc->nc", centred, centred) / t)
    d1 = x[:, 1:] - x[:, :-1]
    d2 = d1[:, 1:] - d1[:, :-1]
    wl = np.abs(d1).sum(axis=1) / (t - 1)
    d1_std = _std(d1)
    d2_std = _std(d2)
    # Signs of the level (for zero crossings) and of the slope (for slope sign changes),
    # side by side so one pass counts both; the slope series is one shorter, padded with
    # 0, which the counter skips.
    signs = np.zeros((n, t, 2 * c), dtype=np.int8)
    signs[:, :, :c] = (centred > zc_threshold).astype(np.int8) - (centred < -zc_threshold)
    signs[:, :-1, c:] = (d1 > zc_threshold).astype(np.int8) - (d1 < -zc_threshold)
    changes = _sign_changes(signs) / (t - 1)
    mobility = d1_std / (std + _EPS)
    complexity = (d2_std / (d1_std + _EPS)) / (mobility + _EPS)
    out = np.empty((n, c, len(TD_CHANNEL_FEATURES)))
    out[:, :, 0] = mean
    out[:, :, 1] = np.log1p(std)
    out[:, :, 2] = np.log1p(wl)
    out[:, :, 3] = changes[:, :c]
    out[:, :, 4] = changes[:, c:]
    out[:, :, 5:8] = _percentiles(x, (10.0, 50.0, 90.0)).transpose(0, 2, 1)
    out[:, :, 8] = mobility
    out[:, :, 9] = np.log1p(complexity)
    # Channel-major order: all features of channel 0, then channel 1, ...
    return out.reshape(n, -1)


def _std(x: FloatArray) -> FloatArray:
    t = x.shape[1]
    m = x.sum(axis=1) / t
    std: FloatArray = np.sqrt(np.maximum(np.einsum("ntc,ntc->nc", x, x) / t - m * m, 0.0))
    return std


def _percentiles(x: FloatArray, qs: tuple[float, ...]) -> FloatArray:
    """Linear-interpolated percentiles along time (numpy's default method), ``(n, len(qs), c)``."""
    ordered = np.sort(x, axis=1)
    lo, hi, frac = _percentile_positions(x.shape[1], qs)
    low = ordered[:, lo]
    result: FloatArray = low + frac * (ordered[:, hi] - low)
    return result


@lru_cache(maxsize=8)
def _percentile_positions(
    t: int, qs: tuple[float, ...]
) -> tuple[NDArray[np.intp], NDArray[np.intp], FloatArray]:
    pos = np.asarray(qs) / 100.0 * (t - 1)
    lo = np.floor(pos).astype(np.intp)
    hi = np.minimum(lo + 1, t - 1)
    return lo, hi, (pos - lo)[None, :, None]


def _sign_changes(sign: NDArray[np.int8]) -> FloatArray:
    """Count flips between +1 and -1 along time, skipping samples inside the deadband (0)."""
    n, t, c = sign.shape
    rows_by_series = np.ascontiguousarray(sign.transpose(0, 2, 1)).reshape(n * c, t)
    series, _ = np.nonzero(rows_by_series)
    values = rows_by_series[rows_by_series != 0]
    # Non-zero signs in time order per series; a flip is a change between neighbours.
    flip = (values[1:] != values[:-1]) & (series[1:] == series[:-1])
    counts = np.bincount(series[1:][flip], minlength=n * c)
    return counts.reshape(n, c).astype(np.float64)


def raw_gauss_features(windows: FloatArray, sigma: float, lo: float, hi: float) -> FloatArray:
    """The source notebook's input: smoothed window, global min-max scaled, flattened."""
    scaled = (smooth(np.asarray(windows, dtype=np.float64), sigma) - lo) / (hi - lo)
    return scaled.reshape(scaled.shape[0], -1)


@dataclass(frozen=True)
class FeatureSpec:
    """Everything needed to turn raw windows into model input; stored in the model card."""

    kind: FeatureSet
    window: int
    hop: int
    n_channels: int
    smoothing_sigma: float
    # Standardisation (td) or min-max range (raw_gauss), fitted on training data only.
    offset: tuple[float, ...]
    scale: tuple[float, ...]
    zc_threshold: float = DEFAULT_ZC_THRESHOLD

    def transform(self, windows: FloatArray) -> FloatArray:
        """Raw windows ``(n, window, channels)`` -> normalised model input ``(n, features)``."""
        if windows.ndim != 3 or windows.shape[1:] != (self.window, self.n_channels):
            raise ValueError(
                f"expected windows of shape (n, {self.window}, {self.n_channels}), got {windows.shape}"
            )
        feats = self.raw_features(windows)
        return (feats - self._offset) / self._scale

    @cached_property
    def _offset(self) -> FloatArray:
        return np.asarray(self.offset, dtype=np.float64)

    @cached_property
    def _scale(self) -> FloatArray:
        return np.asarray(self.scale, dtype=np.float64)

    def raw_features(self, windows: FloatArray) -> FloatArray:
        """Features before normalisation."""
        if self.kind == "td":
            smoothed = smooth(np.asarray(windows, dtype=np.float64), self.smoothing_sigma)
            return td_features(smoothed, self.zc_threshold)
        return raw_gauss_features(windows, self.smoothing_sigma, 0.0, 1.0)

    def fitted(self, train_windows: FloatArray) -> FeatureSpec:
        """Return a copy whose normalisation is fitted on ``train_windows`` alone."""
        feats = self.raw_features(train_windows)
        if self.kind == "td":
            offset = feats.mean(axis=0)
            scale = feats.std(axis=0)
            scale = np.where(scale < _EPS, 1.0, scale)
        else:
            # Global min-max over every training value, as the source notebook does.
            lo, hi = float(feats.min()), float(feats.max())
            offset = np.full(feats.shape[1], lo)
            scale = np.full(feats.shape[1], max(hi - lo, _EPS))
        return FeatureSpec(
            kind=self.kind,
            window=self.window,
            hop=self.hop,
            n_channels=self.n_channels,
            smoothing_sigma=self.smoothing_sigma,
            offset=tuple(float(v) for v in offset),
            scale=tuple(float(v) for v in scale),
            zc_threshold=self.zc_threshold,
        )

    @property
    def n_features(self) -> int:
        if self.kind == "td":
            return self.n_channels * len(TD_CHANNEL_FEATURES)
        return self.window * self.n_channels


class RingWindower:
    """Streaming windowing: feed sample chunks of any size, get the same windows as offline.

    The buffer holds at most ``window`` samples. Windows start every ``hop`` samples from
    the first sample after construction or :meth:`reset`, matching :func:`sliding_windows`
    over the concatenated stream.
    """

    def __init__(self, window: int, hop: int, n_channels: int) -> None:
        if window <= 0 or hop <= 0:
            raise ValueError(f"window and hop must be positive, got {window} and {hop}")
        self.window = window
        self.hop = hop
        self.n_channels = n_channels
        self._buf = np.zeros((window, n_channels))
        self._filled = 0
        # Samples still to skip before the next window may start (hop > window case).
        self._skip = 0

    def reset(self) -> None:
        """Forget buffered samples, e.g. after a gap in the stream."""
        self._filled = 0
        self._skip = 0

    def push(self, chunk: FloatArray) -> Iterator[FloatArray]:
        """Append ``chunk`` (samples, channels) and yield each completed window (window, channels)."""
        data = np.asarray(chunk, dtype=np.float64).reshape(-1, self.n_channels)
        pos = 0
        while pos < len(data):
            if self._skip:
                step = min(self._skip, len(data) - pos)
                self._skip -= step
                pos += step
                continue
            take = min(self.window - self._filled, len(data) - pos)
            self._buf[self._filled : self._filled + take] = data[pos : pos + take]
            self._filled += take
            pos += take
            if self._filled == self.window:
                yield self._buf.copy()
                if self.hop < self.window:
                    keep = self.window - self.hop
                    self._buf[:keep] = self._buf[self.hop :]
                    self._filled = keep
                else:
                    self._filled = 0
                    self._skip = self.hop - self.window
