"""The README's first command, `bash scripts/demo.sh`, in a fresh copy of the checkout."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.harness import copy_checkout

pytestmark = pytest.mark.slow


def test_demo_script_installs_once_and_takes_paths_from_the_callers_directory(
    emg_csv: Path, tmp_path: Path
) -> None:
    clone = copy_checkout(tmp_path / "clone")
    user_dir = tmp_path / "somewhere_else"
    (user_dir / "recordings").mkdir(parents=True)
    shutil.copy(emg_csv, user_dir / "recordings" / "mine.csv")
    env = {**os.environ, "HOME": str(tmp_path), "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop("VIRTUAL_ENV", None)
    command = [
        "bash",
        str(clone / "scripts" / "demo.sh"),
        "--emg-file",
        "recordings/mine.csv",
        "--speed",
        "max",
    ]

    first = subprocess.run(command, cwd=user_dir, env=env, capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "installing" in first.stderr
    assert "availability: online" in first.stdout and "availability: stopped" in first.stdout

    started = time.monotonic()
    second = subprocess.run(command, cwd=user_dir, env=env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "installing" not in second.stderr, "reinstalled although nothing changed"
    # pip's and setuptools' chatter never reaches the user
    for noise in ("WARNING", "setuptools", "Editable", "DEPRECATION"):
        assert noise not in first.stderr + second.stderr
    news = [
        line.split()[3]
        for line in second.stdout.splitlines()
        if line.startswith("event #") and " new " in line
    ]
    assert news == ["happy", "angry", "surprise", "fear", "sad", "disgust"]
    assert time.monotonic() - started < 120
