"""The Pi path end to end: deploy/install.sh into a staging root, then the staged daemon and broker.

One staged install (a real venv built by pip from the system python3, as on the Pi) is shared by the module.
It runs from a copy of the working tree, which also shows that installing leaves the checkout clean.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.harness import Subscriber, free_port
from tests.test_deploy import (
    CONFIG_EXAMPLE,
    MOSQUITTO_CONF,
    MOSQUITTO_TLS_CONF,
    UNIT,
    connect_plain,
    mode,
    pip_installs,
    require_tool,
    rewrite,
    run_install,
    run_mosquitto,
    unit_value,
)

# Building the venv downloads numpy, scipy, OpenCV and LiteRT on a cold pip cache.
INSTALL_TIMEOUT_S = 1200
pytestmark = pytest.mark.timeout(INSTALL_TIMEOUT_S + 300)

APP = "emotion-edge"
DEVICE_ID = "living_room_pi"  # the example config's, which the staged daemon runs with
BASE = f"emotion_edge/{DEVICE_ID}"
SEGMENTS = ["happy", "angry", "surprise", "fear", "sad", "disgust"]
# Not copied into the staged checkout: what .gitignore keeps out of git, plus local training state.
COPY_IGNORE = shutil.ignore_patterns(
    ".git", ".venv", "venv", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", "checkpoints", "runs"
)


def system_python() -> str:
    """The distribution's python3 (the Pi's /usr/bin/python3), with venv and ensurepip."""
    for candidate in ("/usr/bin/python3", shutil.which("python3")):
        if candidate and os.access(candidate, os.X_OK):
            probe = subprocess.run(
                [candidate, "-c", "import ensurepip, venv, sys; assert sys.version_info >= (3, 11)"],
                capture_output=True,
            )
            if probe.returncode == 0:
                return candidate
    message = "no python3 >= 3.11 with venv/ensurepip (Debian: apt-get install python3-venv)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


NETWORK_ERRORS = (
    "NewConnectionError",
    "Temporary failure in name resolution",
    "Network is unreachable",
    "No route to host",
    "ConnectTimeoutError",
    "ProxyError",
)


def skip_if_offline(result: subprocess.CompletedProcess[str]) -> None:
    """pip could not reach the package index: a local run without network skips, CI fails."""
    output = result.stdout + result.stderr
    offline = result.returncode != 0 and any(marker in output for marker in NETWORK_ERRORS)
    if offline and os.environ.get("CI", "").lower() != "true":
        pytest.skip("pip cannot reach the package index (no network)")


def build_outputs(tree: Path) -> list[str]:
    return sorted(
        str(p.relative_to(tree))
        for p in tree.rglob("*")
        if p.is_dir() and (p.name in ("build", "dist") or p.name.endswith(".egg-info"))
    )


@dataclass(frozen=True)
class Staged:
    checkout: Path  # the copy install.sh ran from
    prefix: Path
    result: subprocess.CompletedProcess[str]
    seconds: float
    files_before: frozenset[str]

    @property
    def venv(self) -> Path:
        return self.prefix / "opt" / APP / "venv"

    @property
    def etc(self) -> Path:
        return self.prefix / "etc" / APP


def tree_files(tree: Path) -> frozenset[str]:
    return frozenset(str(p.relative_to(tree)) for p in tree.rglob("*"))


@pytest.fixture(scope="module")
def staged(tmp_path_factory: pytest.TempPathFactory) -> Staged:
    require_tool("mosquitto_passwd")  # --with-broker registers the daemon's password with it
    python = system_python()
    base = tmp_path_factory.mktemp("staged")
    checkout = base / "checkout"
    shutil.copytree(REPO, checkout, ignore=COPY_IGNORE, symlinks=True)
    assert build_outputs(checkout) == []
    before = tree_files(checkout)
    prefix = base / "root"
    start = time.monotonic()
    result = run_install(
        "--prefix",
        str(prefix),
        "--skip-apt",
        "--broker-tls",  # implies --with-broker
        python=python,
        script=checkout / "deploy" / "install.sh",
        timeout=INSTALL_TIMEOUT_S,
    )
    seconds = time.monotonic() - start
    skip_if_offline(result)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-6000:]
    return Staged(checkout, prefix, result, seconds, before)


def clean_env(**extra: str) -> dict[str, str]:
    """The environment for staged programs: nothing from this checkout's venv or EMOTION_EDGE__ overrides."""
    drop = ("EMOTION_EDGE", "PYTHON", "VIRTUAL_ENV", "CREDENTIALS_DIRECTORY", "NOTIFY_SOCKET", "WATCHDOG_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if ".venv" not in p)
    return {**env, **extra}


def test_install_leaves_the_checkout_clean(staged: Staged) -> None:
    # pip builds a source tree in place; install.sh must build from a temporary copy instead.
    assert build_outputs(staged.checkout) == []
    assert tree_files(staged.checkout) == staged.files_before
    print(f"staged install took {staged.seconds:.1f} s")


def test_staged_layout(staged: Staged) -> None:
    p = staged.prefix
    assert (p / "etc/systemd/system/emotion-edge.service").read_text() == UNIT.read_text()
    assert (staged.etc / "config.toml").read_text() == CONFIG_EXAMPLE.read_text()
    assert mode(staged.etc) == int(unit_value("ConfigurationDirectoryMode", "0755"), 8) == 0o750
    state = p / "var" / "lib" / APP
    assert state.is_dir() and mode(state) == int(unit_value("StateDirectoryMode", "0755"), 8) == 0o700
    assert (p / "etc/mosquitto/conf.d/emotion-edge.conf").read_text() == MOSQUITTO_CONF.read_text()
    assert (p / "etc/mosquitto/conf.d/emotion-edge-tls.conf").read_text() == MOSQUITTO_TLS_CONF.read_text()
    certs = p / "etc/mosquitto/certs"
    verified = subprocess.run(
        [require_tool("openssl"), "verify", "-CAfile", str(certs / "ca.crt"), str(certs / "server.crt")],
        capture_output=True,
        text=True,
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert (staged.etc / "mqtt_password").read_text()
    # The venv runs the installed package, not the checkout it was built from.
    where = subprocess.run(
        [str(staged.venv / "bin" / "python"), "-c", "import edge; print(edge.__file__)"],
        capture_output=True,
        text=True,
        cwd=staged.prefix,
        env=clean_env(),
        check=True,
    ).stdout.strip()
    assert Path(where).is_relative_to(staged.venv), where


def test_staged_venv_has_every_module_of_the_checkout(staged: Staged) -> None:
    # A subpackage missing from the wheel's package list only shows when the daemon imports it on the Pi.
    (site,) = staged.venv.glob("lib/python3.*/site-packages")
    source = staged.checkout / "edge"
    modules = sorted(str(p.relative_to(source.parent)) for p in source.rglob("*.py"))
    missing = [m for m in modules if not (site / m).is_file()]
    assert missing == [], f"not in the installed package: {missing}"


def test_emotion_edge_is_on_the_admins_path(staged: Staged, tmp_path: Path, emg_csv: Path) -> None:
    link = staged.prefix / "usr" / "local" / "bin" / APP
    assert link.is_symlink()
    # Relative: it resolves to /opt/emotion-edge/venv/bin/emotion-edge on the Pi and inside a staging root.
    assert os.readlink(link) == f"../../../opt/{APP}/venv/bin/{APP}"
    assert link.resolve() == (staged.venv / "bin" / APP).resolve()
    env = clean_env(PATH=f"{link.parent}{os.pathsep}{clean_env()['PATH']}")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [APP, *args], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300
        )

    assert shutil.which(APP, path=env["PATH"]) == str(link)
    version = run("--version")
    assert version.returncode == 0 and version.stdout.startswith("emotion-edge "), version.stderr
    checked = run("check-config", str(staged.etc / "config.toml"))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert run("models", "fetch", "--help").returncode == 0
    # The shipped model and card are in the installed package.
    scored = run("evaluate", "emg", "--data", str(emg_csv), "--json")
    assert scored.returncode == 0, scored.stderr
    assert json.loads(scored.stdout)["accuracy"] > 0.8


def staged_broker_dropins(staged: Staged, port: int, tls_port: int) -> dict[str, str]:
    """The staged broker's drop-ins with the ports and the staged paths of its files."""
    conf_d = staged.prefix / "etc" / "mosquitto" / "conf.d"
    plain = rewrite(
        (conf_d / "emotion-edge.conf").read_text(),
        [
            (r"(?m)^listener 1883 127\.0\.0\.1$", f"listener {port} 127.0.0.1"),
            ("/etc/mosquitto/passwd", str(staged.prefix / "etc/mosquitto/passwd")),
        ],
    )
    tls = rewrite(
        (conf_d / "emotion-edge-tls.conf").read_text(),
        [
            (r"(?m)^listener 8883$", f"listener {tls_port} 127.0.0.1"),
            ("/etc/mosquitto/certs/", f"{staged.prefix}/etc/mosquitto/certs/"),
        ],
    )
    return {"emotion-edge.conf": plain, "emotion-edge-tls.conf": tls}


def test_staged_daemon_publishes_to_the_staged_broker(staged: Staged, tmp_path: Path, emg_csv: Path) -> None:
    """The installed daemon, config and broker as systemd would run them, with the EMG replayed."""
    port, tls_port = free_port(), free_port()
    password = (staged.etc / "mqtt_password").read_text()
    with run_mosquitto(tmp_path / "broker", staged_broker_dropins(staged, port, tls_port), [port, tls_port]):
        assert connect_plain(port, None, None) == 5
        # The unit's ExecStart with the installed config. Only what differs from the Pi is overridden: the
        # broker port, the EMG source (the recording instead of the board), no camera, the outbox outside
        # /var/lib; the password arrives the way LoadCredential= hands it over.
        env = clean_env(
            CREDENTIALS_DIRECTORY=str(staged.etc),
            EMOTION_EDGE__MQTT__PORT=str(port),
            EMOTION_EDGE__EMG__SOURCE="replay",
            EMOTION_EDGE__EMG__REPLAY__PATH=str(emg_csv),
            EMOTION_EDGE__EMG__REPLAY__SPEED="20",
            EMOTION_EDGE__CAMERA__SOURCE="off",
            EMOTION_EDGE__OUTBOX__PATH=str(tmp_path / "outbox.sqlite3"),
            PYTHONUNBUFFERED="1",
        )
        exec_start = shlex.split(
            unit_value("ExecStart", "")
            .replace("/opt/", f"{staged.prefix}/opt/")
            .replace("/etc/", f"{staged.prefix}/etc/")
        )
        assert exec_start[0] == str(staged.venv / "bin" / APP)
        log_path = tmp_path / "daemon.log"
        # Subscribed like Home Assistant on the LAN: over TLS, trusting the staged CA (host name verified).
        ca = staged.prefix / "etc" / "mosquitto" / "certs" / "ca.crt"
        sub = Subscriber(tls_port, [f"{BASE}/#"], username="emotion_edge", password=password, tls_ca=ca)
        try:
            with log_path.open("wb") as log:
                daemon = subprocess.Popen(
                    exec_start, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT
                )
            try:

                def daemon_log() -> str:
                    return log_path.read_text(errors="replace")[-4000:]

                def running_until(
                    topic: str, predicate: Callable[[list[bytes]], bool], timeout: float
                ) -> None:
                    deadline = time.monotonic() + timeout
                    while not predicate(sub.on(topic)):
                        if daemon.poll() is not None:
                            pytest.fail(f"the staged daemon exited with {daemon.returncode}:\n{daemon_log()}")
                        if time.monotonic() > deadline:
                            pytest.fail(f"nothing on {topic} after {timeout} s:\n{daemon_log()}")
                        time.sleep(0.05)

                running_until(f"{BASE}/availability", lambda m: b"online" in m, timeout=60)
                # The replay ends after the disgust segment, which closes the last episode.
                running_until(
                    f"{BASE}/event",
                    # Parsed: every event's probs name disgust, so a byte match fires too early.
                    lambda m: any(
                        e["type"] == "end" and e["emotion"] == "disgust" for e in map(json.loads, m)
                    ),
                    timeout=120,
                )
                daemon.send_signal(signal.SIGTERM)
                assert daemon.wait(30) == 0, daemon_log()
                sub.wait_for(f"{BASE}/availability", lambda m: m[-1] == b"stopped")
            finally:
                if daemon.poll() is None:
                    daemon.kill()
                    daemon.wait(10)
        finally:
            sub.close()
        log_text = log_path.read_text(errors="replace")
        assert "Traceback" not in log_text, log_text[-4000:]
        assert password not in log_text
    events = sub.json_on(f"{BASE}/event")
    seen: set[int] = set()
    new = []
    for event in events:
        if event["seq"] not in seen and event["type"] == "new":
            new.append(event["emotion"])
        seen.add(event["seq"])
    assert new[: len(SEGMENTS)] == SEGMENTS, new
    assert all(e["device_id"] == DEVICE_ID for e in events)


def test_tflite_runtime_plan_resolves_without_opencv_backtracking(tmp_path: Path) -> None:
    """pip's resolver on the --tflite-runtime requirements for a Pi (aarch64, CPython 3.11): no backtracking
    through OpenCV releases that need numpy 2, and versions that fit tflite-runtime 2.14."""
    plan = run_install("--dry-run", "--skip-apt", "--tflite-runtime")
    assert plan.returncode == 0, plan.stderr
    (deps,) = [cmd for cmd in pip_installs(plan.stdout) if any(a.startswith("tflite-runtime") for a in cmd)]
    requirements = deps[deps.index("--upgrade") + 1 :]
    target = [f"--platform=manylinux_2_{n}_aarch64" for n in (36, 34, 31, 28, 27, 17)]
    target += [
        "--platform=manylinux2014_aarch64",
        "--python-version=3.11",
        "--implementation=cp",
        "--abi=cp311",
    ]
    report = tmp_path / "report.json"
    # --target: pip >= 26 takes platform options only with it (a dry run writes nothing there).
    pip = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--only-binary=:all:"]
    pip += [f"--target={tmp_path / 'target'}"]
    resolved = subprocess.run(
        [*pip, *target, f"--report={report}", *requirements],
        capture_output=True,
        text=True,
        timeout=600,
    )
    skip_if_offline(resolved)
    assert resolved.returncode == 0, resolved.stdout[-3000:] + resolved.stderr[-3000:]
    output = resolved.stdout + resolved.stderr
    assert "looking at multiple versions of opencv" not in output, output[-3000:]
    assert output.count("opencv_python_headless-") <= 1, output[-3000:]
    versions = {
        item["metadata"]["name"].lower().replace("_", "-"): item["metadata"]["version"]
        for item in json.loads(report.read_text())["install"]
    }
    assert versions["tflite-runtime"].startswith("2.14")
    assert int(versions["numpy"].split(".")[0]) == 1
    assert tuple(map(int, versions["opencv-python-headless"].split(".")[:2])) < (4, 12)
    assert "ai-edge-litert" not in versions
