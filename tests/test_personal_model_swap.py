"""A running daemon swaps to a newly activated personal model and back, losing no event.

A real daemon process replays a calibration session (looping, 10x real time) to a real mosquitto.
It starts on the shipped generic model (six emotions, no "neutral"); ``emotion-edge models
activate`` then makes a personal model active and sends the daemon SIGHUP; ``models rollback``
brings the generic one back. Throughout:

- the event sequence numbers have no gap and every episode opens and closes exactly once;
- the EMG stage is never restarted (its sample counter in ``stats`` only grows), so the replay
  source and its queue ran on untouched;
- after the swap the events carry the personal model's labels ("neutral" included) and a
  neutral episode opens on the session's rest blocks; after the rollback they no longer do.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from edge.calibration.store import PersonalModelStore
from tests.conftest import REPO
from tests.harness import Daemon, Mosquitto, Subscriber, daemon_config, event_seqs, replay_emg, wait_until
from tests.test_calibration_offline import build_session

BASE = "emotion_edge/test_pi"
EVENTS = f"{BASE}/event"
STATS = f"{BASE}/stats"


def models_cli(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "edge.cli", "models", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def unique(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Deduplicated by seq: QoS 1 may deliver an event twice."""
    seen: dict[int, dict[str, Any]] = {}
    for e in events:
        seen.setdefault(e["seq"], e)
    return [seen[s] for s in sorted(seen)]


def test_activate_and_rollback_hot_swap_the_running_model(tmp_path: Path, emg_csv: Path) -> None:
    session = build_session(emg_csv, tmp_path / "session.csv", rep_column=True)
    store = PersonalModelStore(tmp_path)  # the daemon's state dir: its outbox is in tmp_path
    model_id = store.new_id()
    store.recording_path(model_id).write_bytes(session.read_bytes())
    assert store.calibrate(model_id).activated
    store.rollback()  # the daemon starts on the shipped model
    assert store.active() is None

    broker = Mosquitto(tmp_path / "broker").start()
    sub = Subscriber(broker.port, [f"{BASE}/#"])
    config = daemon_config(
        tmp_path, broker.port, emg=replay_emg(session, speed=10, loop=True), stats_interval_s=0.2
    )
    daemon = Daemon(config, tmp_path)

    def events() -> list[dict[str, Any]]:
        return unique(sub.json_on(EVENTS))

    try:
        sub.wait_for(f"{BASE}/availability", lambda m: b"online" in m)
        wait_until(lambda: sum(e["type"] == "new" for e in events()) >= 3, 60, what="3 episodes")
        before = events()
        assert all("neutral" not in e["probs"] for e in before)

        out = models_cli("activate", model_id, "--config", str(config))
        assert f"activated {model_id}" in out and "is reloading" in out
        swap_seq = events()[-1]["seq"]

        def neutral_episode_after(seq: int) -> bool:
            return any(e["seq"] > seq and e["type"] == "new" and e["emotion"] == "neutral" for e in events())

        wait_until(lambda: neutral_episode_after(swap_seq), 60, what="a neutral episode after the swap")

        out = models_cli("rollback", "--config", str(config))
        assert "rolled back to the shipped generic model" in out
        rollback_seq = events()[-1]["seq"]

        def generic_episodes_after_rollback() -> int:
            later = [e for e in events() if e["seq"] > rollback_seq]
            first = next((i for i, e in enumerate(later) if "neutral" not in e["probs"]), len(later))
            return sum(e["type"] == "new" for e in later[first:])

        wait_until(lambda: generic_episodes_after_rollback() >= 3, 60, what="3 episodes after the rollback")
        time.sleep(0.5)  # one more stats message
        assert daemon.stop() == 0
        sub.wait_for(f"{BASE}/availability", lambda m: m[-1] == b"stopped")
    finally:
        daemon.kill()
        sub.close()
        broker.stop()

    log = daemon.log
    assert log.count("configuration reloaded") == 2, log[-3000:]
    assert "Traceback" not in log and " ERROR " not in log

    got = events()
    seqs = event_seqs(got)
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "an event was lost"
    for episode in {e["id"] for e in got}:
        kinds = [e["type"] for e in got if e["id"] == episode]
        assert kinds[0] == "new" and kinds[-1] == "end" and kinds.count("new") == kinds.count("end") == 1
    # The personal model's labels after the swap, for good; the shipped model's again after the
    # rollback, for good (events decided while the reload was still loading may come first).
    for since, has_neutral in ((swap_seq, True), (rollback_seq, False)):
        later = [e for e in got if e["seq"] > since]
        switched = next(i for i, e in enumerate(later) if ("neutral" in e["probs"]) == has_neutral)
        until = rollback_seq if has_neutral else seqs[-1]
        assert switched <= 3, later[: switched + 1]
        assert all(("neutral" in e["probs"]) == has_neutral for e in later[switched:] if e["seq"] <= until)

    samples = [json.loads(p)["emg"]["samples"] for p in sub.on(STATS) if b'"emg"' in p]
    assert len(samples) > 10 and samples == sorted(samples), "the EMG stage was restarted"
