"""What users install: the built wheel, in fresh venvs on Python 3.11 and 3.13, never editable.

The rest of the suite runs against an editable checkout, which once hid a wheel that could not
start (``No module named 'edge.config'``). These tests build the sdist and the wheel (the wheel
from the sdist, as ``python -m build`` does), inspect the wheel, install it into a new venv per
interpreter and drive the installed ``emotion-edge`` entry point from a directory outside the
checkout, so nothing can be imported from the working tree by accident.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO, missing, shared_file
from tests.harness import Mosquitto, Subscriber, copy_checkout, daemon_config, replay_emg, wait_until

pytestmark = pytest.mark.slow
INTERPRETERS = ["3.11", "3.13"]
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONDONTWRITEBYTECODE": "1"}


def find_interpreter(version: str) -> str:
    """pyenv's ``X.Y.*`` (CI machines list 3.11 and 3.13 in ``pyenv versions``), else ``pythonX.Y``
    on PATH. pyenv's shims are skipped: they answer "command not found" for a version that is
    installed but not selected."""
    pyenv_root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    matches = sorted(glob.glob(str(pyenv_root / "versions" / f"{version}.*" / "bin" / f"python{version}")))
    on_path = shutil.which(f"python{version}")
    if on_path and "/shims/" in on_path:
        on_path = None
    found = matches[-1] if matches else on_path
    if found is None:
        missing(f"Python {version} not found (PATH or pyenv): the installed wheel must be tested on it")
    return found


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    # Build from a copy of the tracked files, so the checkout gets no build/ or egg-info and the
    # sdist cannot pick up anything untracked.
    src = copy_checkout(tmp_path_factory.mktemp("src"))
    subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(out), str(src)],
        check=True,
        capture_output=True,
        env=ENV,
        timeout=600,
    )
    return out


@pytest.fixture(scope="module")
def wheel(dist: Path) -> Path:
    (found,) = dist.glob("emotion_edge-*.whl")
    return found


def test_wheel_holds_every_subpackage_and_the_models_and_nothing_else(wheel: Path, dist: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    source_packages = {p.parent.relative_to(REPO).as_posix() for p in (REPO / "edge").rglob("__init__.py")}
    for package in source_packages:
        assert f"{package}/__init__.py" in names, f"{package} is not in the wheel"
    for model in ("emg/emg.tflite", "emg/emg.card.json", "face/face.tflite", "face/face.card.json"):
        assert f"edge/models/{model}" in names
    for asset in ("index.html", "app.js", "style.css"):  # the live page, served from the package
        assert f"edge/web/static/{asset}" in names
    top_level = {name.split("/")[0] for name in names if not name.startswith("emotion_edge-")}
    assert top_level == {"edge"}, top_level
    (info,) = [n for n in names if n.endswith(".dist-info/top_level.txt")]
    assert zipfile.ZipFile(wheel).read(info).decode().split() == ["edge"]
    assert not any(n.endswith((".md", ".png", ".cc", ".h")) for n in names)
    checked = subprocess.run(
        [sys.executable, "-m", "check_wheel_contents", str(wheel)], capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert list(dist.glob("emotion_edge-*.tar.gz")), "no sdist built"


@pytest.fixture(scope="module", params=INTERPRETERS)
def venv(request: pytest.FixtureRequest, wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    python = find_interpreter(request.param)
    root = tmp_path_factory.mktemp(f"venv{request.param}")
    subprocess.run([python, "-m", "venv", str(root)], check=True, timeout=120)
    pip = [str(root / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    done = subprocess.run([*pip, f"{wheel}[demo]"], capture_output=True, text=True, timeout=900, env=ENV)
    assert done.returncode == 0, done.stderr[-3000:]
    return root


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A working directory with no ``edge`` in it."""
    assert not (tmp_path / "edge").exists()
    return tmp_path


def run(venv: Path, *args: str, cwd: Path, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(venv / "bin" / "emotion-edge"), *args],
        cwd=cwd,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_version_and_models_come_from_the_installed_package(venv: Path, outside: Path) -> None:
    version = run(venv, "--version", cwd=outside)
    assert version.returncode == 0 and version.stdout.startswith("emotion-edge "), version.stderr
    probe = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-c",
            "import edge, edge.paths as p; print(edge.__file__); "
            "print(p.shipped_model(p.SHIPPED_FACE_MODEL))",
        ],
        cwd=outside,
        capture_output=True,
        text=True,
        check=True,
    )
    package_file, model = probe.stdout.split()
    assert Path(package_file).is_relative_to(venv) and Path(model).is_relative_to(venv)
    assert Path(model).is_file()


def test_check_config(venv: Path, outside: Path, emg_csv: Path) -> None:
    good = daemon_config(outside, 1883, emg=replay_emg(emg_csv))
    assert run(venv, "check-config", str(good), cwd=outside).returncode == 0
    bad = outside / "bad.toml"
    bad.write_text("[mqtt]\nport = 'many'\n")
    refused = run(venv, "check-config", str(bad), cwd=outside)
    assert refused.returncode == 78 and "mqtt.port" in refused.stdout + refused.stderr
    assert "Traceback" not in refused.stderr


def test_evaluate_emg_and_face(venv: Path, outside: Path, emg_csv: Path) -> None:
    emg = run(venv, "evaluate", "emg", "--data", str(emg_csv), "--json", cwd=outside)
    assert emg.returncode == 0, emg.stderr
    assert json.loads(emg.stdout.splitlines()[-1])["accuracy"] > 0.9
    with np.load(shared_file("fer2013/fer2013.npz")) as fer:
        public = np.flatnonzero(fer["usage"] == 1)[::40]  # 90 PublicTest faces, all classes
        small = outside / "small.npz"
        np.savez(
            small, pixels=fer["pixels"][public], labels=fer["labels"][public], usage=fer["usage"][public]
        )
    face = run(venv, "evaluate", "face", "--data", str(small), "--usage", "1", "--json", cwd=outside)
    assert face.returncode == 0, face.stderr
    report = json.loads(face.stdout.splitlines()[-1])
    assert report["n"] == len(public) and report["accuracy"] > 0.4


def test_replay_publishes_events_to_mosquitto(venv: Path, outside: Path, emg_csv: Path) -> None:
    broker = Mosquitto(outside / "broker").start()
    sub = Subscriber(broker.port, ["emotion_edge/#"])
    try:
        config = daemon_config(outside, broker.port, emg=replay_emg(emg_csv))
        done = run(venv, "replay", str(emg_csv), "--config", str(config), cwd=outside)
        assert done.returncode == 0, done.stderr[-3000:]
        topic = "emotion_edge/test_pi/event"
        wait_until(lambda: len(sub.json_on(topic)) >= 18, 20, what="18 events")
        news = [e["emotion"] for e in sub.json_on(topic) if e["type"] == "new"]
        assert news == ["happy", "angry", "surprise", "fear", "sad", "disgust"]
    finally:
        sub.close()
        broker.stop()


@pytest.mark.parametrize("broker", ["mosquitto", "amqtt"])
def test_demo_with_the_embedded_broker(venv: Path, outside: Path, emg_csv: Path, broker: str) -> None:
    env = {**ENV, "EMOTION_EDGE_EMBEDDED_BROKER": broker, "HOME": str(outside)}
    done = subprocess.run(
        [str(venv / "bin" / "emotion-edge"), "demo", "--emg-file", str(emg_csv), "--speed", "max"],
        cwd=outside,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "availability: online" in done.stdout and "availability: stopped" in done.stdout
    news = [
        line.split()[3] for line in done.stdout.splitlines() if line.startswith("event #") and " new " in line
    ]
    assert news == ["happy", "angry", "surprise", "fear", "sad", "disgust"], done.stdout
