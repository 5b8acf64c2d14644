"""The calibration classifier and its validation, on precomputed feature rows (numpy/scipy only).

**Why class-balanced softmax regression, not shrinkage LDA.** Both are linear and both fit in
milliseconds, but softmax regression is the better fit for this job:

- It is what the shipped EMG model is (``TD features + softmax regression`` won the forward-in-time
  comparison in ``models/emg/REPORT.md``, ahead of LDA), so a personal model is the same kind of
  model fitted on the user's own data, and the same regularisation (``C = 1`` on the summed loss,
  scikit-learn's convention) carries over.
- Its float model *is* ``softmax(W x + b)``: one FULLY_CONNECTED and one SOFTMAX, so the int8
  export changes nothing but the arithmetic. LDA's posteriors also take that form, but only under
  its shared-Gaussian assumption, which the TD features (counts, percentiles, log-amplitudes;
  strongly correlated across overlapping windows) do not meet; its probabilities come out
  overconfident, and the daemon's decision stage thresholds on those probabilities.
- It optimises the classification loss directly and copes with the collinear TD features through
  its L2 penalty, where LDA has to estimate and shrink a 30 x 30 covariance from a few hundred
  windows of one session.

Class weights are "balanced" (``n / (k * n_c)``): a session in which one emotion was held longer
must not tilt the model towards it. The penalty is ``||W||^2 / (2C)``; the biases are not
penalised. The minimiser is scipy's L-BFGS-B with the analytic gradient, started from zero, so a
fit is deterministic.

Everything here takes feature rows, not raw EMG: :mod:`edge.calibration.offline` feeds it TD
features of EMG windows, ``training/cross_subject.py`` log-power features of another data set.
"""

from __future__ import annotations

import contextlib
import ctypes
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
from numpy.typing import NDArray

from edge.emg.dsp import FloatArray
from edge.metrics import classification_report

IntArray = NDArray[np.int64]

# scikit-learn's LogisticRegression default, which the shipped model was fitted with.
DEFAULT_C = 1.0
MAX_ITER = 2000
# The same floor as edge.emg.dsp.FeatureSpec.fitted: a constant feature is left unscaled.
_MIN_SCALE = 1e-6


@dataclass(frozen=True)
class Standardisation:
    """Per-feature ``(x - offset) / scale``, fitted exactly as :meth:`FeatureSpec.fitted` does for TD
    features (mean, population standard deviation, 1 where that is below 1e-6), so the values can go
    into a model card's ``preprocessing`` unchanged."""

    offset: FloatArray
    scale: FloatArray

    @classmethod
    def fit(cls, x: FloatArray) -> Standardisation:
        x = np.asarray(x, dtype=np.float64)
        scale = x.std(axis=0)
        return cls(x.mean(axis=0), np.where(scale < _MIN_SCALE, 1.0, scale))

    def apply(self, x: FloatArray) -> FloatArray:
        result: FloatArray = (np.asarray(x, dtype=np.float64) - self.offset) / self.scale
        return result


@dataclass(frozen=True)
class LinearSoftmax:
    """``softmax(W ((x - offset) / scale) + b)``: a fitted model on raw (unnormalised) feature rows."""

    weights: FloatArray  # (n_classes, n_features), on standardised features
    bias: FloatArray  # (n_classes,)
    norm: Standardisation

    def logits(self, x: FloatArray) -> FloatArray:
        result: FloatArray = self.norm.apply(x) @ self.weights.T + self.bias
        return result

    def predict_proba(self, x: FloatArray) -> FloatArray:
        return softmax(self.logits(x))

    def predict(self, x: FloatArray) -> IntArray:
        predicted: IntArray = self.logits(x).argmax(axis=1).astype(np.int64)
        return predicted


def softmax(z: FloatArray) -> FloatArray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    result: FloatArray = e / e.sum(axis=1, keepdims=True)
    return result


def balanced_weights(y: IntArray, n_classes: int) -> FloatArray:
    """``n / (k * n_c)`` per row, over the classes present in ``y`` (scikit-learn's "balanced")."""
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    present = counts > 0
    per_class = np.zeros(n_classes)
    per_class[present] = len(y) / (present.sum() * counts[present])
    weights: FloatArray = per_class[y]
    return weights


# OpenBLAS's thread-count controls under the names the builds in use export: distribution packages
# (``openblas_*``) and the wheels numpy and scipy bundle (``scipy_openblas_*``, ``...64_`` for ILP64).
_OPENBLAS_THREADS_API = (
    ("openblas_get_num_threads", "openblas_set_num_threads"),
    ("openblas_get_num_threads64_", "openblas_set_num_threads64_"),
    ("scipy_openblas_get_num_threads", "scipy_openblas_set_num_threads"),
    ("scipy_openblas_get_num_threads64_", "scipy_openblas_set_num_threads64_"),
)


@lru_cache(maxsize=1)
def _openblas_thread_controls() -> tuple[tuple[Any, Any], ...]:
    """(get, set) for each OpenBLAS loaded in this process (Linux: read from /proc/self/maps)."""
    try:
        with open("/proc/self/maps") as fh:
            paths = {
                parts[5].strip()
                for parts in (line.split(None, 5) for line in fh)
                if len(parts) == 6 and "openblas" in parts[5].lower()
            }
    except OSError:
        return ()
    controls = []
    for path in sorted(paths):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for get_name, set_name in _OPENBLAS_THREADS_API:
            if hasattr(lib, get_name) and hasattr(lib, set_name):
                controls.append((getattr(lib, get_name), getattr(lib, set_name)))
                break
    return tuple(controls)


@contextlib.contextmanager
def single_threaded_blas() -> Iterator[None]:
    """OpenBLAS on one thread meanwhile, then as it was.

    The products here are thin (thousands of rows x 30 features x 7 classes): OpenBLAS splits them
    over threads that spin while they wait, and on a device that is also running the daemon (or on
    any busy machine) that made a calibration 5-6x slower (8 s instead of 1.3 s for a 3-minute
    session, measured). Where no OpenBLAS is found (another BLAS, another OS) nothing changes.
    """
    controls = _openblas_thread_controls()
    saved = [int(get()) for get, _ in controls]
    for _, set_threads in controls:
        set_threads(1)
    try:
        yield
    finally:
        for (_, set_threads), n in zip(controls, saved, strict=True):
            set_threads(n)


def fit_softmax_regression(
    x: FloatArray, y: IntArray, n_classes: int, c: float = DEFAULT_C, max_iter: int = MAX_ITER
) -> tuple[FloatArray, FloatArray]:
    """Weights ``(n_classes, n_features)`` and biases minimising the class-weighted cross-entropy
    plus ``||W||^2 / (2c)``, on already standardised rows ``x``."""
    from scipy.optimize import minimize  # ~0.2 s to import: only when a model is fitted

    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.int64)
    if x.ndim != 2 or len(x) != len(y) or len(y) == 0:
        raise ValueError(f"need feature rows (n, d) with one label each, got {x.shape} and {y.shape}")
    if c <= 0:
        raise ValueError(f"C must be positive, got {c}")
    n, d = x.shape
    k = n_classes
    sample_w = balanced_weights(y, k)
    onehot = np.zeros((n, k))
    onehot[np.arange(n), y] = 1.0
    # Scaled by 1/n so the tolerances mean the same whatever the session's length.
    inv_n, penalty = 1.0 / n, 1.0 / c

    def objective(theta: FloatArray) -> tuple[float, FloatArray]:
        w = theta[: k * d].reshape(k, d)
        b = theta[k * d :]
        z = x @ w.T + b
        z_max = z.max(axis=1, keepdims=True)
        log_norm = z_max[:, 0] + np.log(np.exp(z - z_max).sum(axis=1))
        ce = log_norm - z[np.arange(n), y]
        loss = inv_n * (float(sample_w @ ce) + 0.5 * penalty * float(np.sum(w * w)))
        g = (np.exp(z - log_norm[:, None]) - onehot) * sample_w[:, None]
        grad_w = inv_n * (g.T @ x + penalty * w)
        grad_b = inv_n * g.sum(axis=0)
        return loss, np.concatenate([grad_w.ravel(), grad_b])

    with single_threaded_blas():
        res = minimize(
            objective,
            np.zeros(k * d + k),
            jac=True,
            method="L-BFGS-B",
            options={"maxiter": max_iter, "gtol": 1e-7, "ftol": 1e-12},
        )
    weights = res.x[: k * d].reshape(k, d)
    bias = res.x[k * d :]
    # Softmax is unchanged by a common shift of the biases (unpenalised): centre them.
    return weights, bias - bias.mean()


def fit_linear(x: FloatArray, y: IntArray, n_classes: int, c: float = DEFAULT_C) -> LinearSoftmax:
    """Standardise on ``x`` itself, then fit: the whole model from raw feature rows."""
    norm = Standardisation.fit(x)
    weights, bias = fit_softmax_regression(norm.apply(x), y, n_classes, c)
    return LinearSoftmax(weights, bias, norm)


# (model fitted on the training rows, training rows, test rows) -> predicted class per test row.
# The training rows are there for predictors that need them, such as an int8 export calibrated on them.
Predictor = Callable[[LinearSoftmax, FloatArray, FloatArray], IntArray]


def float_predictor(model: LinearSoftmax, train: FloatArray, test: FloatArray) -> IntArray:
    return model.predict(test)


def leave_one_group_out(
    x: FloatArray,
    y: IntArray,
    groups: NDArray[Any],
    labels: Sequence[str],
    *,
    test_mask: NDArray[np.bool_] | None = None,
    predictors: Mapping[str, Predictor] | None = None,
    c: float = DEFAULT_C,
) -> dict[str, dict[str, Any]]:
    """For each group ``g``: fit (standardisation included) on the rows of every other group, predict
    the rows of ``g``; pool the predictions of all folds.

    ``test_mask`` restricts which rows of ``g`` are scored (e.g. only non-overlapping windows), never
    which rows train. Each predictor (default: the float model) yields its own report, the
    :func:`edge.metrics.classification_report` of the pooled predictions plus ``folds``: each held-out
    group's size and accuracy.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.int64)
    groups = np.asarray(groups)
    preds = dict(predictors or {"float": float_predictor})
    scored = np.ones(len(y), dtype=bool) if test_mask is None else np.asarray(test_mask, dtype=bool)
    y_true: list[IntArray] = []
    y_pred: dict[str, list[IntArray]] = {name: [] for name in preds}
    folds: dict[str, list[dict[str, Any]]] = {name: [] for name in preds}
    for g in np.unique(groups):
        held = groups == g
        test = held & scored
        if not test.any() or held.all():
            continue
        model = fit_linear(x[~held], y[~held], len(labels), c)
        y_true.append(y[test])
        for name, predict in preds.items():
            p = np.asarray(predict(model, x[~held], x[test]), dtype=np.int64)
            y_pred[name].append(p)
            folds[name].append(
                {
                    "group": g.item() if hasattr(g, "item") else g,
                    "n_test": int(test.sum()),
                    "accuracy": float((p == y[test]).mean()),
                }
            )
    if not y_true:
        raise ValueError("no group has rows to test with rows of other groups to train on")
    truth = np.concatenate(y_true)
    reports: dict[str, dict[str, Any]] = {}
    for name in preds:
        report = classification_report(truth, np.concatenate(y_pred[name]), labels)
        report["folds"] = folds[name]
        reports[name] = report
    return reports
