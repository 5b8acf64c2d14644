"""The daemon as a real Home Assistant Core sees it: entities, episodes, switches, restarts, automations.

One HA (pinned version, see scripts/ha-venv.sh) and one mosquitto serve the whole module; each test
runs its own daemon under its own device_id. Everything is asserted from HA itself: its REST and
websocket APIs and home-assistant.log. The example automations in deploy/home-assistant are loaded
as shipped and must trigger.
"""

from __future__ import annotations

import re
import shutil
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, shared_file
from tests.ha_harness import HomeAssistant, StateChanges, ha_venv
from tests.harness import Daemon, Mosquitto, daemon_config, one_segment, replay_emg, wait_until

AUTOMATIONS = REPO / "deploy" / "home-assistant" / "automation.yaml"
SEGMENTS = ["happy", "angry", "surprise", "fear", "sad", "disgust"]
# The broker logs each subscription with its QoS: how we see what HA really asked for.
BROKER_LOG = [
    "log_type error",
    "log_type warning",
    "log_type notice",
    "log_type information",
    "log_type subscribe",
]


@dataclass
class Env:
    ha: HomeAssistant
    broker: Mosquitto
    workdir: Path


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    venv = ha_venv()
    workdir = tmp_path_factory.mktemp("ha")
    broker = Mosquitto(workdir / "broker", extra=BROKER_LOG).start()
    ha = HomeAssistant(venv, workdir / "config")
    started = time.monotonic()
    try:
        ha.start()
        ha.onboard()
        ha.add_mqtt(broker.port)
        ha.load_automations(AUTOMATIONS.read_text())  # the examples, exactly as shipped
        print(
            f"\nHome Assistant {venv.name}: up, onboarded, MQTT added in {time.monotonic() - started:.1f} s"
        )
        yield Env(ha, broker, workdir)
    finally:
        ha.stop()
        broker.stop()


def camera_folder(workdir: Path) -> Path:
    """An image folder whose one photo has no face: the camera runs, and the decision stays EMG's."""
    folder = workdir / "photos"
    folder.mkdir(exist_ok=True)
    shutil.copy(shared_file("faces/skimage_chelsea_cat_noface.png"), folder / "cat.png")
    return folder


def config_for(env: Env, device_id: str, emg: str, camera: bool, tmp_path: Path) -> Path:
    path = daemon_config(
        tmp_path, env.broker.port, device_id=device_id, emg=emg, decision="update_min_interval_s = 1.0"
    )
    if camera:
        yunet = shared_file("models/face_detection_yunet_2023mar.onnx")
        path.write_text(
            path.read_text()
            + f'\n[camera]\nsource = "images"\npath = "{camera_folder(tmp_path)}"\nfps = 2\nloop = true\n'
            + f'\n[face]\ndetector_model = "{yunet}"\n'
        )
    return path


def ids(device_id: str, camera: bool) -> dict[str, str]:
    """Component key -> the entity id HA must give it: the ids the README documents, written out."""
    found = {
        "emotion": f"sensor.{device_id}_emotion",
        "confidence": f"sensor.{device_id}_emotion_confidence",
        "episode": f"event.{device_id}_emotion_episode",
        "emg_available": f"binary_sensor.{device_id}_emg_available",
        "emg_paused": f"switch.{device_id}_emg_paused",
        # Calibration trains the EMG model, so it comes with EMG.
        "calibration_start": f"button.{device_id}_calibration_start",
        "calibration_cancel": f"button.{device_id}_calibration_cancel",
        "calibration_prompt": f"sensor.{device_id}_calibration_prompt",
        "calibration_progress": f"sensor.{device_id}_calibration_progress",
        "calibration_accuracy": f"sensor.{device_id}_calibration_accuracy",
        "calibration_date": f"sensor.{device_id}_calibration_date",
    }
    if camera:
        found |= {
            "camera_available": f"binary_sensor.{device_id}_camera_available",
            "camera_paused": f"switch.{device_id}_camera_paused",
            "privacy": f"switch.{device_id}_privacy",
        }
    return found


def device_of(ha: HomeAssistant, device_id: str) -> dict[str, Any]:
    (device,) = [
        d
        for d in ha.ws({"type": "config/device_registry/list"})
        if ["mqtt", f"emotion_edge_{device_id}"] in d["identifiers"]
    ]
    return dict(device)


def registry_entities(ha: HomeAssistant, device: dict[str, Any]) -> list[dict[str, Any]]:
    return [e for e in ha.ws({"type": "config/entity_registry/list"}) if e["device_id"] == device["id"]]


def wait_state(ha: HomeAssistant, entity: str, predicate: Callable[[str], bool], timeout: float = 30) -> None:
    def check() -> bool:
        s = ha.state(entity)
        return s is not None and predicate(s["state"])

    wait_until(check, timeout, interval=0.2, what=f"{entity}")


def all_available(ha: HomeAssistant, entities: dict[str, str]) -> bool:
    states = ha.states()
    return all(e in states and states[e]["state"] != "unavailable" for e in entities.values())


def all_unavailable(ha: HomeAssistant, entities: dict[str, str]) -> bool:
    states = ha.states()
    return all(states.get(e, {}).get("state") == "unavailable" for e in entities.values())


def automation_by_id(ha: HomeAssistant, automation_id: str) -> dict[str, Any] | None:
    """The automation's state (found by its id in automations.yaml), or None while HA has not loaded it."""
    found = [
        s
        for s in ha.states().values()
        if s["entity_id"].startswith("automation.") and s["attributes"].get("id") == automation_id
    ]
    assert len(found) <= 1, found
    return found[0] if found else None


def triggered(ha: HomeAssistant, automation_id: str) -> bool:
    automation = automation_by_id(ha, automation_id)
    return automation is not None and automation["attributes"]["last_triggered"] is not None


def subscriptions(broker: Mosquitto, device_id: str) -> dict[str, set[int]]:
    """Topic of this device -> QoS levels Home Assistant subscribed with (from the broker's log)."""
    found: dict[str, set[int]] = {}
    log = (broker.workdir / "mosquitto.log").read_text()
    for client, qos, topic in re.findall(rf": (\S+) ([012]) (emotion_edge/{device_id}/\S+)", log):
        if not client.startswith("emotion-edge-"):  # the daemon's own subscription to its commands
            found.setdefault(topic, set()).add(int(qos))
    return found


def test_entities_episodes_restart_and_example_automations(env: Env, tmp_path: Path, emg_csv: Path) -> None:
    ha, device_id = env.ha, "living_room_pi"
    entities = ids(device_id, camera=True)
    config = config_for(env, device_id, replay_emg(emg_csv, speed=1), camera=True, tmp_path=tmp_path)
    changes = StateChanges(ha)
    daemon = Daemon(config, tmp_path)
    try:
        wait_until(lambda: all_available(ha, entities), 60, interval=0.5, what="the entities")
        states = ha.states()
        names = {key: states[e]["attributes"]["friendly_name"] for key, e in entities.items()}
        assert names == {
            "emotion": "Living room pi Emotion",
            "confidence": "Living room pi Confidence",
            "episode": "Living room pi Episode",
            "emg_available": "Living room pi EMG",
            "camera_available": "Living room pi Camera",
            "emg_paused": "Living room pi Pause EMG",
            "camera_paused": "Living room pi Pause camera",
            "privacy": "Living room pi Privacy mode",
            "calibration_start": "Living room pi Start calibration",
            "calibration_cancel": "Living room pi Cancel calibration",
            "calibration_prompt": "Living room pi Calibration prompt",
            "calibration_progress": "Living room pi Calibration progress",
            "calibration_accuracy": "Living room pi Last calibration accuracy",
            "calibration_date": "Living room pi Last calibration",
        }
        assert states[entities["confidence"]]["attributes"]["icon"] == "mdi:gauge"
        # The device page: one device, named cleanly, with exactly these entities.
        device = device_of(ha, device_id)
        assert (device["name"], device["manufacturer"]) == ("Living room pi", "emotion-edge")
        assert sorted(e["entity_id"] for e in registry_entities(ha, device)) == sorted(entities.values())
        # Device triggers, as the automation editor lists them, and one of them in an automation.
        triggers = ha.ws({"type": "device_automation/trigger/list", "device_id": device["id"]})
        pairs = {(t["type"], t["subtype"]) for t in triggers if t["domain"] == "mqtt"}
        assert {("episode_started", e) for e in SEGMENTS} | {("episode_ended", e) for e in SEGMENTS} <= pairs
        (sad_started,) = [
            {k: v for k, v in t.items() if k != "metadata"}  # the editor's extra, not part of the trigger
            for t in triggers
            if (t.get("type"), t.get("subtype")) == ("episode_started", "sad")
        ]
        ha.request(
            "POST",
            "/api/config/automation/config/device_trigger_sad",
            {
                "alias": "device trigger: sad started",
                "triggers": [sad_started],
                "conditions": [],
                "actions": [],
            },
        )
        wait_until(lambda: automation_by_id(ha, "device_trigger_sad") is not None, 20, what="the automation")
        # QoS 1 on every topic of the device that HA subscribed to (HA 2025.4 ignores the device-level qos).
        subs = subscriptions(env.broker, device_id)
        assert f"emotion_edge/{device_id}/event" in subs and f"emotion_edge/{device_id}/state" in subs
        assert all(levels == {1} for levels in subs.values()), subs

        # SIGTERM: unavailable; a restart (which replays the recording from the start) brings them back.
        assert daemon.stop() == 0
        wait_until(lambda: all_unavailable(ha, entities), 20, interval=0.2, what="unavailable after SIGTERM")
        replay_started = time.monotonic()
        daemon = Daemon(config, tmp_path)
        wait_until(lambda: all_available(ha, entities), 30, interval=0.2, what="available after restart")

        # The replay: the sensor follows the segments, and the event entity fires new, update and end.
        wait_until(lambda: "EMG input ended" in daemon.log, 90, interval=0.5, what="the end of the replay")
        # No spurious flips from the restart (the previous run's "on" shown, then "off", then "on"): once
        # on, a modality stays on until the recording ends. (The camera may show "off" until it opened.)
        for key in ("emg_available", "camera_available"):
            flips = [st["state"] for st in changes.of(entities[key], replay_started)]
            assert "on" in flips and "on" not in flips[flips.index("on") + 1 :], (key, flips)
        emotions = [s["state"] for s in changes.of(entities["emotion"], replay_started)]
        seen = [e for i, e in enumerate(emotions) if e in SEGMENTS and e not in emotions[:i]]
        assert seen == SEGMENTS, emotions
        fired = {s["attributes"].get("event_type") for s in changes.of(entities["episode"], replay_started)}
        assert {"new", "update", "end"} <= fired, fired
        # After the recording: uncertain at 0 %, and no probabilities left over as attributes.
        wait_state(ha, entities["emotion"], lambda s: s == "uncertain", 10)
        attributes = ha.state(entities["emotion"])["attributes"]  # type: ignore[index]
        assert not set(SEGMENTS) & attributes.keys(), attributes
        assert float(ha.state(entities["confidence"])["state"]) == 0.0  # type: ignore[index]
        # Label and probabilities agree in every state HA recorded: the label is at least exit_threshold.
        for s in changes.of(entities["emotion"], replay_started):
            if s["state"] in SEGMENTS:
                assert s["attributes"][s["state"]] >= 0.45, s
                assert s["attributes"]["confidence"] == s["attributes"][s["state"]], s

        # The example automations (as shipped) and the device trigger all ran on the sad episode.
        for automation_id in (
            "emotion_edge_sad_warm_light",
            "emotion_edge_sad_episode_over",
            "device_trigger_sad",
        ):
            wait_until(
                partial(triggered, ha, automation_id), 10, what=f"automation {automation_id} to trigger"
            )
        assert daemon.stop() == 0
        assert ha.integration_problems() == []
    finally:
        daemon.kill()
        changes.close()


def test_recorder_budget_switches_and_sigkill(env: Env, tmp_path: Path, emg_csv: Path) -> None:
    ha, device_id = env.ha, "budget_pi"
    entities = ids(device_id, camera=False)
    happy = one_segment(emg_csv, "happy", tmp_path / "happy.csv")
    config = config_for(
        env, device_id, replay_emg(happy, speed=1, loop=True), camera=False, tmp_path=tmp_path
    )
    changes = StateChanges(ha)
    daemon = Daemon(config, tmp_path)
    try:
        wait_until(lambda: all_available(ha, entities), 60, interval=0.5, what="the entities")
        # camera.source = "off": no camera entities at all.
        device = device_of(ha, device_id)
        assert sorted(e["entity_id"] for e in registry_entities(ha, device)) == sorted(entities.values())

        # One emotion held for a minute: how often does each sensor change?
        wait_state(ha, entities["emotion"], lambda s: s == "happy", 30)
        start = time.monotonic()
        time.sleep(61)
        minutes = (time.monotonic() - start) / 60
        per_minute = {
            key: len(changes.of(entities[key], start)) / minutes for key in ("emotion", "confidence")
        }
        print(f"\nstate changes per minute while happy holds: {per_minute}")
        assert {s["state"] for s in changes.of(entities["emotion"], start)} <= {"happy"}
        assert all(rate <= 2 for rate in per_minute.values()), per_minute

        # Switches: HA's command reaches the daemon, which confirms it (the switch is not optimistic).
        ha.call("switch", "turn_on", entity_id=entities["emg_paused"])
        wait_state(ha, entities["emg_paused"], lambda s: s == "on", 10)
        wait_state(ha, entities["emg_available"], lambda s: s == "off", 10)
        assert "emg_paused -> ON" in daemon.log
        resumed = time.monotonic()
        ha.call("switch", "turn_off", entity_id=entities["emg_paused"])
        wait_state(ha, entities["emg_paused"], lambda s: s == "off", 10)
        wait_state(ha, entities["emg_available"], lambda s: s == "on", 10)
        assert "emg_paused -> OFF" in daemon.log

        # SIGKILL with an episode open: unavailable (last will); the next start ends that episode.
        wait_until(
            lambda: any(
                s["attributes"].get("event_type") == "new" for s in changes.of(entities["episode"], resumed)
            ),
            30,
            what="a new episode after the pause",
        )
        (cut,) = {
            s["attributes"]["id"]
            for s in changes.of(entities["episode"], resumed)
            if s["attributes"].get("event_type") == "new"
        }
        daemon.signal(signal.SIGKILL)
        daemon.wait(10)
        wait_until(lambda: all_unavailable(ha, entities), 30, interval=0.2, what="unavailable after SIGKILL")
        daemon = Daemon(config, tmp_path)
        changes.wait_for(
            entities["episode"],
            lambda s: (
                (s["attributes"].get("id"), s["attributes"].get("event_type"), s["attributes"].get("reason"))
                == (cut, "end", "restart")
            ),
            30,
        )
        wait_until(lambda: all_available(ha, entities), 30, interval=0.2, what="available after restart")
        assert daemon.stop() == 0
        assert ha.integration_problems() == []
    finally:
        daemon.kill()
        changes.close()


def test_home_assistant_restart_keeps_entities_without_duplicates(
    env: Env, tmp_path: Path, emg_csv: Path
) -> None:
    ha, device_id = env.ha, "restart_pi"
    entities = ids(device_id, camera=False)
    daemon = Daemon(
        config_for(env, device_id, replay_emg(emg_csv, speed=1, loop=True), False, tmp_path), tmp_path
    )
    try:
        wait_until(lambda: all_available(ha, entities), 60, interval=0.5, what="the entities")
        before = sorted(e["entity_id"] for e in ha.ws({"type": "config/entity_registry/list"}))
        ha.restart()
        wait_until(
            lambda: all_available(ha, entities), 60, interval=0.5, what="the entities after HA's restart"
        )
        after = sorted(e["entity_id"] for e in ha.ws({"type": "config/entity_registry/list"}))
        assert after == before
        assert not [
            e
            for e in after
            if re.search(r"_\d+$", e)
            and e.startswith(tuple(p + "." for p in ("sensor", "event", "switch", "binary_sensor")))
        ]
        assert daemon.stop() == 0
        assert ha.integration_problems() == []
    finally:
        daemon.kill()
