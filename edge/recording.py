"""Reading EMG recordings from CSV and cutting them into labelled windows."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from edge.dsp import FloatArray, contiguous_segments, sliding_windows

EMG_CHANNELS: tuple[str, ...] = ("EMG1", "EMG2", "EMG3")
# The original puldavid87/emotion_recognition emg_data.csv: unlabelled, 6 x 5000 rows.
SOURCE_LAYOUT_LABELS: tuple[str, ...] = ("happy", "angry", "surprise", "fear", "sad", "disgust")
SOURCE_SEGMENT_LENGTH = 5000


class RecordingError(ValueError):
    """A recording file that cannot be read as EMG."""


class RecordingUnreadable(RecordingError):
    """The file itself cannot be read (missing, a folder, no permission), whatever it would hold."""


@contextmanager
def _csv_rows(path: Path) -> Iterator[Iterator[list[str]]]:
    """CSV rows of ``path``. Failing to open or read the file and finding no text in it are told apart:
    the first is the wrong path, the second the wrong file (an ``.npz`` given as a recording)."""
    try:
        with path.open(newline="") as fh:
            yield csv.reader(fh)
    except OSError as exc:
        raise RecordingUnreadable(f"{path}: cannot read recording: {exc.strerror or exc}") from exc
    except (UnicodeDecodeError, csv.Error) as exc:
        raise RecordingError(f"{path}: not a CSV text file ({exc})") from exc


def _next_header(path: Path, reader: Iterator[list[str]]) -> list[str]:
    header = next(reader, None)
    if header is None:
        raise RecordingError(f"{path}: empty file, expected a header such as sample,EMG1,EMG2,EMG3,label")
    return [h.strip() for h in header]


def read_header(path: str | Path) -> list[str]:
    """The column names of a recording; raises :class:`RecordingError` as :func:`load_recording` does."""
    path = Path(path)
    with _csv_rows(path) as reader:
        return _next_header(path, reader)


@dataclass(frozen=True)
class Recording:
    """Samples in time order. ``labels`` is None for unlabelled recordings."""

    sample_index: NDArray[np.int64]
    signal: FloatArray
    labels: NDArray[np.str_] | None


def load_recording(path: str | Path, source_layout: bool = False) -> Recording:
    """Read ``sample,EMG1,EMG2,EMG3[,label]`` rows, or the source's bare ``EMG1,EMG2,EMG3`` layout.

    With ``source_layout`` the file must hold 6 x 5000 rows in the order of
    :data:`SOURCE_LAYOUT_LABELS`, as the source notebook reads it.
    """
    path = Path(path)
    with _csv_rows(path) as reader:
        header = _next_header(path, reader)
        rows = [r for r in reader if r]
    missing = [c for c in EMG_CHANNELS if c not in header]
    if missing:
        raise RecordingError(f"{path}: missing column(s) {', '.join(missing)}; header is {header}")
    cols = {name: i for i, name in enumerate(header)}
    try:
        signal = np.array([[float(r[cols[c]]) for c in EMG_CHANNELS] for r in rows])
        sample_index = (
            np.array([int(float(r[cols["sample"]])) for r in rows], dtype=np.int64)
            if "sample" in cols and not source_layout
            else np.arange(len(rows), dtype=np.int64)
        )
        labels = np.array([r[cols["label"]].strip() for r in rows]) if "label" in cols else None
    except (ValueError, IndexError, OverflowError) as exc:  # OverflowError: a sample number "inf"
        raise RecordingError(f"{path}: non-numeric or short row: {exc}") from exc
    signal = signal.reshape(-1, len(EMG_CHANNELS))
    if source_layout:
        expected = SOURCE_SEGMENT_LENGTH * len(SOURCE_LAYOUT_LABELS)
        if len(rows) != expected:
            raise RecordingError(f"{path}: source layout needs {expected} rows, found {len(rows)}")
        labels = np.repeat(np.array(SOURCE_LAYOUT_LABELS), SOURCE_SEGMENT_LENGTH)
    return Recording(sample_index, signal, labels)


def labelled_windows(
    recording: Recording, window: int, hop: int
) -> tuple[FloatArray, NDArray[np.str_], NDArray[np.int64]]:
    """All windows that lie inside one gap-free, single-label run.

    Returns windows ``(n, window, channels)``, their labels, and the ``sample`` value at
    which each window starts (for forward-in-time splits).
    """
    if recording.labels is None:
        raise RecordingError("recording has no label column")
    windows: list[FloatArray] = []
    labels: list[str] = []
    starts: list[int] = []
    for seg in contiguous_segments(recording.sample_index, list(recording.labels)):
        w = sliding_windows(recording.signal[seg.start : seg.stop], window, hop)
        windows.append(w)
        labels.extend([seg.label or ""] * len(w))
        starts.extend(int(recording.sample_index[seg.start]) + i * hop for i in range(len(w)))
    if not windows:
        return np.empty((0, window, recording.signal.shape[1])), np.array([]), np.array([], dtype=np.int64)
    return np.concatenate(windows), np.array(labels), np.array(starts, dtype=np.int64)
