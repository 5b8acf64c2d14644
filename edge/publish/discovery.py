"""Home Assistant device-based MQTT discovery (``homeassistant/device/<id>/config``).

One retained message declares the whole device: the emotion sensor (probabilities as
attributes), an ``event`` entity for episodes, a connectivity binary sensor per modality and
switches for pausing each modality and for privacy.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from edge import __version__
from edge.publish.commands import SWITCHES
from edge.publish.topics import MODALITIES, Topics

ORIGIN = {"name": "emotion-edge", "sw": __version__, "url": "https://github.com/emotion-edge/emotion-edge"}
EMOTIONS = ["happy", "angry", "surprise", "fear", "sad", "disgust", "neutral", "uncertain"]
EVENT_TYPES = ["new", "update", "end"]

SWITCH_NAMES = {
    "emg_paused": ("Pause EMG", "mdi:pause-circle"),
    "camera_paused": ("Pause camera", "mdi:camera-off"),
    "privacy": ("Privacy mode", "mdi:eye-off"),
    "live_view": ("Live page video", "mdi:monitor-eye"),  # declared only when the daemon has it
}


def discovery_payload(
    topics: Topics, device_name: str | None = None, switches: Iterable[str] = SWITCHES
) -> dict[str, Any]:
    uid = f"emotion_edge_{topics.device_id}"
    components: dict[str, dict[str, Any]] = {
        "emotion": {
            "p": "sensor",
            "name": "Emotion",
            "unique_id": f"{uid}_emotion",
            "device_class": "enum",
            "options": EMOTIONS,
            "state_topic": topics.state,
            "value_template": "{{ value_json.emotion }}",
            "json_attributes_topic": topics.state,
            "json_attributes_template": "{{ dict(value_json.probs, confidence=value_json.confidence, "
            "modalities=value_json.modalities) | tojson }}",
            "icon": "mdi:emoticon-outline",
        },
        "confidence": {
            "p": "sensor",
            "name": "Emotion confidence",
            "unique_id": f"{uid}_confidence",
            "state_topic": topics.state,
            "value_template": "{{ (value_json.confidence * 100) | round(1) }}",
            "unit_of_measurement": "%",
            "state_class": "measurement",
        },
        "episode": {
            "p": "event",
            "name": "Emotion episode",
            "unique_id": f"{uid}_episode",
            "state_topic": topics.event,
            "event_types": EVENT_TYPES,
            # HA wants the type under "event_type"; the rest becomes the event's attributes.
            "value_template": "{{ {'event_type': value_json.type, 'emotion': value_json.emotion, "
            "'confidence': value_json.confidence, 'id': value_json.id, 'seq': value_json.seq} | tojson }}",
        },
    }
    for modality in MODALITIES:
        components[f"{modality}_available"] = {
            "p": "binary_sensor",
            "name": f"{modality.upper() if modality == 'emg' else modality.capitalize()} available",
            "unique_id": f"{uid}_{modality}_available",
            "device_class": "connectivity",
            "entity_category": "diagnostic",
            "state_topic": topics.modality_available(modality),
            "payload_on": "ON",
            "payload_off": "OFF",
        }
    for switch in switches:
        name, icon = SWITCH_NAMES[switch]
        components[switch] = {
            "p": "switch",
            "name": name,
            "unique_id": f"{uid}_{switch}",
            "icon": icon,
            "command_topic": topics.command(switch),
            "state_topic": topics.switch_state(switch),
            "payload_on": "ON",
            "payload_off": "OFF",
            "optimistic": False,
        }
    return {
        "dev": {
            "ids": [uid],
            "name": device_name or f"Emotion edge {topics.device_id}",
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
        "qos": 1,
    }
