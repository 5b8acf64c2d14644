"""``emotion-edge evaluate``: score a shipped or given model on labelled data."""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from edge.emg.classifier import EmgClassifier
from edge.metrics import classification_report
from edge.model_card import CardError, ModelCard, sha256_file
from edge.recording import RecordingError, RecordingUnreadable, labelled_windows, load_recording

# The ``usage`` values of the project's fer2013.npz: FER2013's own split. training/face.py fits on
# Training only and selects on PublicTest; PrivateTest is not in the file.
FER2013_USAGE = {0: "Training", 1: "PublicTest", 2: "PrivateTest"}
TRAINING_USAGE = 0
# Without --usage, rows the model was not fitted on: the split the face card reports its metrics on.
DEFAULT_USAGE = 1

Usage = int | Literal["all"]


def is_training_file(data: Path, card: ModelCard) -> bool:
    """Whether ``data`` is, byte for byte, a file the card says the model was fitted on."""
    if not card.training_data:
        return False
    digest = sha256_file(data)
    return any(ref.sha256 == digest for ref in card.training_data)


def evaluate_emg(
    data: Path, model: Path, hop: int | None = None, source_layout: bool = False
) -> dict[str, Any]:
    """One window per prediction the daemon would make (hop = the card's hop) by default, never
    across a gap or label change. A model may read more samples than its hop (a longer look-back),
    so consecutive windows can overlap; ``hop=clf.window`` scores non-overlapping ones."""
    clf = EmgClassifier(model)
    hop = hop or clf.spec.hop
    rec = load_recording(data, source_layout=source_layout)
    windows, labels, _ = labelled_windows(rec, clf.window, hop)
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
        hop=hop,
        runtime=clf.model.runtime_module,
        training_data=is_training_file(data, clf.model.card),
    )
    return report


def _load_faces(data: Path) -> tuple[NDArray[Any], NDArray[np.int64], NDArray[Any] | None]:
    """``pixels``, ``labels`` and, if the file has one, the ``usage`` array of an npz."""
    try:
        fh = data.open("rb")
    except OSError as exc:
        raise RecordingUnreadable(f"{data}: cannot read: {exc.strerror or exc}") from exc
    needs = "needs arrays 'pixels' (N,48,48) uint8 and 'labels' (N,)"
    with fh:
        try:
            loaded = np.load(fh)
            if isinstance(loaded, np.lib.npyio.NpzFile):
                with loaded as npz:
                    return (
                        np.asarray(npz["pixels"]),
                        np.asarray(npz["labels"]).astype(np.int64),
                        np.asarray(npz["usage"]) if "usage" in npz else None,
                    )
        except (OSError, EOFError, KeyError, ValueError, zipfile.BadZipFile) as exc:
            raise RecordingError(f"{data}: {needs}: {exc}") from exc
    raise RecordingError(f"{data}: a single array, not an .npz archive; {needs}")


def _select_rows(
    data: Path, usage: Usage | None, usage_values: NDArray[Any] | None, n: int
) -> tuple[Usage, NDArray[np.bool_]]:
    """The usage applied (None: the default for this file) and the rows it keeps."""
    if usage is None:
        usage = DEFAULT_USAGE if usage_values is not None else "all"
    if usage == "all":
        return usage, np.ones(n, dtype=bool)
    if usage_values is None:
        raise RecordingError(f"{data}: --usage given, but the file has no 'usage' array")
    if len(usage_values) != n:
        raise RecordingError(f"{data}: 'usage' has {len(usage_values)} rows, 'labels' {n}")
    keep = usage_values == usage
    if not keep.any():
        present = ", ".join(map(str, np.unique(usage_values)))
        raise RecordingError(f"{data}: no rows with usage {usage} (the file has usage {present or 'none'})")
    return usage, keep


def evaluate_face(data: Path, model: Path, usage: Usage | None = None) -> dict[str, Any]:
    """Score on pre-cropped 48x48 faces: ``pixels`` (N,48,48) uint8, ``labels`` (N,) in FER2013 order.

    An optional ``usage`` array selects rows (see :data:`FER2013_USAGE`): ``usage`` keeps rows with that
    value, ``"all"`` keeps every row, and None means :data:`DEFAULT_USAGE` when the file has the array.
    The report says which (``"usage"``) and whether the rows include the model's own training data.
    """
    from edge.face.classifier import FER2013_LABELS, FaceClassifier

    clf = FaceClassifier(model)
    pixels, labels, usage_values = _load_faces(data)
    if pixels.ndim != 3 or len(pixels) != len(labels):
        raise RecordingError(f"{data}: pixels must be (N,H,W) with one label each, got {pixels.shape}")
    usage, keep = _select_rows(data, usage, usage_values, len(labels))
    pixels, labels = pixels[keep], labels[keep]
    if len(labels) == 0:
        raise RecordingError(f"{data}: no rows to score")
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
    y_pred = np.concatenate(
        [clf.predict_proba(pixels[i : i + 512]).argmax(axis=1) for i in range(0, len(pixels), 512)]
    )
    report = classification_report(y_true, y_pred, clf.labels)
    # Only the Training rows of the training file were fitted on; without a usage array, any row may be one.
    fitted = usage_values is None or bool((usage_values[keep] == TRAINING_USAGE).any())
    report.update(
        model=str(model),
        model_sha256=clf.model.card.model_sha256,
        runtime=clf.model.runtime_module,
        usage=usage,
        training_data=fitted and is_training_file(data, clf.model.card),
    )
    return report
