"""A running daemon swaps to a newly activated personal model and back, losing no event.

A real daemon process replays a calibration session (looping, 10x real time) to a real mosquitto.
It starts on the active personal model (seven labels with "neutral"); ``emotion-edge models
rollback`` makes the shipped generic model (six emotions) active again and sends the daemon
SIGHUP; ``models activate`` brings the personal one back. Throughout:

- the event sequence numbers have no gap and every episode opens and closes exactly once;
- the EMG stage is never restarted (its sample counter in ``stats`` only grows), so the replay
  source and its queue ran on untouched;
- in each phase the events carry that model's labels (with the personal model, "neutral" is
  among them and a neutral episode opens on the session's rest blocks).
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


def test_start_rollback_and_activate_hot_swap_the_running_model(tmp_path: Path, emg_csv: Path) -> None:
    session = build_session(emg_csv, tmp_path / "session.csv", rep_column=True)
    store = PersonalModelStore(tmp_path)  # the daemon's state dir: its outbox is in tmp_path
    model_id = store.new_id()
    store.recording_path(model_id).write_bytes(session.read_bytes())
    assert store.calibrate(model_id).activated

    broker = Mosquitto(tmp_path / "broker").start()
    sub = Subscriber(broker.port, [f"{BASE}/#"])
    config = daemon_config(
        tmp_path, broker.port, emg=replay_emg(session, speed=10, loop=True), stats_interval_s=0.2
    )
    daemon = Daemon(config, tmp_path)

    def events() -> list[dict[str, Any]]:
        return unique(sub.json_on(EVENTS))

    def settled_episodes(since: int, personal: bool) -> int:
        """``new`` events after seq ``since`` from the moment the events carry the expected model's
        labels ("neutral" is the personal model's); a personal model must also have found rest."""
        later = [e for e in events() if e["seq"] > since]
        first = next((i for i, e in enumerate(later) if ("neutral" in e["probs"]) == personal), len(later))
        news = [e["emotion"] for e in later[first:] if e["type"] == "new"]
        return len(news) if not personal or "neutral" in news else 0

    # (command, personal model expected afterwards); the daemon starts on the active personal model.
    phases: list[tuple[list[str], bool]] = [
        ([], True),
        (["rollback"], False),
        (["activate", model_id], True),
    ]
    boundaries: list[tuple[int, bool]] = []
    try:
        sub.wait_for(f"{BASE}/availability", lambda m: b"online" in m)
        for command, personal in phases:
            # Taken before the command: the daemon may have swapped before the command returns.
            since = events()[-1]["seq"] if command else -1
            if command:
                out = models_cli(*command, "--config", str(config))
                assert "is reloading" in out, out
            boundaries.append((since, personal))
            wait_until(
                lambda s=since, p=personal: settled_episodes(s, p) >= 3,  # type: ignore[misc]
                60,
                what=f"3 episodes after {command or 'the start'}",
            )
        time.sleep(0.5)  # one more stats message
        assert daemon.stop() == 0
        sub.wait_for(f"{BASE}/availability", lambda m: m[-1] == b"stopped")
    finally:
        daemon.kill()
        sub.close()
        broker.stop()

    log = daemon.log
    assert "EMG model: personal" in log and log.count("configuration reloaded") == 2, log[-3000:]
    assert "Traceback" not in log and " ERROR " not in log

    got = events()
    seqs = event_seqs(got)
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "an event was lost"
    for episode in {e["id"] for e in got}:
        kinds = [e["type"] for e in got if e["id"] == episode]
        assert kinds[0] == "new" and kinds[-1] == "end" and kinds.count("new") == kinds.count("end") == 1
    # Each phase: the previous model's events while the command and the reload ran, then the
    # phase's model, for good (never back and forth).
    ends = [b for b, _ in boundaries[1:]] + [seqs[-1]]
    for (since, personal), until in zip(boundaries, ends, strict=True):
        phase = [("neutral" in e["probs"]) == personal for e in got if since < e["seq"] <= until]
        assert True in phase and all(phase[phase.index(True) :]), phase
        assert since >= 0 or all(phase), "the daemon did not start on the active personal model"

    samples = [json.loads(p)["emg"]["samples"] for p in sub.on(STATS) if b'"emg"' in p]
    assert len(samples) > 10 and samples == sorted(samples), "the EMG stage was restarted"
