"""What a restart and a steady emotion look like on the broker: the topics Home Assistant reads.

* ``online`` comes last after a (re)start, so the previous run's retained values never show as current;
* an episode cut off by SIGKILL gets its ``end`` (``"reason": "restart"``) from the next run;
* while one emotion holds, the retained state respects the recorder budget.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.harness import Daemon, Mosquitto, Subscriber, daemon_config, one_segment, replay_emg, wait_until

BASE = "emotion_edge/test_pi"


@pytest.fixture
def happy_loop(tmp_path: Path, emg_csv: Path) -> Path:
    return one_segment(emg_csv, "happy", tmp_path / "happy.csv")


@contextmanager
def broker_watching(tmp_path: Path, recording: Path, topics: list[str]) -> Iterator[tuple[Subscriber, Path]]:
    """A broker, a subscriber to ``topics`` and the config of a daemon replaying ``recording`` in a loop."""
    broker = Mosquitto(tmp_path / "broker").start()
    sub = Subscriber(broker.port, topics)
    try:
        yield sub, daemon_config(tmp_path, broker.port, emg=replay_emg(recording, speed=1, loop=True))
    finally:
        sub.close()
        broker.stop()


def since(sub: Subscriber, start: float) -> list[tuple[str, bytes]]:
    with sub._lock:
        return [(topic, payload) for t, topic, payload, _ in sub.messages if t >= start]


def test_online_comes_after_state_and_availability(tmp_path: Path, happy_loop: Path) -> None:
    online = (f"{BASE}/availability", b"online")
    with broker_watching(tmp_path, happy_loop, [f"{BASE}/#"]) as (sub, config):
        for _ in range(2):  # the second start finds the first run's retained values on the broker
            start = time.monotonic()
            daemon = Daemon(config, tmp_path)
            try:
                wait_until(lambda start=start: online in since(sub, start), 20, what="online")  # type: ignore[misc]
                messages = since(sub, start)
                before = {topic for topic, _ in messages[: messages.index(online)]}
                assert {f"{BASE}/state", f"{BASE}/modality/emg/available"} <= before, messages
                assert daemon.stop() == 0
            finally:
                daemon.kill()


def test_episode_cut_by_sigkill_ends_on_restart(tmp_path: Path, happy_loop: Path) -> None:
    with broker_watching(tmp_path, happy_loop, [f"{BASE}/event"]) as (sub, config):
        daemon = Daemon(config, tmp_path)
        try:
            sub.wait_for(
                f"{BASE}/event", lambda m: any(json.loads(p)["type"] == "new" for p in m), timeout=30
            )
            daemon.signal(signal.SIGKILL)
            daemon.wait(10)
            (cut,) = {e["id"] for e in sub.json_on(f"{BASE}/event") if e["type"] == "new"}
            daemon = Daemon(config, tmp_path)

            def ends() -> list[dict[str, object]]:
                return [e for e in sub.json_on(f"{BASE}/event") if e["type"] == "end" and e["id"] == cut]

            wait_until(lambda: bool(ends()), 30, what=f"the end of episode {cut}")
            end = ends()[0]
            assert end["reason"] == "restart" and end["emotion"] == "happy"
            # Ended once: a third start does not end it again.
            assert daemon.stop() == 0
            daemon = Daemon(config, tmp_path)
            sub.wait_for(
                f"{BASE}/event", lambda m: sum(json.loads(p)["type"] == "new" for p in m) >= 3, timeout=30
            )
            assert daemon.stop() == 0
            assert len({e["seq"] for e in ends()}) == 1
        finally:
            daemon.kill()


def test_state_within_recorder_budget_while_one_emotion_holds(tmp_path: Path, happy_loop: Path) -> None:
    """Default budget: at most one re-publish per 30 s while happy holds (main re-sent it every second)."""
    with broker_watching(tmp_path, happy_loop, [f"{BASE}/state", f"{BASE}/event"]) as (sub, config):
        daemon = Daemon(config, tmp_path)
        try:
            wait_until(
                lambda: any(json.loads(p)["emotion"] == "happy" for p in sub.on(f"{BASE}/state")),
                30,
                what="happy",
            )
            start = time.monotonic()
            time.sleep(20)
            states = [json.loads(p) for topic, p in since(sub, start) if topic == f"{BASE}/state"]
            new_events = [e for e in sub.json_on(f"{BASE}/event") if e["type"] == "new"]
            assert len(new_events) == 1, "one emotion must hold for this measurement"
            assert len(states) <= 1, states
            assert daemon.stop() == 0
        finally:
            daemon.kill()


def test_reload_resends_discovery_with_the_new_device_name(tmp_path: Path, happy_loop: Path) -> None:
    discovery = "homeassistant/device/test_pi/config"
    with broker_watching(tmp_path, happy_loop, [discovery]) as (sub, config):
        daemon = Daemon(config, tmp_path)
        try:
            sub.wait_for(discovery, lambda m: len(m) >= 1)
            assert json.loads(sub.on(discovery)[-1])["dev"]["name"] == "Test pi"
            config.write_text('device_name = "Sofa"\n' + config.read_text())
            daemon.signal(signal.SIGHUP)
            sub.wait_for(discovery, lambda m: json.loads(m[-1])["dev"]["name"] == "Sofa", timeout=20)
            assert daemon.stop() == 0
        finally:
            daemon.kill()
