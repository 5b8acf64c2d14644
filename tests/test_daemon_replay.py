"""The daemon as a process, replaying the real recording to a real mosquitto."""

from __future__ import annotations

import json
import signal
from pathlib import Path

from tests.harness import (
    Daemon,
    Mosquitto,
    Subscriber,
    daemon_config,
    event_seqs,
    new_episode_emotions,
    replay_emg,
    wait_until,
)

SEGMENTS = ["happy", "angry", "surprise", "fear", "sad", "disgust"]
BASE = "emotion_edge/test_pi"


def test_replay_events_follow_segments_and_lifecycle_topics(tmp_path: Path, emg_csv: Path) -> None:
    broker = Mosquitto(tmp_path / "broker").start()
    sub = Subscriber(broker.port, [f"{BASE}/#", "homeassistant/device/#"])
    daemon = Daemon(daemon_config(tmp_path, broker.port, emg=replay_emg(emg_csv, speed=20)), tmp_path)
    try:
        sub.wait_for(f"{BASE}/availability", lambda m: b"online" in m)
        # The replay ends after the disgust segment, which closes the last episode.
        # (Matched on the parsed event: every event's probs name disgust too.)
        sub.wait_for(
            f"{BASE}/event",
            lambda m: any(e["type"] == "end" and e["emotion"] == "disgust" for e in map(json.loads, m)),
            timeout=60,
        )
        assert daemon.stop() == 0
        sub.wait_for(f"{BASE}/availability", lambda m: m[-1] == b"stopped")
    finally:
        daemon.kill()
        sub.close()
        broker.stop()
    events = sub.json_on(f"{BASE}/event")
    seqs = event_seqs(events)
    assert seqs == sorted(seqs) and seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    emotions = new_episode_emotions(events)
    assert emotions[: len(SEGMENTS)] == SEGMENTS, emotions
    for ev in events:
        assert {"type", "id", "seq", "emotion", "confidence", "probs", "ts", "modalities"} <= ev.keys()
        assert ev["modalities"] in (["emg"], [])
    # Every episode id opens with new and closes with end exactly once.
    ids = {e["id"] for e in events}
    for episode in ids:
        kinds = [e["type"] for e in events if e["id"] == episode]
        assert kinds[0] == "new" and kinds[-1] == "end" and kinds.count("new") == kinds.count("end") == 1
    state = json.loads(sub.last(f"{BASE}/state") or b"{}")
    assert {"emotion", "confidence", "probs", "modalities", "ts"} <= state.keys()
    assert "Traceback" not in daemon.log


def test_sigkill_leaves_offline_last_will(tmp_path: Path, emg_csv: Path) -> None:
    broker = Mosquitto(tmp_path / "broker").start()
    sub = Subscriber(broker.port, [f"{BASE}/availability"])
    daemon = Daemon(
        daemon_config(tmp_path, broker.port, emg=replay_emg(emg_csv, speed=1, loop=True)), tmp_path
    )
    try:
        sub.wait_for(f"{BASE}/availability", lambda m: m[-1:] == [b"online"])
        daemon.signal(signal.SIGKILL)
        daemon.wait()
        sub.wait_for(f"{BASE}/availability", lambda m: m[-1] == b"offline", timeout=15)
        # The will is retained: a client connecting later still learns the device is offline.
        late = Subscriber(broker.port, [f"{BASE}/availability"])
        wait_until(lambda: late.on(f"{BASE}/availability") == [b"offline"], 5)
        late.close()
    finally:
        daemon.kill()
        sub.close()
        broker.stop()


def _replay_events(emg_csv: Path, speed: str, tmp_path: Path) -> list[dict[str, object]]:
    import os
    import subprocess
    import sys

    from tests.conftest import REPO

    env = {
        **os.environ,
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "EMOTION_EDGE__OUTBOX__PATH": str(tmp_path / f"{speed}.db"),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "edge.cli", "replay", str(emg_csv), "--speed", speed, "--print-events"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    # Identity and wall-clock fields differ by design; everything decided must not.
    return [{k: v for k, v in e.items() if k not in ("id", "ts", "generation")} for e in events]


def test_replay_is_deterministic_at_any_speed(tmp_path: Path, emg_csv: Path) -> None:
    first = _replay_events(emg_csv, "max", tmp_path / "a")
    assert first == _replay_events(emg_csv, "max", tmp_path / "b")
    assert first == _replay_events(emg_csv, "40", tmp_path / "c")
    assert [e["emotion"] for e in first if e["type"] == "new"] == SEGMENTS
