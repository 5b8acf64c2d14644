"""Reading EMG recordings from CSV and cutting them into labelled windows."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import TextIO

import numpy as np
from numpy.typing import NDArray

from edge.emg.dsp import FloatArray, contiguous_segments, sliding_windows

EMG_CHANNELS: tuple[str, ...] = ("EMG1", "EMG2", "EMG3")
# The original puldavid87/emotion_recognition emg_data.csv: unlabelled, 6 x 5000 rows.
SOURCE_LAYOUT_LABELS: tuple[str, ...] = ("happy", "angry", "surprise", "fear", "sad", "disgust")
SOURCE_SEGMENT_LENGTH = 5000


class RecordingError(ValueError):
    """A recording file that cannot be read as EMG."""


class RecordingUnreadable(RecordingError):
    """The file itself cannot be read (missing, a folder, no permission), whatever it would hold."""


@contextmanager
def _open_text(path: Path) -> Iterator[TextIO]:
    """``path`` opened as text. Failing to open or read the file and finding no text in it are told
    apart: the first is the wrong path, the second the wrong file (an ``.npz`` given as a recording)."""
    try:
        with path.open(newline="") as fh:
            yield fh
    except OSError as exc:
        raise RecordingUnreadable(f"{path}: cannot read recording: {exc.strerror or exc}") from exc
    except (UnicodeDecodeError, csv.Error) as exc:
        raise RecordingError(f"{path}: not a CSV text file ({exc})") from exc


def _next_header(path: Path, fh: TextIO) -> list[str]:
    line = fh.readline()
    if not line.strip():
        raise RecordingError(f"{path}: empty file, expected a header such as sample,EMG1,EMG2,EMG3,label")
    return [h.strip() for h in next(csv.reader([line]))]


def read_header(path: str | Path) -> list[str]:
    """The column names of a recording; raises :class:`RecordingError` as :func:`load_recording` does."""
    path = Path(path)
    with _open_text(path) as fh:
        return _next_header(path, fh)


@dataclass(frozen=True)
class Recording:
    """Samples in time order. ``labels`` is None for unlabelled recordings."""

    sample_index: NDArray[np.int64]
    signal: FloatArray
    labels: NDArray[np.str_] | None


# Rows parsed per block: a replay's memory stays the same whatever the recording's length.
BLOCK_ROWS = 8192


def iter_recording(
    path: str | Path, source_layout: bool = False, block_rows: int = BLOCK_ROWS
) -> Iterator[Recording]:
    """The rows of ``sample,EMG1,EMG2,EMG3[,label]`` (or the source's bare ``EMG1,EMG2,EMG3``)
    in blocks of at most ``block_rows``, parsed by numpy's C reader (``np.loadtxt``).

    With ``source_layout`` the file must hold 6 x 5000 rows in the order of
    :data:`SOURCE_LAYOUT_LABELS`, as the source notebook reads it; that is checked at its end.
    """
    path = Path(path)
    with _open_text(path) as fh:
        header = _next_header(path, fh)
        missing = [c for c in EMG_CHANNELS if c not in header]
        if missing:
            raise RecordingError(f"{path}: missing column(s) {', '.join(missing)}; header is {header}")
        cols = {name: i for i, name in enumerate(header)}
        use_sample = "sample" in cols and not source_layout
        wanted = [
            c for c in ("sample", *EMG_CHANNELS, "label") if c in cols and (c != "sample" or use_sample)
        ]
        dtype = np.dtype([(c, "U64" if c == "label" else "f8") for c in wanted])
        row = 0
        while True:
            lines = [line for line in islice(fh, block_rows) if line.strip()]
            if not lines:
                break
            try:
                table = np.loadtxt(
                    lines,
                    delimiter=",",
                    dtype=dtype,
                    usecols=[cols[c] for c in wanted],
                    comments=None,
                    ndmin=1,
                )
            except ValueError as exc:
                raise RecordingError(f"{path}: non-numeric or short row after data row {row}: {exc}") from exc
            n = len(table)
            if use_sample:
                if not np.isfinite(table["sample"]).all():
                    raise RecordingError(f"{path}: non-finite sample number after data row {row}")
                sample_index = table["sample"].astype(np.int64)
            else:
                sample_index = np.arange(row, row + n, dtype=np.int64)
            signal = np.stack([table[c] for c in EMG_CHANNELS], axis=1)
            labels = _compact(np.char.strip(table["label"])) if "label" in cols else None
            if source_layout:
                labels = np.array(SOURCE_LAYOUT_LABELS)[np.minimum(sample_index // SOURCE_SEGMENT_LENGTH, 5)]
            yield Recording(sample_index, signal, labels)
            row += n
    if source_layout and row != SOURCE_SEGMENT_LENGTH * len(SOURCE_LAYOUT_LABELS):
        expected = SOURCE_SEGMENT_LENGTH * len(SOURCE_LAYOUT_LABELS)
        raise RecordingError(f"{path}: source layout needs {expected} rows, found {row}")


def _compact(labels: NDArray[np.str_]) -> NDArray[np.str_]:
    """Labels parsed as 64-character fields, shrunk to the longest one (4 bytes a character)."""
    longest = int(np.char.str_len(labels).max(initial=1))
    return labels.astype(f"U{max(1, longest)}")


def load_recording(path: str | Path, source_layout: bool = False) -> Recording:
    """The whole recording in memory (evaluation and training; a replay streams it)."""
    blocks = list(iter_recording(path, source_layout))
    if not blocks:
        return Recording(np.empty(0, np.int64), np.empty((0, len(EMG_CHANNELS))), None)
    labels = None
    if blocks[0].labels is not None:
        labels = np.concatenate([b.labels for b in blocks if b.labels is not None])
    return Recording(
        np.concatenate([b.sample_index for b in blocks]), np.concatenate([b.signal for b in blocks]), labels
    )


def check_recording(path: str | Path, source_layout: bool = False) -> None:
    """Read the whole file once, keeping one block at a time: raises what a replay would."""
    for _ in iter_recording(path, source_layout):
        pass


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
