from __future__ import annotations

import itertools

import numpy as np
import pytest

from edge.config.decision import DecisionConfig
from edge.decision import DecisionEngine, EpisodeEvent, ModalityReading
from edge.emotions import UNCERTAIN

EMG = ["happy", "angry", "sad"]
FACE = ["happy", "angry", "sad", "neutral"]


def engine(**overrides: float) -> DecisionEngine:
    counter = itertools.count()
    cfg = DecisionConfig.model_validate({"ema_alpha": 1.0, "min_consecutive": 3, **overrides})
    return DecisionEngine(cfg, new_id=lambda: f"ep{next(counter)}")


def feed(eng: DecisionEngine, probs: list[float], t: float, modality: str = "emg") -> list[EpisodeEvent]:
    labels = EMG if modality == "emg" else FACE
    return eng.observe(ModalityReading(modality, labels, np.array(probs), t))


def test_episode_needs_consecutive_confident_windows() -> None:
    eng = engine()
    assert feed(eng, [0.9, 0.05, 0.05], 0.0) == []
    assert feed(eng, [0.9, 0.05, 0.05], 0.1) == []
    assert eng.state.emotion == UNCERTAIN
    (ev,) = feed(eng, [0.9, 0.05, 0.05], 0.2)
    assert (ev.type, ev.emotion, ev.episode_id) == ("new", "happy", "ep0")
    assert eng.state.emotion == "happy"


def test_uncertain_below_threshold_resets_the_run() -> None:
    eng = engine()
    for t, p in enumerate([[0.9, 0.1, 0], [0.9, 0.1, 0], [0.4, 0.35, 0.25], [0.9, 0.1, 0], [0.9, 0.1, 0]]):
        assert feed(eng, p, t * 0.1) == []
    assert eng.state.emotion == UNCERTAIN


def test_hysteresis_keeps_episode_between_thresholds() -> None:
    eng = engine(enter_threshold=0.6, exit_threshold=0.4, end_after_s=1.0)
    for i in range(3):
        feed(eng, [0.9, 0.1, 0.0], i * 0.1)
    # 0.5 is below enter but above exit: no flicker, the episode stays.
    for i in range(3, 30):
        assert [e.type for e in feed(eng, [0.5, 0.3, 0.2], i * 0.1)] in ([], ["update"])
    assert eng.state.emotion == "happy"
    # Below exit for end_after_s: the episode ends once.
    ends = [e for i in range(30, 50) for e in feed(eng, [0.3, 0.35, 0.35], i * 0.1)]
    assert [e.type for e in ends] == ["end"]


def test_takeover_ends_then_starts_with_stable_ids() -> None:
    eng = engine()
    events = []
    for i in range(3):
        events += feed(eng, [0.9, 0.1, 0.0], i * 0.1)
    for i in range(3, 6):
        events += feed(eng, [0.1, 0.9, 0.0], i * 0.1)
    assert [(e.type, e.emotion, e.episode_id) for e in events] == [
        ("new", "happy", "ep0"),
        ("end", "happy", "ep0"),
        ("new", "angry", "ep1"),
    ]


def test_updates_are_rate_limited() -> None:
    eng = engine(update_min_interval_s=1.0)
    events = []
    for i in range(40):
        p = 0.7 + 0.25 * (i % 2)
        events += feed(eng, [p, 1 - p, 0.0], i * 0.1)
    updates = [e for e in events if e.type == "update"]
    assert 1 <= len(updates) <= 4
    gaps = np.diff([e.t for e in updates])
    assert (gaps >= 1.0 - 1e-9).all()


def test_fusion_union_labels_and_staleness() -> None:
    eng = engine(staleness_s=1.0)
    feed(eng, [0.2, 0.7, 0.1], 0.0, "emg")
    feed(eng, [0.1, 0.1, 0.1, 0.7], 0.1, "face")
    fused, used = eng.fuse(0.1)
    assert used == ["emg", "face"]
    assert set(fused) == set(FACE)
    assert abs(sum(fused.values()) - 1.0) < 1e-9
    # EMG has no neutral and defers to the face on it; the other labels mix both modalities, each
    # weighted by its confidence (0.7 for both here), EMG's scaled into the 0.3 left beside neutral.
    assert fused["neutral"] == pytest.approx(0.7)
    assert fused["angry"] == pytest.approx((0.1 + 0.7 * 0.3) / 2)
    fused, used = eng.fuse(1.05)
    assert used == ["face"]


def test_neutral_face_can_start_an_episode_while_emg_names_an_emotion() -> None:
    eng = engine()
    events = []
    for i in range(10):
        events += feed(eng, [0.9, 0.05, 0.05], i * 0.1, "emg")
        events += feed(eng, [0.02, 0.02, 0.02, 0.94], i * 0.1 + 0.05, "face")
    assert [(e.type, e.emotion) for e in events] == [("new", "neutral")]
    assert eng.state.emotion == "neutral" and eng.state.modalities == ["emg", "face"]


CALIBRATED_EMG = ["neutral", "happy", "angry", "sad"]  # a personal model has a rest class


def feed_calibrated(eng: DecisionEngine, probs: list[float], t: float) -> list[EpisodeEvent]:
    return eng.observe(ModalityReading("emg", CALIBRATED_EMG, np.array(probs), t))


def test_calibrated_emg_votes_on_neutral_instead_of_deferring() -> None:
    eng = engine(staleness_s=1.0)
    # The face is sure it is happy; the calibrated EMG is as sure the face is at rest.
    feed_calibrated(eng, [0.8, 0.1, 0.05, 0.05], 0.0)
    feed(eng, [0.8, 0.05, 0.05, 0.1], 0.05, "face")
    fused, used = eng.fuse(0.05)
    assert used == ["emg", "face"]
    # Equal confidence (0.8): neutral is the plain mean of both votes, not the face's alone as it
    # is for a model without the label (test_fusion_union_labels_and_staleness).
    assert fused["neutral"] == pytest.approx((0.8 + 0.1) / 2)
    assert fused["happy"] == pytest.approx((0.1 + 0.8) / 2)
    # So neither wins: a contradicted face does not open a happy episode on its own.
    events = []
    for i in range(10):
        events += feed_calibrated(eng, [0.8, 0.1, 0.05, 0.05], 0.1 + i * 0.1)
        events += feed(eng, [0.8, 0.05, 0.05, 0.1], 0.15 + i * 0.1, "face")
    assert events == [] and eng.state.emotion == UNCERTAIN


def test_calibrated_emg_at_rest_gives_no_mass_to_an_emotion_it_does_not_see() -> None:
    eng = engine()
    feed_calibrated(eng, [0.7, 0.1, 0.1, 0.1], 0.0)
    feed(eng, [0.1, 0.1, 0.1, 0.7], 0.05, "face")
    fused, _ = eng.fuse(0.05)
    assert fused["neutral"] == pytest.approx(0.7)
    # With the shipped EMG (no neutral) naming happy instead, neutral is only what the face says.
    shipped = engine()
    feed(shipped, [0.7, 0.2, 0.1], 0.0, "emg")
    feed(shipped, [0.1, 0.1, 0.1, 0.7], 0.05, "face")
    assert shipped.fuse(0.05)[0]["neutral"] == pytest.approx(0.7)
    assert fused["happy"] < shipped.fuse(0.05)[0]["happy"]


def test_emg_only_neutral_opens_and_holds_a_neutral_episode() -> None:
    eng = engine(end_after_s=1.0)
    events = []
    for i in range(3):
        events += feed_calibrated(eng, [0.9, 0.05, 0.03, 0.02], i * 0.1)
    assert [(e.type, e.emotion, e.modalities) for e in events] == [("new", "neutral", ["emg"])]
    # Held across seconds of rest, through a weaker stretch above exit_threshold.
    for i in range(3, 60):
        p = [0.9, 0.05, 0.03, 0.02] if i % 10 else [0.5, 0.3, 0.1, 0.1]
        assert [e.type for e in feed_calibrated(eng, p, i * 0.1)] in ([], ["update"])
    assert eng.state.emotion == "neutral"
    # An expression takes over from rest: neutral ends, happy starts.
    takeover = [e for i in range(60, 64) for e in feed_calibrated(eng, [0.05, 0.9, 0.03, 0.02], i * 0.1)]
    assert [(e.type, e.emotion) for e in takeover] == [("end", "neutral"), ("new", "happy")]


def test_close_ends_open_episode() -> None:
    eng = engine()
    for i in range(3):
        feed(eng, [0.9, 0.1, 0.0], i * 0.1)
    (ev,) = eng.close(1.0)
    assert ev.type == "end" and ev.episode_id == "ep0"
    assert eng.close(2.0) == []


def test_set_weights_applies_to_held_estimates() -> None:
    engine = DecisionEngine(DecisionConfig(), weights={"emg": 1.0, "face": 1.0})
    engine.observe(ModalityReading("emg", ["happy", "sad"], np.array([0.9, 0.1]), 0.0))
    engine.observe(ModalityReading("face", ["happy", "sad"], np.array([0.1, 0.9]), 0.0))
    even = engine.fuse(0.0)[0]
    assert abs(even["happy"] - even["sad"]) < 1e-9
    engine.set_weights({"emg": 0.0, "face": 1.0})  # a reload: EMG no longer counts, without a new reading
    fused, used = engine.fuse(0.0)
    assert used == ["face"] and fused["sad"] > 0.89


# --- the state's meaning: what the sensor shows ------------------------------------------------------


def test_stated_confidence_is_the_stated_emotions_own_probability() -> None:
    eng = engine()
    for i in range(4):
        feed(eng, [0.8, 0.15, 0.05], i * 0.1)
    assert eng.state.emotion == "happy" and eng.state.confidence == pytest.approx(eng.state.probs["happy"])


def test_uncertain_is_never_confident() -> None:
    eng = engine()
    # Above enter_threshold but not yet min_consecutive windows: no episode, so uncertain, at 0.
    feed(eng, [0.95, 0.05, 0.0], 0.0)
    assert eng.state.emotion == UNCERTAIN and eng.state.confidence == 0.0
    feed(eng, [0.4, 0.35, 0.25], 0.1)
    assert eng.state.emotion == UNCERTAIN and eng.state.confidence == 0.0


def test_label_never_stated_below_exit_threshold() -> None:
    """An episode may linger (end_after_s) without support; the state does not keep naming it."""
    eng = engine(enter_threshold=0.6, exit_threshold=0.45, end_after_s=5.0)
    for i in range(3):
        feed(eng, [0.9, 0.1, 0.0], i * 0.1)
    for i in range(3, 20):
        feed(eng, [0.2, 0.55, 0.25], i * 0.1)  # angry leads but never reaches enter_threshold
        stated = eng.state
        if stated.emotion != UNCERTAIN:
            assert stated.probs[stated.emotion] >= 0.45
    assert eng.episode_open  # the episode itself is still open (ends after end_after_s)
    assert eng.state.emotion == UNCERTAIN and eng.state.confidence == 0.0


def test_close_leaves_no_stale_probabilities() -> None:
    eng = engine()
    for i in range(4):
        feed(eng, [0.1, 0.05, 0.85], i * 0.1)
    eng.close(1.0)
    assert (eng.state.emotion, eng.state.confidence, eng.state.probs, eng.state.modalities) == (
        UNCERTAIN,
        0.0,
        {},
        [],
    )
    eng.close(2.0)  # closing again (nothing open) keeps it empty
    assert eng.state.probs == {}
