"""The order in which a calibration session asks for each expression.

Every label is recorded ``repetitions`` times, one repetition of each per round, in a freshly
shuffled order every round. Interleaving is what makes leave-one-repetition-out honest: when an
emotion is recorded as one block, time (electrode drift, fatigue) is confounded with the class and
a held-out stretch of it is not independent of the rest. A round never starts with the label the
previous round ended with, so no label is ever recorded twice in a row.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from edge.config.calibration import CalibrationConfig


@dataclass(frozen=True)
class Step:
    label: str
    rep: int  # 0-based repetition index of this label (the CSV's ``rep`` column)


def build_plan(config: CalibrationConfig, rng: random.Random | None = None) -> list[Step]:
    rng = rng or random.Random(config.seed)
    steps: list[Step] = []
    for rep in range(config.repetitions):
        order = list(config.labels)
        rng.shuffle(order)
        if steps and order[0] == steps[-1].label:
            order[0], order[-1] = order[-1], order[0]
        steps.extend(Step(label, rep) for label in order)
    return steps
