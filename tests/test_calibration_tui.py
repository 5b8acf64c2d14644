"""``emotion-edge calibrate`` without a recording: the terminal front-end of a session.

Through a running daemon (it owns the port; Ctrl-C cancels) and on its own when no daemon runs
(it opens the port itself). The person is tests/calibration_wearer.py on a pty, as in
tests/test_calibration_e2e.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from edge.calibration.store import PersonalModelStore
from edge.calibration.tui import render
from tests.conftest import REPO
from tests.harness import wait_until
from tests.test_calibration_e2e import SESSION_S, Wearer, start, start_without_daemon, teardown


def tui(config: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "edge.cli", "calibrate", "--config", str(config)],
        cwd=REPO,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def recordings(wearer: Wearer) -> int:
    return sum(p.startswith("record") for p in wearer.said("PHASE"))


def test_render_shows_prompt_countdown_levels_and_progress() -> None:
    snap = {
        "phase": "record",
        "prompt": "Show happy",
        "remaining_s": 2.34,
        "step": 5,
        "steps": 21,
        "progress": 0.25,
        "levels": [0.5, 0.0, 1.0],
        "channels": ["ok", "flat", "saturated"],
        "message": "repeating happy: check electrode 2 (zygomaticus): flat",
    }
    lines = render(snap, width=60)
    assert lines[0].startswith("Calibration  step 5/21  [#####               ]  25%")
    assert lines[1] == "  >> Show happy   2.3 s"
    assert lines[2] == "  EMG1 corrugator   [##########          ] ok"
    assert lines[3] == "  EMG2 zygomaticus  [                    ] flat"
    assert lines[4] == "  EMG3 depressor    [####################] saturated"
    assert "check electrode 2" in lines[5]


def test_ctrl_c_in_the_terminal_cancels_the_daemons_session(tmp_path: Path, emg_csv: Path) -> None:
    broker, sub, wearer, daemon, state = start(tmp_path, emg_csv)
    try:
        wait_until((state / "calibration.sock").exists, 30, what="the control socket")
        proc = tui(daemon.config)
        wait_until(lambda: recordings(wearer) >= 4, 30, what="4 recordings")
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=20)
        assert daemon.proc.poll() is None
        assert daemon.stop() == 0
    finally:
        teardown(broker, sub, wearer, daemon)
    print(out)
    assert proc.returncode == 75, out
    assert "Calibration cancelled: cancelled: nothing was changed" in out
    assert "] record: Show " in out and "] countdown: get ready: " in out, out
    assert PersonalModelStore(state).active() is None and PersonalModelStore(state).list_models() == []
    assert "calibration session cancelled" in daemon.log
    assert "Traceback" not in daemon.log


def test_without_a_daemon_the_terminal_runs_the_session_on_the_port(tmp_path: Path, emg_csv: Path) -> None:
    broker, sub, wearer, config, state = start_without_daemon(tmp_path, emg_csv)
    proc = tui(config)
    try:
        # It holds the daemon's lock, so `emotion-edge models activate` would signal it to reload:
        # SIGHUP mid-session must not end it.
        wait_until(lambda: recordings(wearer) >= 1, 60, what="the first repetition")
        proc.send_signal(signal.SIGHUP)
        out, _ = proc.communicate(timeout=SESSION_S + 90)
    finally:
        if proc.poll() is None:
            proc.kill()
        teardown(broker, sub, wearer)
    print(out)
    assert proc.returncode == 0, out
    assert "no daemon is running" in out
    assert "Calibration done: accuracy" in out
    active = PersonalModelStore(state).active()
    assert active is not None and active.exists()


def test_a_state_directory_too_deep_for_a_unix_socket_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    # AF_UNIX paths stop at 107 bytes; the state directory is the outbox's folder.
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    config = tmp_path / "config.toml"
    config.write_text(f'[outbox]\npath = "{deep / "outbox.sqlite3"}"\n')
    proc = tui(config)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == os.EX_UNAVAILABLE, out
    assert "Traceback" not in out and out.strip().count("\n") == 0, out
    assert "emotion-edge: calibrate: cannot reach" in out
