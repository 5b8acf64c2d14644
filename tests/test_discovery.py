"""What the discovery payload declares: entity ids, names, QoS, modalities, device triggers."""

from __future__ import annotations

from typing import Any

import pytest

from edge.config import Config
from edge.publish import discovery
from edge.publish.discovery import discovery_payload
from edge.publish.topics import Topics


def payload(**config: Any) -> dict[str, Any]:
    cfg = Config.model_validate({"device_id": "living_room_pi", **config})
    return discovery_payload(Topics(cfg.mqtt.topic_prefix, cfg.device_id, cfg.mqtt.discovery_prefix), cfg)


CAMERA = {"camera": {"source": "images", "path": "/photos"}}
CALIBRATION_NAMES = {
    "Start calibration",
    "Cancel calibration",
    "Calibration prompt",
    "Calibration progress",
    "Last calibration accuracy",
    "Last calibration",
}


def test_device_name_has_a_clean_default_and_a_key() -> None:
    assert payload()["dev"]["name"] == "Living room pi"
    assert payload(device_id="kitchen-cam_2")["dev"]["name"] == "Kitchen cam 2"
    assert payload(device_name="Sofa sensor")["dev"]["name"] == "Sofa sensor"
    # Entity names do not repeat the device's (HA shows "<device> <entity>").
    names = {c["name"] for c in payload(**CAMERA)["cmps"].values() if "name" in c}
    assert names == {
        "Emotion",
        "Confidence",
        "Episode",
        "EMG",
        "Camera",
        "Pause EMG",
        "Pause camera",
        "Privacy mode",
        *CALIBRATION_NAMES,
    }


def test_entity_ids_are_fixed_and_do_not_follow_the_display_name() -> None:
    cmps = payload(device_name="Sofa sensor", **CAMERA)["cmps"]
    entities = [c for c in cmps.values() if c["p"] != "device_automation"]
    assert {f"{c['p']}.{c['object_id']}" for c in entities} == {
        "sensor.living_room_pi_emotion",
        "sensor.living_room_pi_emotion_confidence",
        "event.living_room_pi_emotion_episode",
        "binary_sensor.living_room_pi_emg_available",
        "binary_sensor.living_room_pi_camera_available",
        "switch.living_room_pi_emg_paused",
        "switch.living_room_pi_camera_paused",
        "switch.living_room_pi_privacy",
        "button.living_room_pi_calibration_start",
        "button.living_room_pi_calibration_cancel",
        "sensor.living_room_pi_calibration_prompt",
        "sensor.living_room_pi_calibration_progress",
        "sensor.living_room_pi_calibration_accuracy",
        "sensor.living_room_pi_calibration_date",
    }


def test_entity_id_helper_matches_what_home_assistant_makes_of_object_id() -> None:
    # HA slugifies object_id: lower case, '-' as '_'.
    cmps = payload(device_id="Kitchen-Pi")["cmps"]
    assert discovery.entity_id("sensor", "Kitchen-Pi", "confidence") == "sensor.kitchen_pi_emotion_confidence"
    assert cmps["confidence"]["object_id"] == "Kitchen-Pi_emotion_confidence"


@pytest.mark.parametrize("qos", [0, 1, 2])
def test_every_subscribing_component_carries_qos(qos: int) -> None:
    # HA 2025.4 ignores the device-level qos for components: each one must say it.
    cmps = payload(mqtt={"qos": qos}, **CAMERA)["cmps"]
    subscribing = [c for c in cmps.values() if {"state_topic", "topic", "command_topic"} & c.keys()]
    assert len(subscribing) == len(cmps)
    assert all(c.get("qos") == qos for c in subscribing), [c for c in subscribing if c.get("qos") != qos]


def test_entities_only_for_configured_modalities() -> None:
    emg_only = payload()["cmps"]
    assert "emg_available" in emg_only and "emg_paused" in emg_only
    assert not {"camera_available", "camera_paused", "privacy"} & emg_only.keys()
    camera_only = payload(emg={"source": "off"}, **CAMERA)["cmps"]
    assert {"camera_available", "camera_paused", "privacy"} <= camera_only.keys()
    assert not {"emg_available", "emg_paused"} & camera_only.keys()
    # Calibration trains the EMG model: without EMG it has nothing to offer.
    assert {c["name"] for c in emg_only.values() if "name" in c} >= CALIBRATION_NAMES
    assert not {c.get("name") for c in camera_only.values()} & CALIBRATION_NAMES


def test_confidence_sensor_has_an_icon() -> None:
    assert payload()["cmps"]["confidence"]["icon"].startswith("mdi:")


def test_device_triggers_for_each_emotion_started_and_ended() -> None:
    triggers = [c for c in payload()["cmps"].values() if c["p"] == "device_automation"]
    pairs = {(c["type"], c["subtype"]) for c in triggers}
    emotions = ["happy", "angry", "surprise", "fear", "sad", "disgust", "neutral"]  # as HA users see them
    assert pairs == {(t, e) for t in ("episode_started", "episode_ended") for e in emotions}
    for c in triggers:
        assert c["automation_type"] == "trigger" and c["topic"] == "emotion_edge/living_room_pi/event"
        assert c["payload"] == f"{'new' if c['type'] == 'episode_started' else 'end'} {c['subtype']}"


def test_emotion_sensor_declares_every_state_it_can_take() -> None:
    # HA's enum sensor rejects a state missing from `options`, so the list must cover every label
    # fusion can state plus "uncertain".
    emotion = payload()["cmps"]["emotion"]
    assert emotion["device_class"] == "enum"
    assert emotion["options"] == [
        "happy",
        "angry",
        "surprise",
        "fear",
        "sad",
        "disgust",
        "neutral",
        "uncertain",
    ]
