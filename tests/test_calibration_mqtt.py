"""Calibration from Home Assistant over MQTT: a button starts (and cancels) a session, a retained
prompt topic guides the wearer, a retained result topic holds the last accuracy and date.

The simulated wearer (tests/calibration_wearer.py) follows the prompts from MQTT only, as a wall
tablet showing the Home Assistant sensors would, and presses the button itself.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edge.calibration.store import PersonalModelStore
from tests.harness import wait_until
from tests.test_calibration_e2e import BASE, SESSION_S, start, teardown

STATE = f"{BASE}/calibration/state"
RESULT = f"{BASE}/calibration/result"
COMMAND = f"{BASE}/set/calibrate"
DISCOVERY = "homeassistant/device/test_pi/config"


def calibration_stats(sub: Any) -> dict[str, Any]:
    last = sub.last(f"{BASE}/stats")
    return dict(json.loads(last).get("calibration", {})) if last else {}


def test_home_assistant_button_starts_a_session_guided_by_the_prompt_sensor(
    tmp_path: Path, emg_csv: Path
) -> None:
    broker, sub, wearer, daemon, state = start(tmp_path, emg_csv, "--mqtt-port", "{mqtt_port}", "--start")
    sub.client.subscribe("homeassistant/#", qos=1)
    try:
        result = json.loads(wearer.wait_for("RESULT", SESSION_S + 60))
        sub.wait_for(RESULT, lambda m: bool(m), timeout=10)
        first = PersonalModelStore(state).active()
        # A payload that is not exactly START or CANCEL is refused, like a switch's.
        sub.client.publish(COMMAND, b"start", qos=1)
        # START then CANCEL from the buttons: the session ends and nothing changes.
        sub.client.publish(COMMAND, b"START", qos=1)
        sub.wait_for(STATE, lambda m: json.loads(m[-1])["phase"] == "countdown", timeout=10)
        sub.client.publish(COMMAND, b"CANCEL", qos=1)
        sub.wait_for(STATE, lambda m: json.loads(m[-1])["phase"] == "cancelled", timeout=10)
        wait_until(lambda: "payload for calibrate must be exactly START or CANCEL" in daemon.log, 10)
        # The stats count the sessions by outcome, and the refused command.
        wait_until(
            lambda: calibration_stats(sub).get("outcomes") == {"done": 1, "cancelled": 1}, 10, what="stats"
        )
        stats = json.loads(sub.on(f"{BASE}/stats")[-1])
        assert stats["mqtt"]["commands_rejected"] >= 1 and stats["calibration"]["sessions"] == 2
        assert stats["calibration"]["swaps"] == 1
        assert daemon.stop() == 0
    finally:
        teardown(broker, sub, wearer, daemon)
    assert "Traceback" not in daemon.log, daemon.log[-3000:]
    assert result["phase"] == "done", result
    assert PersonalModelStore(state).active() == first is not None

    # The prompt sensor's topic guided the whole session, label by label, with its progress.
    states: list[dict[str, Any]] = [json.loads(p) for p in sub.on(STATE)]
    recorded = {s["label"] for s in states if s["phase"] == "record"}
    assert recorded == {"neutral", "happy", "angry", "surprise", "fear", "sad", "disgust"}
    assert any(s["prompt"] == "Relax your face" for s in states)
    ends = [s["phase"] for s in states if s["phase"] in ("fitting", "done")]
    assert ends.index("fitting") < ends.index("done"), ends
    done = next(s for s in states if s["phase"] == "done")
    assert done["progress"] == 1.0 and "your personal model is active" in done["message"]
    first_session = states[: states.index(done)]
    progress = [s["progress"] for s in first_session if s["phase"] in ("countdown", "record", "rest")]
    assert progress == sorted(progress)  # no bad repetition here, so it only goes forward
    # Throttled: about one message per phase change, not one per tick.
    assert len(states) < 5 * 7 * 3 + 20, len(states)

    # The result sensor's topic: accuracy and date of the last calibration, retained.
    last = json.loads(sub.on(RESULT)[-1])
    assert last["activated"] is True and 0.6 <= last["accuracy"] <= 1.0
    assert last["date"].startswith("20") and first is not None and last["model_id"] == first.parent.name

    # Discovery declares the buttons and sensors on these topics.
    cmps = json.loads(sub.on(DISCOVERY)[-1])["cmps"]
    buttons = {c["payload_press"]: c for c in cmps.values() if c["p"] == "button"}
    assert set(buttons) == {"START", "CANCEL"}
    assert all(b["command_topic"] == COMMAND for b in buttons.values())
    sensors = {c["state_topic"] for c in cmps.values() if c["p"] == "sensor"}
    assert {STATE, RESULT} <= sensors
    dated = [c for c in cmps.values() if c.get("device_class") == "timestamp"]
    assert dated and dated[0]["state_topic"] == RESULT
