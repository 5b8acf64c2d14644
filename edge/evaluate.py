"""``emotion-edge evaluate``: score a shipped or given model on labelled data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edge.classifier import EmgClassifier
from edge.metrics import classification_report
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
