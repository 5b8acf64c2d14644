"""Ordinary mistakes on the command line: one ``emotion-edge: `` line on stderr and a sysexits code.

64 EX_USAGE: a bad command-line value; 65 EX_DATAERR: a malformed input file; 66 EX_NOINPUT: an input
file that is missing or cannot be read. Never a traceback, and nothing started before the check.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, shared_file

EX_USAGE, EX_DATAERR, EX_NOINPUT = 64, 65, 66


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    # HOME in the test's folder: a demo that got past its checks would not touch the real cache.
    env = {**os.environ, "HOME": str(cwd)}
    return subprocess.run(
        [sys.executable, "-m", "edge.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def assert_one_line_error(proc: subprocess.CompletedProcess[str], code: int, fragment: str) -> str:
    lines = proc.stderr.splitlines()
    assert proc.returncode == code, proc.stderr[-3000:]
    assert len(lines) == 1, proc.stderr[-3000:]
    assert lines[0].startswith("emotion-edge: "), lines[0]
    assert fragment in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def bad_files(tmp_path: Path) -> dict[str, Path]:
    header = tmp_path / "header.csv"
    header.write_text("a,b,c\n1,2,3\n")
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    return {
        "missing": tmp_path / "no-such-recording.csv",
        "npz": shared_file("fer2013/fer2013.npz"),
        "header": header,
        "empty": empty,
    }


@pytest.mark.parametrize("command", ["replay", "demo"])
@pytest.mark.parametrize(
    ("which", "code", "fragment"),
    [
        ("missing", EX_NOINPUT, "no-such-recording.csv"),
        ("npz", EX_DATAERR, "not a CSV text file"),
        ("header", EX_DATAERR, "missing column(s) EMG1, EMG2, EMG3"),
        ("empty", EX_DATAERR, "empty"),
    ],
)
def test_bad_recording_is_one_line(
    bad_files: dict[str, Path], tmp_path: Path, command: str, which: str, code: int, fragment: str
) -> None:
    path = str(bad_files[which])
    args = ["replay", path] if command == "replay" else ["demo", "--emg-file", path]
    proc = run_cli(*args, "--speed", "max", cwd=tmp_path)
    assert_one_line_error(proc, code, fragment)
    assert proc.stdout == ""


@pytest.mark.parametrize("speed", ["fast", "0", "-2", "nan", "inf"])
@pytest.mark.parametrize("command", ["replay", "demo"])
def test_bad_speed_is_a_usage_error(emg_csv: Path, tmp_path: Path, command: str, speed: str) -> None:
    args = ["replay", str(emg_csv)] if command == "replay" else ["demo", "--emg-file", str(emg_csv)]
    proc = run_cli(*args, "--speed", speed, cwd=tmp_path)
    line = assert_one_line_error(proc, EX_USAGE, "--speed must be")
    # The value came from the command line: no environment variable to blame.
    assert "EMOTION_EDGE__" not in line and "environment" not in line


def test_demo_checks_speed_before_downloading(tmp_path: Path) -> None:
    # No --emg-file: a bad --speed must fail at once, not after (or instead of) a download.
    proc = run_cli("demo", "--speed", "fast", "--cache-dir", str(tmp_path / "cache"), cwd=tmp_path)
    assert_one_line_error(proc, EX_USAGE, "--speed must be")
    assert not (tmp_path / "cache").exists()


@pytest.mark.parametrize(
    ("args", "code", "fragment"),
    [
        (["emg", "--data", "missing.csv"], EX_NOINPUT, "missing.csv"),
        (["face", "--data", "missing.npz"], EX_NOINPUT, "missing.npz"),
        (["emg", "--data", "{npz}"], EX_DATAERR, "not a CSV text file"),
        (["emg", "--data", "{emg}", "--model", "missing.tflite"], EX_NOINPUT, "model file not found"),
        (["emg", "--data", "{emg}", "--hop", "0"], EX_USAGE, "--hop must be"),
        (["face", "--data", "{npz}", "--usage", "public"], EX_USAGE, "--usage must be"),
    ],
)
def test_evaluate_errors_use_sysexits(
    emg_csv: Path, tmp_path: Path, args: list[str], code: int, fragment: str
) -> None:
    npz = str(shared_file("fer2013/fer2013.npz"))
    argv = [a.format(npz=npz, emg=emg_csv) for a in args]
    proc = run_cli("evaluate", *argv, cwd=tmp_path)
    assert_one_line_error(proc, code, fragment)


def test_run_with_a_broken_replay_file_in_the_config(tmp_path: Path) -> None:
    """``run`` finds a bad recording only once the service starts: still one clear line, not a traceback."""
    (tmp_path / "bad.csv").write_text("a,b,c\n1,2,3\n")
    config = tmp_path / "config.toml"
    config.write_text(
        f'[emg]\nsource = "replay"\n[emg.replay]\npath = "{tmp_path / "bad.csv"}"\n'
        f'[outbox]\npath = "{tmp_path / "outbox.sqlite3"}"\n'
        '[logging]\nlevel = "WARNING"\n'
    )
    proc = run_cli("run", "--config", str(config), cwd=REPO)
    assert proc.returncode == EX_DATAERR, proc.stderr[-3000:]
    assert "missing column(s) EMG1, EMG2, EMG3" in proc.stderr
    assert "Traceback" not in proc.stderr
