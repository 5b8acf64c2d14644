"""Classification metrics with numpy only, so evaluation runs on the runtime install."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray


def confusion_matrix(y_true: NDArray[np.int_], y_pred: NDArray[np.int_], n_classes: int) -> NDArray[np.int64]:
    """Rows are true classes, columns predicted classes."""
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(y_true), np.asarray(y_pred)), 1)
    return cm


def macro_f1(cm: NDArray[np.int64]) -> float:
    """Unweighted mean of per-class F1; classes absent from both truth and prediction are skipped."""
    tp = np.diag(cm).astype(float)
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    present = (support + predicted) > 0
    denom = support + predicted
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    return float(f1[present].mean()) if present.any() else 0.0


def classification_report(
    y_true: NDArray[np.int_], y_pred: NDArray[np.int_], labels: Sequence[str]
) -> dict[str, Any]:
    """The JSON shape the ``evaluate`` commands print."""
    cm = confusion_matrix(y_true, y_pred, len(labels))
    n = int(cm.sum())
    return {
        "accuracy": float(np.trace(cm) / n) if n else 0.0,
        "macro_f1": macro_f1(cm),
        "n": n,
        "labels": list(labels),
        "confusion": cm.tolist(),
    }
