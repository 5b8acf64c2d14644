"""Real parts for end-to-end tests: a mosquitto broker, an MQTT subscriber and the daemon process."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.conftest import REPO


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def mosquitto_binary() -> str:
    exe = shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
    )
    if exe is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("mosquitto is not installed (scripts/test.sh installs it as root)")
        pytest.skip("mosquitto is not installed")
    return exe


def copy_checkout(dst: Path) -> Path:
    """The checkout's files as a fresh clone would have them (tracked plus untracked-not-ignored,
    so uncommitted work is tested too), without .venv, build outputs or caches."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, (n.decode() for n in listed)):
        if (REPO / name).is_file():
            (dst / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, dst / name)
    return dst


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.02, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.1f}s waiting for {what or predicate}")


@dataclass
class Mosquitto:
    """A real broker on a free loopback port. ``extra`` lines go into its config file."""

    workdir: Path
    extra: list[str] = field(default_factory=list)
    port: int = field(default_factory=free_port)
    persistence: bool = False
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Mosquitto:
        self.workdir.mkdir(parents=True, exist_ok=True)
        conf = self.workdir / "mosquitto.conf"
        lines = [f"listener {self.port} 127.0.0.1", *self.extra]
        if not any(line.startswith("allow_anonymous") for line in lines):
            lines.append("allow_anonymous true")
        if self.persistence:
            lines += ["persistence true", f"persistence_location {self.workdir}/", "autosave_interval 1"]
            if os.geteuid() == 0 and not any(line.startswith("user ") for line in lines):
                # As root mosquitto drops to its own user, which cannot write under pytest's 0700
                # tmp dirs: persistence would fail silently and sessions would not survive a restart.
                lines.append("user root")
        conf.write_text("\n".join(lines) + "\n")
        log = (self.workdir / "mosquitto.log").open("ab")
        self.proc = subprocess.Popen([mosquitto_binary(), "-c", str(conf)], stdout=log, stderr=log)
        wait_until(self._listening, 10, what=f"mosquitto on port {self.port}")
        return self

    def _listening(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"mosquitto exited: {(self.workdir / 'mosquitto.log').read_text()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return True
        except OSError:
            return False

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(10)
        self.proc = None


class Subscriber:
    """A paho client that records every message; thread-safe accessors for assertions."""

    def __init__(
        self,
        port: int,
        topics: list[str],
        client_id: str | None = None,
        clean_session: bool = True,
        *,
        username: str | None = None,
        password: str | None = None,
        tls_ca: Path | None = None,
        **connect_kwargs: Any,
    ) -> None:
        self.messages: list[tuple[float, str, bytes, bool]] = []
        self._lock = threading.Lock()
        self.connected = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id or f"test-sub-{os.getpid()}-{id(self)}",
            clean_session=clean_session,
            protocol=mqtt.MQTTv311,
        )
        self._topics = topics
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_disconnect = lambda *a: self.connected.clear()
        # paho annotates the delays as int, but its reconnect wait is plain float arithmetic: sub-second
        # delays work, and int() would truncate them to 0 (a busy reconnect loop).
        self.client.reconnect_delay_set(0.1, 0.5)  # type: ignore[arg-type]
        if username is not None:
            self.client.username_pw_set(username, password)
        if tls_ca is not None:
            self.client.tls_set(ca_certs=str(tls_ca))
        self.client.connect("127.0.0.1", port, **connect_kwargs)
        self.client.loop_start()
        assert self.connected.wait(10), "subscriber could not connect"

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        for t in self._topics:
            client.subscribe(t, qos=1)
        self.connected.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((time.monotonic(), msg.topic, bytes(msg.payload), bool(msg.retain)))

    def on(self, topic: str) -> list[bytes]:
        with self._lock:
            return [p for _, t, p, _ in self.messages if t == topic]

    def json_on(self, topic: str) -> list[dict[str, Any]]:
        return [json.loads(p) for p in self.on(topic)]

    def last(self, topic: str) -> bytes | None:
        msgs = self.on(topic)
        return msgs[-1] if msgs else None

    def wait_for(self, topic: str, predicate: Callable[[list[bytes]], bool], timeout: float = 20) -> None:
        wait_until(lambda: predicate(self.on(topic)), timeout, what=f"messages on {topic}")

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def write_config(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


class Daemon:
    """``emotion-edge run`` as a real child process, logging to a file."""

    def __init__(self, config: Path, workdir: Path, env: dict[str, str] | None = None) -> None:
        self.config = config
        self.workdir = workdir
        self.log_path = workdir / f"daemon-{time.monotonic_ns()}.log"
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})}
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edge.cli", "run", "--config", str(config)],
            cwd=REPO,
            env=full_env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 20) -> int:
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self, timeout: float = 20) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
                raise
        return int(self.proc.returncode)


def daemon_config(
    tmp_path: Path,
    port: int,
    *,
    device_id: str = "test_pi",
    emg: str,
    mqtt_extra: str = "",
    decision: str = "",
    stats_interval_s: float = 0.5,
) -> Path:
    """A TOML config for the daemon under test; ``emg`` is the body of the [emg] tables."""
    text = f"""
device_id = "{device_id}"

[mqtt]
host = "127.0.0.1"
port = {port}
stats_interval_s = {stats_interval_s}
reconnect_min_s = 0.2
reconnect_max_s = 1.0
keepalive_s = 5
{mqtt_extra}

{emg}

[outbox]
path = "{tmp_path / "outbox.sqlite3"}"

[decision]
{decision}

[logging]
level = "INFO"
"""
    return write_config(tmp_path / "config.toml", text)


def replay_emg(path: Path, speed: str | float = "max", loop: bool = False) -> str:
    speed_toml = '"max"' if speed == "max" else str(float(speed))
    return f"""[emg]
source = "replay"

[emg.replay]
path = "{path}"
speed = {speed_toml}
loop = {"true" if loop else "false"}
"""


def event_seqs(events: list[dict[str, Any]]) -> list[int]:
    return [e["seq"] for e in events]


def new_episode_emotions(events: list[dict[str, Any]]) -> list[str]:
    """Emotions of ``new`` events, deduplicated by seq (QoS 1 may redeliver)."""
    seen: set[int] = set()
    out = []
    for e in events:
        if e["seq"] in seen:
            continue
        seen.add(e["seq"])
        if e["type"] == "new":
            out.append(e["emotion"])
    return out


def one_segment(recording: Path, label: str, dest: Path) -> Path:
    """The recording's rows of one label alone (4 s at 1 kHz): replayed in a loop, one emotion holds."""
    lines = recording.read_text().splitlines()
    dest.write_text("\n".join([lines[0], *(row for row in lines[1:] if row.endswith(f",{label}"))]) + "\n")
    return dest
