"""Per-channel EMG quality: each badge on the signal it names, and none on the real recording."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge.emg.quality import channel_quality, envelope
from edge.recording import iter_recording

RATE = 1000.0


def signal(seconds: float = 2.0, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return 500.0 + 40.0 * rng.standard_normal(int(seconds * RATE))


def badges(*channels: np.ndarray) -> list[str]:
    return [q.badge for q in channel_quality(np.stack(channels, axis=1), RATE, (0.0, 4095.0))]


def test_each_problem_gets_its_badge() -> None:
    t = np.arange(int(2 * RATE)) / RATE
    clean = signal()
    flat = np.full_like(clean, 812.0)
    saturated = np.where(np.arange(len(clean)) % 10 < 8, 4095.0, clean)
    clipping = clean.copy()
    clipping[::200] = 4095.0
    hum = clean + 300.0 * np.sin(2 * np.pi * 50.0 * t)
    hum60 = clean + 300.0 * np.sin(2 * np.pi * 60.0 * t)
    assert badges(clean, flat, saturated, clipping, hum, hum60) == [
        "ok",
        "flat",
        "saturated",
        "clipping",
        "mains",
        "mains",
    ]


def test_the_real_recording_is_clean(emg_csv: Path) -> None:
    block = next(iter_recording(emg_csv, block_rows=int(4 * RATE)))
    samples = np.asarray(block.signal, dtype=np.float64)
    assert badges(*samples.T) == ["ok", "ok", "ok"]


def test_envelope_keeps_spikes() -> None:
    data = np.zeros((1000, 2))
    data[503, 1] = 99.0
    lo, hi = envelope(data, 100)
    assert lo.shape == hi.shape == (100, 2)
    assert hi[:, 1].max() == 99.0 and hi[:, 0].max() == 0.0


def test_traces_need_two_samples_before_a_snapshot() -> None:
    from edge.sources.chunk import SampleChunk
    from edge.web.traces import EmgTraces

    traces = EmgTraces(RATE, 0.0, 1023.0)
    traces.active = True
    traces.push(SampleChunk(np.full((1, 3), 500.0), 0, 0.0))  # a 1-sample chunk after a gap
    assert traces.snapshot() is None
    traces.push(SampleChunk(np.full((1, 3), 501.0), 1, 0.001))
    snap = traces.snapshot()
    assert snap is not None and len(snap["channels"]) == 3
