"""The validation gate: is a freshly calibrated model good enough to replace the running one?

A model passes when, on leave-one-repetition-out validation of its int8 export (the numbers in
its card):

- its accuracy is at least :data:`MIN_ACCURACY` (0.60; chance is 1/7 for seven labels), and
- every label's recall is at least :data:`MIN_RECALL` (0.50): a label the model misses more
  often than not would be announced as something else most of the time, and
- no label is taken for one other label in :data:`MAX_CONFUSION` (30%) or more of its windows:
  a systematic mix-up (disgust announced as happy) misleads more than a spread of errors.

The thresholds were set on the public recording (the sessions of
``tests/test_calibration_offline.py``): a clean session scores 95% with every recall >= 81% and
no confusion above 9%; one noisy electrode out of three drops one label's recall to 52%, 42% of
it taken for another label, and is refused. ``emotion-edge models activate ID`` still activates a
refused model, as the user's explicit choice.

A model that fails is stored but not activated, and the reasons say what to do. They come from
the confusion matrix (which labels are taken for which) and from the session's own features:
for a confused pair, the electrode to check is the one whose features separate the two labels
least (Fisher's ratio, the best of that channel's features), and an electrode whose features
barely separate *any* two labels (below :data:`DEAD_CHANNEL_RATIO` of the best channel's) is
named on its own: it is most likely off the skin, flat or disconnected. That note comes as a
warning when the model passes anyway (the other electrodes made up for it).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations
from typing import TYPE_CHECKING, Any

import numpy as np

from edge.emg.dsp import TD_CHANNEL_FEATURES, FloatArray

if TYPE_CHECKING:
    from edge.calibration.offline import CalibrationResult

MIN_ACCURACY = 0.60
MIN_RECALL = 0.50
MAX_CONFUSION = 0.30
# A pair is "indistinguishable" when the second is taken for the first this often too.
MUTUAL_CONFUSION = 0.20
# An electrode whose best pairwise separation is below this fraction of the best electrode's.
DEAD_CHANNEL_RATIO = 0.05
_EPS = 1e-12


@dataclass(frozen=True)
class Verdict:
    passed: bool
    reasons: list[str]  # why it was not activated (empty when it passed)
    warnings: list[str]  # worth fixing although it passed (an electrode that carries nothing)
    accuracy: float
    recall: dict[str, float]

    def as_json(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "reasons": self.reasons,
            "warnings": self.warnings,
            "accuracy": self.accuracy,
            "recall": self.recall,
            "thresholds": {
                "min_accuracy": MIN_ACCURACY,
                "min_recall": MIN_RECALL,
                "max_confusion": MAX_CONFUSION,
            },
        }


def assess(result: CalibrationResult) -> Verdict:
    from edge.calibration.offline import CHANNEL_NAMES

    report = result.report
    return judge(
        report["labels"],
        np.asarray(report["confusion"], dtype=np.int64),
        float(report["accuracy"]),
        channel_separation(result.features, result.session.y, len(report["labels"]), len(CHANNEL_NAMES)),
        list(CHANNEL_NAMES),
    )


def channel_separation(features: FloatArray, y: Any, n_labels: int, n_channels: int) -> FloatArray:
    """``sep[c, a, b]``: how well channel ``c`` alone tells label ``a`` from ``b``, the largest
    Fisher ratio ``(mean_a - mean_b)^2 / (var_a + var_b)`` among that channel's features."""
    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(y)
    per_channel = len(TD_CHANNEL_FEATURES)
    if x.shape[1] != n_channels * per_channel:
        raise ValueError(f"expected {n_channels} x {per_channel} features, got {x.shape[1]}")
    means = np.stack(
        [x[y == k].mean(axis=0) if (y == k).any() else np.zeros(x.shape[1]) for k in range(n_labels)]
    )
    var = np.stack(
        [x[y == k].var(axis=0) if (y == k).any() else np.zeros(x.shape[1]) for k in range(n_labels)]
    )
    sep = np.zeros((n_channels, n_labels, n_labels))
    for a, b in combinations(range(n_labels), 2):
        fisher = (means[a] - means[b]) ** 2 / (var[a] + var[b] + _EPS)
        # A feature constant in both labels (a flat channel) separates nothing.
        fisher[(var[a] + var[b]) < _EPS] = 0.0
        best = fisher.reshape(n_channels, per_channel).max(axis=1)
        sep[:, a, b] = sep[:, b, a] = best
    return sep


def judge(
    labels: list[str],
    confusion: Any,
    accuracy: float,
    separation: FloatArray,
    channel_names: list[str],
) -> Verdict:
    conf = np.asarray(confusion, dtype=np.float64)
    support = conf.sum(axis=1)
    present = support > 0
    recall_arr = np.divide(np.diag(conf), support, out=np.zeros(len(labels)), where=present)
    recall = {lab: round(float(r), 4) for lab, r in zip(labels, recall_arr, strict=True)}
    rate = np.divide(conf, support[:, None], out=np.zeros_like(conf), where=present[:, None])
    off = rate.copy()
    np.fill_diagonal(off, 0.0)

    def electrode(c: int) -> str:
        return f"electrode {c + 1} ({channel_names[c]})"

    best_per_channel = separation.max(axis=(1, 2))
    floor = DEAD_CHANNEL_RATIO * max(float(best_per_channel.max()), _EPS)
    dead = [c for c in range(len(channel_names)) if best_per_channel[c] < floor]
    electrode_notes = [
        f"{electrode(c)} hardly changes between expressions: check that it is attached, touching the "
        "skin and its cable is plugged in"
        for c in dead
    ]

    confused: list[str] = []
    named: set[frozenset[int]] = set()
    for a in np.argsort(recall_arr):
        if not present[a] or (recall_arr[a] >= MIN_RECALL and off[a].max() < MAX_CONFUSION):
            continue
        b = int(off[a].argmax())
        pair = frozenset((int(a), b))
        if pair in named:
            continue
        named.add(pair)
        # A dead electrode explains a confusion best; otherwise the one that tells the pair apart least.
        suspects = dead or list(range(len(channel_names)))
        c = min(suspects, key=lambda k: float(separation[k, a, b]))
        if off[b, a] >= MUTUAL_CONFUSION:
            what = f"{labels[a]} and {labels[b]} are indistinguishable"
        else:
            what = f"{labels[a]} is taken for {labels[b]} in {off[a, b]:.0%} of its windows"
        confused.append(
            f"{what} (recall {labels[a]} {recall_arr[a]:.0%}, {labels[b]} {recall_arr[b]:.0%}): check "
            f"{electrode(c)}, then record again, making the two expressions clearly different"
        )
    low_accuracy = accuracy < MIN_ACCURACY
    passed = not low_accuracy and not confused
    if passed:
        return Verdict(True, [], electrode_notes, round(accuracy, 4), recall)
    reasons = [
        *(
            [f"validation accuracy {accuracy:.0%} is below the {MIN_ACCURACY:.0%} needed"]
            if low_accuracy
            else []
        ),
        *confused,
        *electrode_notes,
    ]
    return Verdict(False, reasons, [], round(accuracy, 4), recall)
