"""Home Assistant device-based MQTT discovery (``homeassistant/device/<id>/config``).

One retained message declares the whole device: the emotion sensor (probabilities as
attributes), a confidence sensor, an ``event`` entity for episodes, device triggers for
"episode <emotion> started/ended", and per configured modality a connectivity binary sensor
and a pause switch (privacy mode goes with the camera); with EMG, the calibration's buttons and
sensors; with the live page, its video switch.

Entity ids are fixed by ``object_id`` (``<domain>.<device_id>_<suffix>``, see ``ENTITY_SUFFIX``),
so they do not depend on the display name, and the README and the example automations can
name them. Every component that subscribes carries ``qos`` itself: Home Assistant 2025.4 does
not pass the device-level value down to the components.
"""

from __future__ import annotations

from typing import Any

from edge import __version__
from edge.config import Config
from edge.emotions import EMOTIONS, UNCERTAIN
from edge.publish.calibration_discovery import calibration_components
from edge.publish.commands import LIVE_VIEW
from edge.publish.topics import Topics

ORIGIN = {"name": "emotion-edge", "sw": __version__, "url": "https://github.com/emotion-edge/emotion-edge"}
EVENT_TYPES = ["new", "update", "end"]
# Device triggers: (trigger type, event type that fires it), one per emotion (uncertain has no episode).
TRIGGERS = {"episode_started": "new", "episode_ended": "end"}

# Component key -> entity id suffix, where it differs from the key.
ENTITY_SUFFIX = {"confidence": "emotion_confidence", "episode": "emotion_episode"}

SWITCH_NAMES = {
    "emg_paused": ("Pause EMG", "mdi:pause-circle"),
    "camera_paused": ("Pause camera", "mdi:camera-off"),
    "privacy": ("Privacy mode", "mdi:eye-off"),
    "live_view": ("Live page video", "mdi:monitor-eye"),  # declared only when the daemon has it
}
# What each configured modality brings: its availability sensor and its switches.
MODALITY_SWITCHES = {"emg": ("emg_paused",), "camera": ("camera_paused", "privacy")}
MODALITY_NAMES = {"emg": "EMG", "camera": "Camera"}


def configured_modalities(config: Config) -> list[str]:
    return [
        m for m, source in (("emg", config.emg.source), ("camera", config.camera.source)) if source != "off"
    ]


def entity_id(platform: str, device_id: str, key: str) -> str:
    """The entity id Home Assistant gives component ``key`` (it lower-cases and turns '-' into '_')."""
    return f"{platform}.{device_id}_{ENTITY_SUFFIX.get(key, key)}".lower().replace("-", "_")


def _entity(topics: Topics, config: Config, key: str, platform: str, name: str) -> dict[str, Any]:
    """What every entity has: platform, name, stable unique id and entity id, and the QoS of its topics."""
    return {
        "p": platform,
        "name": name,
        "unique_id": f"emotion_edge_{topics.device_id}_{key}",
        "object_id": f"{topics.device_id}_{ENTITY_SUFFIX.get(key, key)}",
        "qos": config.mqtt.qos,
    }


def _state_sensors(topics: Topics, config: Config) -> dict[str, dict[str, Any]]:
    return {
        "emotion": {
            **_entity(topics, config, "emotion", "sensor", "Emotion"),
            "device_class": "enum",
            "options": [*EMOTIONS, UNCERTAIN],
            "state_topic": topics.state,
            "value_template": "{{ value_json.emotion }}",
            "json_attributes_topic": topics.state,
            "json_attributes_template": "{{ dict(value_json.probs, confidence=value_json.confidence, "
            "modalities=value_json.modalities) | tojson }}",
            "icon": "mdi:emoticon-outline",
        },
        "confidence": {
            **_entity(topics, config, "confidence", "sensor", "Confidence"),
            "state_topic": topics.state,
            "value_template": "{{ (value_json.confidence * 100) | round(1) }}",
            "unit_of_measurement": "%",
            "state_class": "measurement",
            "icon": "mdi:gauge",
        },
        "episode": {
            **_entity(topics, config, "episode", "event", "Episode"),
            "state_topic": topics.event,
            "event_types": EVENT_TYPES,
            "icon": "mdi:timeline-clock-outline",
            # HA wants the type under "event_type"; the rest becomes the event's attributes.
            "value_template": "{{ {'event_type': value_json.type, 'emotion': value_json.emotion, "
            "'confidence': value_json.confidence, 'id': value_json.id, 'seq': value_json.seq, "
            "'reason': value_json.reason | default(none)} | tojson }}",
        },
    }


def _device_triggers(topics: Topics, config: Config) -> dict[str, dict[str, Any]]:
    """ "Episode <emotion> started/ended" in HA's automation editor, without YAML."""
    return {
        f"{trigger}_{emotion}": {
            "p": "device_automation",
            "automation_type": "trigger",
            "type": trigger,
            "subtype": emotion,
            "topic": topics.event,
            "qos": config.mqtt.qos,
            "value_template": "{{ value_json.type }} {{ value_json.emotion }}",
            "payload": f"{event_type} {emotion}",
        }
        for emotion in EMOTIONS
        for trigger, event_type in TRIGGERS.items()
    }


def _modality(topics: Topics, config: Config, modality: str) -> dict[str, dict[str, Any]]:
    components = {
        f"{modality}_available": {
            **_entity(topics, config, f"{modality}_available", "binary_sensor", MODALITY_NAMES[modality]),
            "device_class": "connectivity",
            "entity_category": "diagnostic",
            "state_topic": topics.modality_available(modality),
            "payload_on": "ON",
            "payload_off": "OFF",
        }
    }
    for switch in MODALITY_SWITCHES[modality]:
        components[switch] = _switch(topics, config, switch)
    return components


def _switch(topics: Topics, config: Config, switch: str) -> dict[str, Any]:
    name, icon = SWITCH_NAMES[switch]
    return {
        **_entity(topics, config, switch, "switch", name),
        "icon": icon,
        "command_topic": topics.command(switch),
        "state_topic": topics.switch_state(switch),
        "payload_on": "ON",
        "payload_off": "OFF",
        "optimistic": False,
    }


def _calibration(topics: Topics, config: Config) -> dict[str, dict[str, Any]]:
    """The calibration's buttons and sensors, with the ids and QoS every entity gets here."""
    return {
        key: {**_entity(topics, config, key, component["p"], component["name"]), **component}
        for key, component in calibration_components(topics, f"emotion_edge_{topics.device_id}").items()
    }


def discovery_payload(topics: Topics, config: Config) -> dict[str, Any]:
    components = {**_state_sensors(topics, config), **_device_triggers(topics, config)}
    for modality in configured_modalities(config):
        components.update(_modality(topics, config, modality))
    if "emg" in configured_modalities(config):  # calibration trains the EMG model
        components.update(_calibration(topics, config))
    if config.web.enabled:
        components[LIVE_VIEW] = _switch(topics, config, LIVE_VIEW)
    return {
        "dev": {
            "ids": [f"emotion_edge_{topics.device_id}"],
            "name": config.display_name,
            "mf": "emotion-edge",
            "mdl": "EMG + camera emotion sensor",
            "sw": __version__,
        },
        "o": ORIGIN,
        "cmps": components,
        # Shared by every component: "stopped" and "offline" both mean unavailable.
        "availability_topic": topics.availability,
        "availability_template": "{{ 'online' if value == 'online' else 'offline' }}",
        "payload_available": "online",
        "payload_not_available": "offline",
        "qos": config.mqtt.qos,
    }
