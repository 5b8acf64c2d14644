"""Deployment files: installer, example config, broker config, HA automations, microcontroller sketch."""

from __future__ import annotations

import getpass
import itertools
import os
import re
import shutil
import socket
import ssl
import stat
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]  # PyYAML ships no stubs; only safe_load is used

from edge.config import load_config
from edge.config.root import Config

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
INSTALL = DEPLOY / "install.sh"
CONFIG_EXAMPLE = DEPLOY / "config.example.toml"
MOSQUITTO_CONF = DEPLOY / "mosquitto.conf"
AUTOMATION = DEPLOY / "home-assistant" / "automation.yaml"
SKETCH = DEPLOY / "arduino" / "emg_streamer" / "emg_streamer.ino"


def example_config() -> dict[str, Any]:
    return tomllib.loads(CONFIG_EXAMPLE.read_text())


# --- install.sh ----------------------------------------------------------------------------------------


def run_install(*args: str, python: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHON": python or sys.executable}
    return subprocess.run(["bash", str(INSTALL), *args], capture_output=True, text=True, timeout=120, env=env)


def test_install_script_syntax() -> None:
    subprocess.run(["bash", "-n", str(INSTALL)], check=True, capture_output=True)
    assert os.access(INSTALL, os.X_OK)


def test_install_script_shellcheck() -> None:
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck not installed")
    result = subprocess.run([shellcheck, str(INSTALL)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_install_dry_run_prints_the_plan() -> None:
    result = run_install("--dry-run")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert f"{sys.executable} -m venv --system-site-packages /opt/emotion-edge/venv" in out
    assert f"/opt/emotion-edge/venv/bin/python -m pip install --upgrade {ROOT}" in out
    assert (
        f"install -m 0644 {ROOT}/systemd/emotion-edge.service /etc/systemd/system/emotion-edge.service" in out
    )
    assert "systemctl daemon-reload" in out
    assert "systemctl enable emotion-edge.service" in out
    assert "/etc/emotion-edge/config.toml" in out
    assert "tflite-runtime" not in out


def test_install_dry_run_with_tflite_runtime_leaves_litert_out() -> None:
    result = run_install("--dry-run", "--skip-apt", "--tflite-runtime")
    assert result.returncode == 0, result.stderr
    pip_lines = [line for line in result.stdout.splitlines() if "pip install" in line]
    assert any("tflite-runtime\\>=2.14" in line and "numpy\\<2" in line for line in pip_lines), pip_lines
    assert not any("ai-edge-litert" in line or "ai_edge_litert" in line for line in pip_lines)
    # The project itself must not drag ai-edge-litert back in as a dependency.
    assert any(line.endswith(f"--no-deps {ROOT}") for line in pip_lines), pip_lines


def test_install_refuses_tflite_runtime_on_python_3_13(tmp_path: Path) -> None:
    fake = tmp_path / "python3"
    fake.write_text('#!/bin/sh\ncase "$2" in *"[0]"*) echo 3 ;; *"[1]"*) echo 13 ;; esac\n')
    fake.chmod(0o755)
    result = run_install("--dry-run", "--skip-apt", "--tflite-runtime", python=str(fake))
    assert result.returncode != 0
    assert "Python <= 3.11" in result.stderr


def test_install_rejects_unknown_option() -> None:
    result = run_install("--bogus")
    assert result.returncode == 2
    assert "unknown option" in result.stderr


def test_install_into_prefix(tmp_path: Path) -> None:
    prefix = tmp_path / "root"
    result = run_install("--prefix", str(prefix), "--skip-apt", "--skip-venv")
    assert result.returncode == 0, result.stdout + result.stderr

    def mode(path: Path) -> int:
        return stat.S_IMODE(path.stat().st_mode)

    etc = prefix / "etc" / "emotion-edge"
    assert mode(etc) == 0o750
    assert (etc / "config.toml").read_text() == CONFIG_EXAMPLE.read_text()
    assert mode(etc / "config.toml") == 0o640
    assert (etc / "mqtt_password").read_bytes() == b""
    assert mode(etc / "mqtt_password") == 0o600
    unit = prefix / "etc" / "systemd" / "system" / "emotion-edge.service"
    assert unit.read_text() == (ROOT / "systemd" / "emotion-edge.service").read_text()
    modules = (prefix / "etc" / "modules-load.d" / "emotion-edge.conf").read_text().split()
    assert {"cdc_acm", "usbserial"} <= set(modules)
    if shutil.which("systemctl"):
        wants = prefix / "etc" / "systemd" / "system" / "multi-user.target.wants" / "emotion-edge.service"
        assert wants.is_symlink()
    if shutil.which("systemd-sysusers"):
        passwd = (prefix / "etc" / "passwd").read_text()
        assert re.search(r"^emotion-edge:x:\d+:\d+:emotion-edge daemon:/var/lib/emotion-edge:", passwd, re.M)
        groups = (prefix / "etc" / "group").read_text()
        assert re.search(r"^dialout:x:\d+:.*emotion-edge", groups, re.M)
        assert re.search(r"^video:x:\d+:.*emotion-edge", groups, re.M)

    # A second run upgrades but never overwrites the operator's config or password.
    (etc / "config.toml").write_text('device_id = "edited"\n')
    (etc / "mqtt_password").write_text("s3cret\n")
    again = run_install("--prefix", str(prefix), "--skip-apt", "--skip-venv")
    assert again.returncode == 0, again.stderr
    assert (etc / "config.toml").read_text() == 'device_id = "edited"\n'
    assert (etc / "mqtt_password").read_text() == "s3cret\n"


# --- config.example.toml -------------------------------------------------------------------------------


def test_config_example_loads() -> None:
    config = load_config(CONFIG_EXAMPLE, env={})
    assert config.device_id == "living_room_pi"
    assert config.mqtt.topic_prefix == "emotion_edge"
    assert config.mqtt.discovery_prefix == "homeassistant"
    assert config.emg.source == "serial"
    assert str(config.outbox.path) == "/var/lib/emotion-edge/outbox.sqlite3"
    assert config.mqtt.password is None  # never in the file


def test_config_example_commented_keys_are_valid() -> None:
    # The commented-out alternatives must be real keys too, or uncommenting one would stop the daemon.
    lines = []
    for line in CONFIG_EXAMPLE.read_text().splitlines():
        m = re.fullmatch(r"# ?(\[[a-z_.]+\]|[a-z_]+ = .+)", line)
        lines.append(m.group(1) if m else line)
    data = tomllib.loads("\n".join(lines))
    assert data["emg"]["replay"]["path"]
    assert data["mqtt"]["password_file"]
    assert data["models"]["emg"]
    Config.model_validate(data)


def test_config_example_matches_the_unit_and_the_sketch() -> None:
    data = example_config()
    unit = (ROOT / "systemd" / "emotion-edge.service").read_text()
    assert f"EMOTION_EDGE__OUTBOX__PATH={data['outbox']['path']}" in unit
    sketch = SKETCH.read_text()
    baud = re.search(r"#define SERIAL_BAUD (\d+)UL", sketch)
    rate = re.search(r"SAMPLE_RATE_HZ = (\d+);", sketch)
    assert baud and rate
    assert data["emg"]["serial"]["baudrate"] == int(baud.group(1))
    assert data["emg"]["sample_rate_hz"] == int(rate.group(1))


# --- Home Assistant ------------------------------------------------------------------------------------


def test_home_assistant_automations() -> None:
    automations = yaml.safe_load(AUTOMATION.read_text())
    assert isinstance(automations, list) and len(automations) == 2
    for automation in automations:
        assert {"id", "alias", "triggers", "conditions", "actions"} <= automation.keys()
    ids = [a["id"] for a in automations]
    assert len(set(ids)) == len(ids)

    data = example_config()
    mqtt_auto, event_auto = automations
    (trigger,) = mqtt_auto["triggers"]
    assert trigger["trigger"] == "mqtt"
    assert trigger["topic"] == f"{data['mqtt']['topic_prefix']}/{data['device_id']}/event"
    condition = mqtt_auto["conditions"][0]["value_template"]
    assert "type == 'new'" in condition and "emotion == 'sad'" in condition
    actions = [a.get("action") for a in mqtt_auto["actions"]]
    assert "light.turn_on" in actions
    assert any(a and a.startswith("notify.") for a in actions)

    (state_trigger,) = event_auto["triggers"]
    assert state_trigger["trigger"] == "state"
    assert state_trigger["entity_id"] == f"event.{data['device_id']}_emotion_episode"


# --- mosquitto -----------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def make_certs(certs: Path) -> None:
    certs.mkdir()
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl not installed")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], check=True, capture_output=True, cwd=certs)

    run("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "1", "-subj", "/CN=test CA")
    run("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost")
    (certs / "san.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    run(
        "x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "server.crt", "-days", "1", "-extfile", "san.ext",
    )  # fmt: skip


def mqtt_connect(sock: socket.socket, username: str | None, password: str | None) -> int:
    """Send an MQTT 3.1.1 CONNECT and return the CONNACK return code (0 accepted, 5 not authorized)."""

    def field(text: str) -> bytes:
        raw = text.encode()
        return len(raw).to_bytes(2, "big") + raw

    flags = 0x02  # clean session
    payload = field("emotion-edge-test")
    if username is not None:
        flags |= 0x80
        payload += field(username)
    if password is not None:
        flags |= 0x40
        payload += field(password)
    variable = field("MQTT") + bytes([4, flags]) + (10).to_bytes(2, "big")
    body = variable + payload
    assert len(body) < 128  # single-byte remaining length
    sock.sendall(bytes([0x10, len(body)]) + body)
    connack = sock.recv(4)
    assert connack[:2] == b"\x20\x02", connack
    return connack[3]


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[tuple[int, int, Path]]:
    binary = shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
    )
    passwd_tool = shutil.which("mosquitto_passwd")
    if binary is None or passwd_tool is None:
        pytest.skip("mosquitto not installed")
    certs = tmp_path / "certs"
    make_certs(certs)
    passwd = tmp_path / "passwd"
    passwd.touch(mode=0o600)
    subprocess.run(
        [passwd_tool, "-b", str(passwd), "emotion_edge", "pw-123"], check=True, capture_output=True
    )

    plain, tls = free_port(), free_port()
    text = MOSQUITTO_CONF.read_text()
    replacements = [
        (r"(?m)^listener 1883 ", f"listener {plain} "),
        (r"(?m)^listener 8883$", f"listener {tls} 127.0.0.1"),
        (r"/etc/mosquitto/passwd", str(passwd)),
        (r"/etc/mosquitto/certs/", f"{certs}/"),
    ]
    for pattern, repl in replacements:
        text, count = re.subn(pattern, repl, text)
        assert count >= 1, pattern  # the test must exercise the shipped directives, not skip them
    conf_d = tmp_path / "conf.d"
    conf_d.mkdir()
    (conf_d / "emotion-edge.conf").write_text(text)
    # Stands in for Debian's /etc/mosquitto/mosquitto.conf, which the shipped file is a drop-in for.
    main = tmp_path / "mosquitto.conf"
    main.write_text(
        f"user {getpass.getuser()}\n"
        "persistence true\n"
        f"persistence_location {tmp_path}/\n"
        f"include_dir {conf_d}\n"
    )
    proc = subprocess.Popen(
        [binary, "-c", str(main)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        deadline = time.monotonic() + 5
        while True:
            if proc.poll() is not None:
                pytest.fail(
                    f"mosquitto exited with {proc.returncode}:\n{proc.stdout.read() if proc.stdout else ''}"
                )
            try:
                socket.create_connection(("127.0.0.1", tls), timeout=0.2).close()
                socket.create_connection(("127.0.0.1", plain), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield plain, tls, certs / "ca.crt"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_mosquitto_config_runs(mosquitto: tuple[int, int, Path]) -> None:
    plain, tls, ca = mosquitto
    time.sleep(1.0)
    # Plain listener: passwords required, anonymous refused.
    with socket.create_connection(("127.0.0.1", plain), timeout=5) as sock:
        assert mqtt_connect(sock, None, None) == 5
    with socket.create_connection(("127.0.0.1", plain), timeout=5) as sock:
        assert mqtt_connect(sock, "emotion_edge", "wrong") in (4, 5)
    with socket.create_connection(("127.0.0.1", plain), timeout=5) as sock:
        assert mqtt_connect(sock, "emotion_edge", "pw-123") == 0
    # TLS listener: a verified handshake against the CA, then the same authentication.
    context = ssl.create_default_context(cafile=str(ca))
    with (
        socket.create_connection(("127.0.0.1", tls), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as sock,
    ):
        assert sock.version() in ("TLSv1.2", "TLSv1.3")
        assert mqtt_connect(sock, "emotion_edge", "pw-123") == 0


def test_mosquitto_plain_listener_is_localhost_only() -> None:
    assert re.search(r"(?m)^listener 1883 127\.0\.0\.1$", MOSQUITTO_CONF.read_text())
    assert re.search(r"(?m)^allow_anonymous false$", MOSQUITTO_CONF.read_text())


# --- Arduino sketch ------------------------------------------------------------------------------------

LINE_RE = re.compile(r"^(\d+),(\d+),(\d+),(\d+)$")


def test_sketch_documents_and_prints_the_protocol() -> None:
    sketch = SKETCH.read_text()
    assert re.search(r"^//\s+n,v1,v2,v3\\n$", sketch, re.M)
    fmt = re.search(r'snprintf\(line, sizeof line, "([^"]*)"', sketch)
    assert fmt and fmt.group(1) == r"%lu,%d,%d,%d\n"
    assert "println" not in sketch  # '\r\n' would break the documented framing
    for pin in ("A0", "A1", "A2"):
        assert re.search(rf"= {pin};", sketch)
    assert "delay(" not in sketch  # timing comes from micros() deadlines


MOCK_ARDUINO_H = r"""
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstdio>
#define A0 14
#define A1 15
#define A2 16
extern uint32_t sim_us;
inline uint32_t micros() { return sim_us; }
inline int analogRead(uint8_t pin) { return pin == A0 ? 512 : pin == A1 ? 1023 : 7; }
struct MockSerial {
  void begin(unsigned long) {}
  size_t write(const uint8_t *buf, size_t n) {
    fwrite(buf, 1, n, stdout);
    fprintf(stderr, "%u\n", (unsigned)sim_us);
    return n;
  }
};
extern MockSerial Serial;
"""

HARNESS_CPP = r"""
#include "Arduino.h"
uint32_t sim_us = 4294967295u - 5000u;  // crosses the micros() wrap after 5 ms
MockSerial Serial;
#include "SKETCH"
int main() {
  setup();
  for (int i = 0; i < 20000 / 7; i++) {  // 20 ms of simulated time in 7 us steps
    loop();
    sim_us += 7;
    if (i == 1500) sim_us += 3500;  // the serial port blocks for 3.5 ms
  }
}
"""


def test_sketch_timing_on_host(tmp_path: Path) -> None:
    """Compile the sketch against a mock Arduino.h and check the sample clock and the drop counter."""
    compiler = shutil.which("g++") or shutil.which("c++")
    if compiler is None:
        pytest.skip("no C++ compiler")
    (tmp_path / "Arduino.h").write_text(MOCK_ARDUINO_H)
    (tmp_path / "main.cpp").write_text(HARNESS_CPP.replace("SKETCH", str(SKETCH)))
    exe = tmp_path / "sketch"
    subprocess.run(
        [
            compiler,
            "-std=c++11",
            "-Wall",
            "-Werror",
            "-x",
            "c++",
            f"-I{tmp_path}",
            "main.cpp",
            "-o",
            str(exe),
        ],
        check=True,
        cwd=tmp_path,
        capture_output=True,
    )
    result = subprocess.run([str(exe)], check=True, capture_output=True, text=True, timeout=30)
    lines = result.stdout.split("\n")
    assert lines[-1] == ""
    samples = [LINE_RE.fullmatch(line) for line in lines[:-1]]
    assert all(samples), lines[:5]
    counters = [int(m.group(1)) for m in samples if m]
    assert all(m.groups()[1:] == ("512", "1023", "7") for m in samples if m)
    assert counters[0] == 0
    steps = [b - a for a, b in itertools.pairwise(counters)]
    gaps = [s for s in steps if s != 1]
    assert gaps in ([3], [4]), gaps  # the stall shows up as exactly one gap of the missed ticks
    # The last loop() runs 2856 * 7 + 3500 = 23492 us in: tick 23 is due, 24 is not. No drift, no burst.
    assert counters[-1] == 23

    start = (2**32 - 1 - 5000) % 2**32
    written = [(int(t) - start) % 2**32 for t in result.stderr.split()]
    for n, t in zip(counters, written, strict=True):
        lateness = t - n * 1000
        # Each sample is taken within one 7 us loop step of its deadline, except right after the stall.
        assert 0 <= lateness < 1000
    assert sum(1 for n, t in zip(counters, written, strict=True) if t - n * 1000 >= 7) == 1
