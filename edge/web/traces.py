"""The last few seconds of raw EMG, kept only while someone watches, as downsampled traces + quality."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from numpy.typing import NDArray

from edge.emg.quality import channel_quality, envelope
from edge.sources.chunk import SampleChunk

TRACE_SECONDS = 4.0
TRACE_POINTS = 200  # min/max pairs per channel: about one per pixel column of the page's plot
# Without new samples for this long the traces are marked stale (EMG paused, cable out, replay ended).
STALE_S = 1.0
# Quality needs seconds of signal and changes slowly: recomputed this often, not on every snapshot.
QUALITY_EVERY_S = 1.0


class EmgTraces:
    def __init__(self, rate_hz: float, value_min: float, value_max: float) -> None:
        self.rate_hz = rate_hz
        self.value_min = value_min
        self.value_max = value_max
        self.capacity = max(1, int(rate_hz * TRACE_SECONDS))
        self._buf: NDArray[np.float64] | None = None
        self._filled = 0
        self._last_at = 0.0
        self._quality: list[dict[str, object]] = []
        self._quality_at = -float("inf")
        # Off while nobody watches: push() is then a single test on the sample path.
        self.active = False

    def clear(self) -> None:
        self._filled = 0
        self._quality_at = -float("inf")

    def push(self, chunk: SampleChunk) -> None:
        if not self.active:
            return
        rows = chunk.samples
        if self._buf is None or self._buf.shape[1] != rows.shape[1]:
            self._buf = np.zeros((self.capacity, rows.shape[1]))
            self._filled = 0
        rows = rows[-self.capacity :]
        # A shift per chunk (tens of rows into 4,000): simpler than a ring, and as cheap at this size.
        keep = min(self._filled, self.capacity - len(rows))
        self._buf[:keep] = self._buf[self._filled - keep : self._filled]
        self._buf[keep : keep + len(rows)] = rows
        self._filled = keep + len(rows)
        self._last_at = time.monotonic()

    def snapshot(self) -> dict[str, Any] | None:
        """Downsampled traces and a quality per channel; None before two samples arrived."""
        if self._buf is None or self._filled < 2:
            return None  # quality needs two samples at least (a 1-sample chunk after a gap)
        data = self._buf[: self._filled]
        lo, hi = envelope(data, TRACE_POINTS)
        now = time.monotonic()
        if now - self._quality_at >= QUALITY_EVERY_S or len(self._quality) != data.shape[1]:
            self._quality_at = now
            quality = channel_quality(data, self.rate_hz, (self.value_min, self.value_max))
            self._quality = [q.as_dict() for q in quality]
        return {
            "seconds": round(self._filled / self.rate_hz, 2),
            "span": TRACE_SECONDS,
            "range": [self.value_min, self.value_max],
            "stale": now - self._last_at > STALE_S,
            "channels": [
                {"min": lo[:, ch].round(1).tolist(), "max": hi[:, ch].round(1).tolist(), **q}
                for ch, q in enumerate(self._quality)
            ],
        }
