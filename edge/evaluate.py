"""``emotion-edge evaluate``: score a shipped or given model on labelled data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edge.classifier import EmgClassifier
from edge.metrics import classification_report
from edge.model_card import CardError
from edge.recording import RecordingError, labelled_windows, load_recording


def evaluate_emg(
    data: Path, model: Path, hop: int | None = None, source_layout: bool = False
) -> dict[str, Any]:
    """Non-overlapping windows by default (hop = the model's window), never across a gap or label change."""
    clf = EmgClassifier(model)
    rec = load_recording(data, source_layout=source_layout)
    windows, labels, _ = labelled_windows(rec, clf.window, hop or clf.window)
    unknown = sorted(set(labels.tolist()) - set(clf.labels))
    if unknown:
        raise RecordingError(f"{data}: labels {unknown} are not among the model's {clf.labels}")
    if len(windows) == 0:
        raise RecordingError(f"{data}: no complete {clf.window}-sample window in the recording")
    y_true = np.array([clf.labels.index(v) for v in labels])
    y_pred = clf.predict_proba(windows).argmax(axis=1)
    report = classification_report(y_true, y_pred, clf.labels)
    report["n_windows"] = report["n"]
    report.update(
        model=str(model),
        model_sha256=clf.model.card.model_sha256,
        window=clf.window,
        hop=hop or clf.window,
        runtime=clf.model.runtime_module,
    )
    return report


def evaluate_face(data: Path, model: Path, usage: int | None = None) -> dict[str, Any]:
    """Score on pre-cropped 48x48 faces: ``pixels`` (N,48,48) uint8, ``labels`` (N,) in FER2013 order.

    ``usage`` keeps only rows with that value in an optional ``usage`` array (0 Training,
    1 PublicTest in the project's fer2013.npz).
    """
    from edge.face import FER2013_LABELS, FaceClassifier

    clf = FaceClassifier(model)
    try:
        with np.load(data) as npz:
            pixels, labels = np.asarray(npz["pixels"]), np.asarray(npz["labels"]).astype(np.int64)
            if usage is not None:
                if "usage" not in npz:
                    raise RecordingError(f"{data}: --usage given, but the file has no 'usage' array")
                keep = np.asarray(npz["usage"]) == usage
                pixels, labels = pixels[keep], labels[keep]
    except (OSError, KeyError, ValueError) as exc:
        raise RecordingError(
            f"{data}: needs arrays 'pixels' (N,48,48) uint8 and 'labels' (N,): {exc}"
        ) from exc
    if pixels.ndim != 3 or len(pixels) != len(labels):
        raise RecordingError(f"{data}: pixels must be (N,H,W) with one label each, got {pixels.shape}")
    if pixels.dtype != np.uint8:
        # Accept other numeric types holding 0..255 values, but not 0..1 floats: those would be scored
        # as near-black images without any error.
        if not np.issubdtype(pixels.dtype, np.number) or (
            pixels.size and (pixels.min() < 0 or pixels.max() > 255 or pixels.max() <= 1.0)
        ):
            raise RecordingError(f"{data}: pixels must be grey levels 0..255 (uint8), got {pixels.dtype}")
        pixels = np.clip(np.rint(pixels), 0, 255).astype(np.uint8)
    if pixels.shape[1:] != (clf.size, clf.size):
        import cv2

        pixels = np.stack([cv2.resize(p, (clf.size, clf.size), interpolation=cv2.INTER_AREA) for p in pixels])
    if labels.min(initial=0) < 0 or labels.max(initial=0) >= len(FER2013_LABELS):
        raise RecordingError(f"{data}: labels must be 0..6 in FER2013 order {FER2013_LABELS}")
    # Map FER2013 indices onto the model's own label order.
    missing = [name for name in FER2013_LABELS if name not in clf.labels]
    if missing:
        raise CardError(f"{model}: the model has no {missing} output; FER2013 needs {list(FER2013_LABELS)}")
    to_model = np.array([clf.labels.index(name) for name in FER2013_LABELS])
    y_true = to_model[labels]
    y_pred = (
        np.concatenate(
            [clf.predict_proba(pixels[i : i + 512]).argmax(axis=1) for i in range(0, len(pixels), 512)]
        )
        if len(pixels)
        else np.array([], dtype=np.int64)
    )
    report = classification_report(y_true, y_pred, clf.labels)
    report.update(
        model=str(model), model_sha256=clf.model.card.model_sha256, runtime=clf.model.runtime_module
    )
    return report
