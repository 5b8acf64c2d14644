"""The recorder budget's rule, step by step (the daemon and HA tests measure it end to end)."""

from __future__ import annotations

from edge.decision import EmotionState
from edge.publish.state_budget import StateBudget


def state(emotion: str, p: float, modalities: tuple[str, ...] = ("emg",)) -> EmotionState:
    return EmotionState(emotion, p, {emotion: p, "other": round(1 - p, 4)}, list(modalities), 0.0)


def test_emotion_change_at_once_small_moves_never_big_moves_after_the_interval() -> None:
    budget = StateBudget(min_interval_s=30.0, step=0.1)
    assert budget.due(state("happy", 0.9), now=0.0)  # the first state
    assert not budget.due(state("happy", 0.85), now=40.0)  # moved less than a step
    assert not budget.due(state("happy", 0.7), now=10.0)  # a step, but too soon
    assert budget.due(state("happy", 0.7), now=31.0)  # a step, after the interval
    assert budget.due(state("sad", 0.7), now=31.5)  # another emotion: at once
    assert budget.due(state("sad", 0.7, ("emg", "face")), now=62.0)  # other modalities, after the interval
    assert budget.due(state("sad", 0.7), now=62.1, force=True)  # forced (input ended, modality lost)


def test_while_one_emotion_holds_at_most_two_changes_a_minute() -> None:
    budget = StateBudget(min_interval_s=30.0, step=0.1)
    published = sum(budget.due(state("happy", 0.5 + 0.4 * (i % 2)), now=i * 0.1) for i in range(600))
    assert published <= 3  # the first, then at most one per 30 s over the 60 s
