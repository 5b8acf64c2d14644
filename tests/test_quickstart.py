"""The README's main job: `emotion-edge demo` with an embedded broker, both kinds."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.harness import wait_until


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


def _children(pid: int) -> list[int]:
    """Direct child processes of ``pid``, from /proc (Linux)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # Fields after the ")" that closes the command name: state, ppid, ...
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
        if ppid == pid:
            found.append(int(stat.parent.name))
    return found


def _running(pid: int) -> bool:
    """Alive and not a zombie (a dead child waiting for whoever inherited it to reap it)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _embedded_mosquitto(daemon: subprocess.Popen[bytes]) -> int:
    brokers = [p for p in _children(daemon.pid) if Path(f"/proc/{p}/comm").read_text().strip() == "mosquitto"]
    assert len(brokers) == 1, f"expected one embedded mosquitto under pid {daemon.pid}, found {brokers}"
    return brokers[0]


def _replay_process(emg_csv: Path, tmp_path: Path, speed: str) -> subprocess.Popen[bytes]:
    from tests.harness import mosquitto_binary

    mosquitto_binary()
    env = {**os.environ, "EMOTION_EDGE_EMBEDDED_BROKER": "mosquitto", "TMPDIR": str(tmp_path)}
    with (tmp_path / "stderr.log").open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "edge.cli", "replay", str(emg_csv), "--print-events", "--speed", speed],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=log,
        )


def _reap(proc: subprocess.Popen[bytes], broker: int | None) -> None:
    """Clean up after a failed assertion: the daemon and the broker this test started."""
    if proc.poll() is None:
        proc.kill()
        proc.wait(10)
    if broker is not None and _running(broker):
        os.kill(broker, signal.SIGKILL)


def test_replay_into_a_closed_pipe_exits_promptly(emg_csv: Path, tmp_path: Path) -> None:
    """``replay --print-events | head -1``: the reader goes away, the replay stops, the broker with it."""
    # In real time the recording lasts 24 s and the next event comes about 5 s after the first: an exit
    # within 15 s of closing the pipe is the broken pipe stopping the replay, not the replay running out.
    proc = _replay_process(emg_csv, tmp_path, speed="1")
    broker = None
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first.startswith(b"{"), (tmp_path / "stderr.log").read_text()
        broker = _embedded_mosquitto(proc)
        proc.stdout.close()
        code = proc.wait(timeout=15)
        stderr = (tmp_path / "stderr.log").read_text()
        assert code in (0, 141), stderr
        assert "Traceback" not in stderr and "BrokenPipe" not in stderr, stderr
        wait_until(lambda: not _running(broker), 5, what="the embedded broker to stop")
    finally:
        _reap(proc, broker)


def test_embedded_broker_dies_with_a_killed_daemon(emg_csv: Path, tmp_path: Path) -> None:
    """SIGKILL skips every cleanup in the daemon; the kernel still takes the broker down with it."""
    proc = _replay_process(emg_csv, tmp_path, speed="1")
    broker = None
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith(b"{"), (tmp_path / "stderr.log").read_text()
        broker = _embedded_mosquitto(proc)
        proc.kill()
        proc.wait(10)
        wait_until(lambda: not _running(broker), 5, what="the orphaned broker to exit")
    finally:
        _reap(proc, broker)


@pytest.mark.parametrize("command", ["replay", "demo"])
def test_replay_and_demo_leave_no_state_behind(emg_csv: Path, tmp_path: Path, command: str) -> None:
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    args = [str(emg_csv)] if command == "replay" else ["--emg-file", str(emg_csv)]
    env = {**os.environ, "TMPDIR": str(tmpdir), "HOME": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, "-m", "edge.cli", command, *args, "--speed", "max"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in tmpdir.iterdir()) == []


def test_demo_reads_a_relative_emg_file_from_the_current_directory(emg_csv: Path, tmp_path: Path) -> None:
    here = tmp_path / "elsewhere"
    (here / "data").mkdir(parents=True)
    (here / "data" / "mine.csv").write_bytes(emg_csv.read_bytes())
    env = {**os.environ, "HOME": str(tmp_path), "TMPDIR": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, "-m", "edge.cli", "demo", "--emg-file", "data/mine.csv", "--speed", "max"],
        cwd=here,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "replaying data/mine.csv" in proc.stdout
    assert "(recording says: happy)" in proc.stdout
