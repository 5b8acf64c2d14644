"""The README's main job: `emotion-edge demo` with an embedded broker, both kinds."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO


@pytest.mark.parametrize("broker", ["amqtt", "mosquitto"])
def test_demo_replays_to_embedded_broker_and_shows_events(emg_csv: Path, broker: str, tmp_path: Path) -> None:
    if broker == "mosquitto":
        from tests.harness import mosquitto_binary

        mosquitto_binary()
    env = {
        **os.environ,
        "EMOTION_EDGE_EMBEDDED_BROKER": broker,
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "HOME": str(tmp_path),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "edge.cli", "demo", "--emg-file", str(emg_csv), "--speed", "max"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "availability: online" in out
    news = [line.split()[3] for line in out.splitlines() if line.startswith("event #") and " new " in line]
    assert news == ["happy", "angry", "surprise", "fear", "sad", "disgust"], out
    assert "availability: stopped" in out


def test_demo_offline_says_what_to_pass(tmp_path: Path) -> None:
    # A cache dir with no copy and a URL that cannot be reached from here: the exact hint.
    env = {
        **os.environ,
        "HOME": str(tmp_path),
        "https_proxy": "http://127.0.0.1:9",
        "HTTPS_PROXY": "http://127.0.0.1:9",
    }
    proc = subprocess.run(
        [sys.executable, "-m", "edge.cli", "demo", "--cache-dir", str(tmp_path / "cache")],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 69
    assert "--emg-file ../shared/data/emg/emg_train.csv" in proc.stderr
    assert "cdb885c23f14cf1c86731d3edf298b07f09a7f87597791e8f24e06104412cd95" in proc.stderr
