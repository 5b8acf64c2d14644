"""Calibrate a personal EMG model from a saved, labelled recording (``calibrate --from-recording``).

The recording is the ordinary ``sample,EMG1,EMG2,EMG3,label`` CSV with an optional ``rep`` column,
the repetition index of each row. Without it, every contiguous run of one label is one repetition
(the first run of "happy" is its repetition 0, the next run of "happy" its repetition 1, ...).

1. Windows exactly as the shipped model's were made (``training/emg.py``): 100 samples, training
   windows every 20 samples, never across a gap, a label change or a repetition change.
2. TD features from :mod:`edge.emg.dsp`, the code serving runs.
3. Leave-one-repetition-out: for each repetition index ``r``, the normalisation and the classifier
   are fitted on every other repetition and the non-overlapping windows of ``r`` (hop = window, as
   ``emotion-edge evaluate`` scores) are predicted by the int8 model that fit exports; the pooled
   predictions give the accuracy, macro-F1 and confusion. The float model's scores come alongside.
4. The final model is fitted on every window, exported as a full-int8 ``.tflite``
   (:mod:`edge.calibration.tflite_writer`) with its card, and loaded back through
   :class:`edge.emg.classifier.EmgClassifier` as the runtime would load it.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from edge.atomic import atomic_write
from edge.calibration import DEFAULT_NAME
from edge.calibration.fit import IntArray, LinearSoftmax, fit_linear, float_predictor, leave_one_group_out
from edge.calibration.tflite_writer import QuantizedLinear, write_linear_softmax
from edge.classifier import quantize
from edge.emg.dsp import (
    DEFAULT_ZC_THRESHOLD,
    TD_CHANNEL_FEATURES,
    FeatureSet,
    FeatureSpec,
    FloatArray,
    contiguous_segments,
    sliding_windows,
)
from edge.model_card import (
    DataRef,
    EmgPreprocessing,
    ModelCard,
    card_path_for,
    sha256_file,
)
from edge.recording import EMG_CHANNELS, Recording, RecordingError, load_recording, read_header

# The shipped model's conventions (models/emg/emg.card.json, training/emg.py): the runtime cannot
# import training/, so they are repeated here and tests/test_calibration_offline.py checks they agree.
CHANNEL_NAMES: tuple[str, ...] = ("corrugator", "zygomaticus", "depressor")
WINDOW = 100
TRAIN_HOP = 20
SMOOTHING_SIGMA = 0.0
FEATURE_KIND: FeatureSet = "td"
REP_COLUMN = "rep"
MIN_REPETITIONS = 2
ARCHITECTURE = "TD features + class-balanced softmax regression (edge.calibration, numpy/scipy)"
PROTOCOL = (
    "leave-one-repetition-out: for each repetition index, normalisation and classifier fitted on all "
    f"other repetitions ({WINDOW}-sample windows, hop {TRAIN_HOP}), scored on the held-out repetition's "
    f"non-overlapping windows (hop {WINDOW}) with the exported int8 model; predictions pooled over folds"
)


class CalibrationDataError(RecordingError):
    """A recording that cannot calibrate a model (too few repetitions, labels, windows)."""


def feature_spec() -> FeatureSpec:
    """The unfitted feature pipeline: the shipped card's kind, window and deadband."""
    return FeatureSpec(
        FEATURE_KIND, WINDOW, WINDOW, len(EMG_CHANNELS), SMOOTHING_SIGMA, (), (), DEFAULT_ZC_THRESHOLD
    )


def feature_names() -> list[str]:
    return [f"{ch}.{f}" for ch in CHANNEL_NAMES for f in TD_CHANNEL_FEATURES]


def read_repetitions(path: Path, n_rows: int) -> NDArray[np.int64] | None:
    """The ``rep`` column as integers, one per data row (blank lines skipped as the recording reader
    skips them), or None when the file has no such column."""
    header = read_header(path)
    if REP_COLUMN not in header:
        return None
    col = header.index(REP_COLUMN)
    with path.open(newline="") as fh:
        fh.readline()
        lines = [line for line in fh if line.strip()]
    try:
        values = np.loadtxt(lines, delimiter=",", usecols=[col], dtype=np.float64, comments=None, ndmin=1)
    except ValueError as exc:
        raise RecordingError(f"{path}: the '{REP_COLUMN}' column must hold integers: {exc}") from exc
    if len(values) != n_rows:
        raise RecordingError(f"{path}: '{REP_COLUMN}' has {len(values)} values for {n_rows} rows")
    if not np.isfinite(values).all() or (values != np.round(values)).any():
        raise RecordingError(f"{path}: the '{REP_COLUMN}' column must hold integers")
    return values.astype(np.int64)


def runs_as_repetitions(labels: NDArray[np.str_]) -> NDArray[np.int64]:
    """Without a ``rep`` column: the k-th contiguous run of a label is its repetition k."""
    reps = np.empty(len(labels), dtype=np.int64)
    if len(labels) == 0:
        return reps
    starts = [0, *(np.flatnonzero(labels[1:] != labels[:-1]) + 1).tolist(), len(labels)]
    seen: dict[str, int] = {}
    for a, b in pairwise(starts):
        lab = str(labels[a])
        reps[a:b] = seen.get(lab, 0)
        seen[lab] = seen.get(lab, 0) + 1
    return reps


@dataclass(frozen=True)
class SessionWindows:
    """Every training window of a session with its class, repetition and whether it is scored."""

    windows: FloatArray  # (n, WINDOW, channels)
    y: IntArray
    reps: IntArray
    scored: NDArray[np.bool_]  # on the non-overlapping (hop = window) grid of its run
    labels: list[str]

    def repetitions(self) -> dict[str, list[int]]:
        return {
            lab: sorted({int(r) for r in np.unique(self.reps[self.y == k])})
            for k, lab in enumerate(self.labels)
        }


def session_windows(recording: Recording, reps: NDArray[np.int64] | None, source: str) -> SessionWindows:
    if recording.labels is None:
        raise CalibrationDataError(f"{source}: the recording has no 'label' column")
    labels_per_row = recording.labels
    how = f"a '{REP_COLUMN}' column" if reps is not None else "contiguous runs of one label"
    if (np.char.str_len(labels_per_row) == 0).any():
        raise CalibrationDataError(f"{source}: some rows have an empty label")
    if reps is None:
        reps = runs_as_repetitions(labels_per_row)
    # One key per (label, repetition): windows never span a change of either, nor a gap in `sample`.
    keys = np.char.add(np.char.add(labels_per_row, "\x1f"), reps.astype(str))
    labels = list(dict.fromkeys(labels_per_row.tolist()))
    index = {lab: k for k, lab in enumerate(labels)}
    parts: list[FloatArray] = []
    ys: list[int] = []
    rs: list[int] = []
    scored: list[NDArray[np.bool_]] = []
    for seg in contiguous_segments(recording.sample_index, list(keys)):
        w = sliding_windows(recording.signal[seg.start : seg.stop], WINDOW, TRAIN_HOP)
        if len(w) == 0:
            continue
        parts.append(w)
        ys.extend([index[str(labels_per_row[seg.start])]] * len(w))
        rs.extend([int(reps[seg.start])] * len(w))
        scored.append(np.arange(len(w)) * TRAIN_HOP % WINDOW == 0)
    if not parts:
        raise CalibrationDataError(f"{source}: no run of one label holds a complete {WINDOW}-sample window")
    sw = SessionWindows(
        np.concatenate(parts),
        np.array(ys, dtype=np.int64),
        np.array(rs, dtype=np.int64),
        np.concatenate(scored),
        labels,
    )
    if len(labels) < 2:
        raise CalibrationDataError(
            f"{source}: only one label ({labels[0]!r}); a classifier needs two or more"
        )
    for lab, have in sw.repetitions().items():
        if len(have) < MIN_REPETITIONS:
            raise CalibrationDataError(
                f"{source}: label {lab!r} has {len(have)} repetition(s) with a complete {WINDOW}-sample "
                f"window (repetitions are {how}); leave-one-repetition-out needs at least "
                f"{MIN_REPETITIONS} per label: record it again"
            )
    return sw


def _interpreter_for(tflite: bytes) -> Any:
    from edge.interpreter import interpreter_class, without_delegate_notice

    cls, _ = interpreter_class()
    with without_delegate_notice():
        interp = cls(model_content=tflite, num_threads=1)
        interp.allocate_tensors()
    return interp


def int8_predict(tflite: bytes, q: QuantizedLinear, x: FloatArray) -> NDArray[np.int8]:
    """Run normalised feature rows through the int8 model in one batch (same kernels as batch 1)."""
    interp = _interpreter_for(tflite)
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    interp.resize_tensor_input(inp["index"], [len(x), x.shape[1]])
    interp.allocate_tensors()
    interp.set_tensor(inp["index"], quantize(x, q.input_q))
    interp.invoke()
    result: NDArray[np.int8] = interp.get_tensor(out["index"]).copy()
    return result


def int8_predictor(model: LinearSoftmax, train: FloatArray, test: FloatArray) -> IntArray:
    """What the exported model predicts: quantised on (calibrated with) the fold's training rows."""
    tflite, q = write_linear_softmax(model.weights, model.bias, model.norm.apply(train))
    predicted: IntArray = int8_predict(tflite, q, model.norm.apply(test)).argmax(axis=1).astype(np.int64)
    return predicted


@dataclass(frozen=True)
class CalibrationResult:
    report: dict[str, Any]  # what `calibrate --json` prints
    model: LinearSoftmax  # the exported model, in float
    quantized: QuantizedLinear
    features: FloatArray  # raw (unnormalised) features of every training window
    session: SessionWindows


def calibrate_recording(
    data: str | Path,
    out_dir: str | Path,
    name: str = DEFAULT_NAME,
    sample_rate_hz: float | None = None,
    command: str = "",
    log: Callable[[str], None] | None = None,
) -> CalibrationResult:
    """The whole offline flow; raises :class:`RecordingError` (or its subclasses) for bad data."""
    t0 = time.perf_counter()
    data, out_dir = Path(data), Path(out_dir)
    recording = load_recording(data)
    reps = read_repetitions(data, len(recording.sample_index))
    sw = session_windows(recording, reps, str(data))
    spec = feature_spec()
    feats = spec.raw_features(sw.windows)
    t_features = time.perf_counter()

    validation = leave_one_group_out(
        feats,
        sw.y,
        sw.reps,
        sw.labels,
        test_mask=sw.scored,
        predictors={"int8": int8_predictor, "float": float_predictor},
    )
    t_validation = time.perf_counter()
    int8_v, float_v = validation["int8"], validation["float"]
    if log:
        log(
            f"leave-one-repetition-out: int8 accuracy {int8_v['accuracy']:.3f}, "
            f"float {float_v['accuracy']:.3f}"
        )

    model = fit_linear(feats, sw.y, len(sw.labels))
    tflite, q = write_linear_softmax(model.weights, model.bias, model.norm.apply(feats), description=name)
    out_dir.mkdir(parents=True, exist_ok=True)
    model_path = out_dir / f"{name}.tflite"
    card_path = card_path_for(model_path)
    repetitions = sw.repetitions()
    metrics = {
        "protocol": PROTOCOL,
        "architecture": ARCHITECTURE,
        "accuracy": int8_v["accuracy"],
        "macro_f1": int8_v["macro_f1"],
        "confusion": int8_v["confusion"],
        "n_test_windows": int8_v["n"],
        "folds": int8_v["folds"],
        "float": {k: float_v[k] for k in ("accuracy", "macro_f1", "confusion", "folds")},
        "repetitions_per_label": {lab: len(r) for lab, r in repetitions.items()},
    }
    card = ModelCard(
        name=name,
        modality="emg",
        model_file=model_path.name,
        model_sha256=_sha256_bytes(tflite),
        labels=sw.labels,
        channels=list(CHANNEL_NAMES),
        window=WINDOW,
        hop=WINDOW,
        sample_rate_hz=sample_rate_hz,
        preprocessing=EmgPreprocessing(
            kind=FEATURE_KIND,
            smoothing_sigma=SMOOTHING_SIGMA,
            zc_threshold=spec.zc_threshold,
            feature_names=feature_names(),
            offset=[float(v) for v in model.norm.offset],
            scale=[float(v) for v in model.norm.scale],
        ),
        input_quantization=q.input_q,
        output_quantization=q.output_q,
        metrics=metrics,
        training_data=[DataRef(name=data.name, sha256=sha256_file(data))],
        training={
            "kind": "personal calibration",
            "session_date": dt.datetime.now(dt.UTC).date().isoformat(),
            "repetitions": repetitions,
            "train_hop": TRAIN_HOP,
            "n_train_windows": len(sw.y),
            "regularisation_C": 1.0,
            "class_weight": "balanced",
            "command": command,
        },
    )
    atomic_write(model_path, tflite)
    atomic_write(card_path, (json.dumps(card.model_dump(mode="json"), indent=2) + "\n").encode())

    # Load the pair as the daemon would: refuses anything it would refuse.
    from edge.emg.classifier import EmgClassifier

    clf = EmgClassifier(model_path)
    scored = sw.windows[sw.scored]
    runtime_pred = clf.predict_proba(scored).argmax(axis=1)
    agreement = float((runtime_pred == model.predict(feats[sw.scored])).mean())
    t_end = time.perf_counter()

    report: dict[str, Any] = {
        "accuracy": int8_v["accuracy"],
        "macro_f1": int8_v["macro_f1"],
        "labels": sw.labels,
        "confusion": int8_v["confusion"],
        "protocol": "leave-one-repetition-out",
        "float_accuracy": float_v["accuracy"],
        "float_macro_f1": float_v["macro_f1"],
        "folds": int8_v["folds"],
        "repetitions": repetitions,
        "n_train_windows": len(sw.y),
        "n_test_windows": int8_v["n"],
        "model": str(model_path),
        "card": str(card_path),
        "model_sha256": card.model_sha256,
        "runtime": clf.model.runtime_module,
        "float_int8_agreement_on_session": agreement,
        "seconds": {
            "features": round(t_features - t0, 3),
            "validation": round(t_validation - t_features, 3),
            "export": round(t_end - t_validation, 3),
            "total": round(t_end - t0, 3),
        },
    }
    return CalibrationResult(report, model, q, feats, sw)


def _sha256_bytes(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()
