"""Home Assistant entities of the personal calibration (part of the device's discovery message).

A wall tablet can guide the wearer with them: a button starts a session (another cancels it), a
sensor shows the current prompt with the progress, countdown and advice as attributes, one the
progress in percent, and one the last calibration's accuracy, with its date and whether its model
was activated (and why not) as attributes.
"""

from __future__ import annotations

from typing import Any

from edge.publish.topics import Topics


def calibration_components(topics: Topics, uid: str) -> dict[str, dict[str, Any]]:
    state, result = topics.calibration_state, topics.calibration_result
    return {
        "calibration_start": {
            "p": "button",
            "name": "Start calibration",
            "unique_id": f"{uid}_calibration_start",
            "command_topic": topics.command("calibrate"),
            "payload_press": "START",
            "icon": "mdi:tune-variant",
        },
        "calibration_cancel": {
            "p": "button",
            "name": "Cancel calibration",
            "unique_id": f"{uid}_calibration_cancel",
            "command_topic": topics.command("calibrate"),
            "payload_press": "CANCEL",
            "icon": "mdi:cancel",
        },
        "calibration_prompt": {
            "p": "sensor",
            "name": "Calibration prompt",
            "unique_id": f"{uid}_calibration_prompt",
            "state_topic": state,
            "value_template": "{{ value_json.prompt }}",
            "json_attributes_topic": state,
            "json_attributes_template": "{{ {'phase': value_json.phase, 'label': value_json.label, "
            "'remaining_s': value_json.remaining_s, 'step': value_json.step, 'steps': value_json.steps, "
            "'message': value_json.message} | tojson }}",
            "icon": "mdi:account-voice",
        },
        "calibration_progress": {
            "p": "sensor",
            "name": "Calibration progress",
            "unique_id": f"{uid}_calibration_progress",
            "state_topic": state,
            "value_template": "{{ (value_json.progress * 100) | round(0) }}",
            "unit_of_measurement": "%",
            "icon": "mdi:progress-clock",
        },
        "calibration_accuracy": {
            "p": "sensor",
            "name": "Last calibration accuracy",
            "unique_id": f"{uid}_calibration_accuracy",
            "state_topic": result,
            "value_template": "{{ (value_json.accuracy * 100) | round(1) }}",
            "unit_of_measurement": "%",
            "state_class": "measurement",
            "json_attributes_topic": result,
            "json_attributes_template": "{{ {'date': value_json.date, 'activated': value_json.activated, "
            "'model_id': value_json.model_id, 'reasons': value_json.reasons} | tojson }}",
            "icon": "mdi:bullseye-arrow",
        },
        "calibration_date": {
            "p": "sensor",
            "name": "Last calibration",
            "unique_id": f"{uid}_calibration_date",
            "device_class": "timestamp",
            "state_topic": result,
            "value_template": "{{ value_json.date }}",
        },
    }
