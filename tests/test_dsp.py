from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge.emg.dsp import (
    TD_CHANNEL_FEATURES,
    FeatureSpec,
    FloatArray,
    RingWindower,
    contiguous_segments,
    sliding_windows,
    td_features,
)
from edge.recording import load_recording


def _stream(signal: np.ndarray, window: int, hop: int, chunk_sizes: list[int]) -> np.ndarray:
    ring = RingWindower(window, hop, signal.shape[1])
    out: list[FloatArray] = []
    pos = 0
    i = 0
    while pos < len(signal):
        n = chunk_sizes[i % len(chunk_sizes)]
        out.extend(ring.push(signal[pos : pos + n]))
        pos += n
        i += 1
    return np.stack(out) if out else np.empty((0, window, signal.shape[1]))


@pytest.mark.parametrize(("window", "hop"), [(100, 100), (100, 20), (100, 1), (50, 130), (7, 3)])
@pytest.mark.parametrize("chunks", [[1], [3, 250, 17], [1000], [99, 1, 100]])
def test_streaming_windows_equal_offline(emg_csv: Path, window: int, hop: int, chunks: list[int]) -> None:
    signal = load_recording(emg_csv).signal[:3000]
    offline = sliding_windows(signal, window, hop)
    streamed = _stream(signal, window, hop, chunks)
    assert streamed.shape == offline.shape
    np.testing.assert_array_equal(streamed, offline)


def test_streaming_features_equal_offline(emg_csv: Path) -> None:
    rec = load_recording(emg_csv)
    spec = FeatureSpec("td", 100, 100, 3, 0.0, (), ()).fitted(sliding_windows(rec.signal, 100, 20))
    offline = spec.transform(sliding_windows(rec.signal[:5000], 100, 100))
    streamed = spec.transform(_stream(rec.signal[:5000], 100, 100, [37, 1, 512]))
    np.testing.assert_array_equal(streamed, offline)


def test_reset_drops_partial_window() -> None:
    ring = RingWindower(4, 4, 1)
    assert list(ring.push(np.arange(3.0))) == []
    ring.reset()
    (w,) = list(ring.push(np.arange(10.0, 14.0)))
    np.testing.assert_array_equal(w[:, 0], [10, 11, 12, 13])


def test_segments_split_on_gap_and_label() -> None:
    idx = np.array([0, 1, 2, 5, 6, 7, 8])
    labels = ["a", "a", "a", "a", "b", "b", "b"]
    segs = contiguous_segments(idx, labels)
    assert [(s.start, s.stop, s.label) for s in segs] == [(0, 3, "a"), (3, 4, "a"), (4, 7, "b")]


def test_sliding_windows_shape_and_trailing_partial() -> None:
    x = np.arange(30.0).reshape(10, 3)
    w = sliding_windows(x, 4, 3)
    assert w.shape == (3, 4, 3)
    np.testing.assert_array_equal(w[1, :, 0], [9, 12, 15, 18])
    assert sliding_windows(x, 11, 1).shape == (0, 11, 3)
    with pytest.raises(ValueError):
        sliding_windows(x, 0, 1)


def test_td_features_on_known_signals() -> None:
    t = np.arange(100)
    square = np.where((t // 10) % 2 == 0, 100.0, -100.0) + 500
    flat = np.full(100, 300.0)
    windows = np.stack([square, flat], axis=1)[None]
    f = td_features(windows).reshape(2, len(TD_CHANNEL_FEATURES))
    names = list(TD_CHANNEL_FEATURES)
    assert f[0, names.index("mean")] == pytest.approx(500.0)
    assert f[0, names.index("zc")] == pytest.approx(9 / 99)
    assert f[1, names.index("zc")] == 0
    assert f[1, names.index("log_std")] == 0
    assert f[1, names.index("p50")] == 300


def test_feature_spec_normalisation_is_fitted_on_train_only(emg_csv: Path) -> None:
    rec = load_recording(emg_csv)
    train = sliding_windows(rec.signal[:2000], 100, 100)
    spec = FeatureSpec("td", 100, 100, 3, 0.0, (), ()).fitted(train)
    z = spec.transform(train)
    np.testing.assert_allclose(z.mean(axis=0), 0, atol=1e-9)
    with pytest.raises(ValueError, match="shape"):
        spec.transform(np.zeros((1, 50, 3)))
