"""The shipped unit must load cleanly in systemd and keep its hardening."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "systemd" / "emotion-edge.service"
SYSUSERS = ROOT / "systemd" / "emotion-edge.sysusers.conf"
UNIT_NAME = UNIT.name


def require_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        # CI images are expected to carry systemd; a silent skip there would hide a broken unit.
        if os.environ.get("CI") == "true":
            pytest.fail(f"{name} is required under CI=true")
        pytest.skip(f"{name} not installed")
    return path


def unit_settings() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for raw in UNIT.read_text().splitlines():
        line = raw.strip()
        if line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    return settings


def verify_copy(tmp_path: Path, extra: str = "") -> subprocess.CompletedProcess[str]:
    """`systemd-analyze verify` on a copy whose ExecStart exists here (it is only installed on the Pi)."""
    text = re.sub(r"(?m)^ExecStart=.*$", "ExecStart=/bin/true", UNIT.read_text())
    copy = tmp_path / UNIT_NAME
    copy.write_text(text.replace("[Service]\n", "[Service]\n" + extra, 1))
    return subprocess.run(
        [require_tool("systemd-analyze"), "verify", str(copy)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def own_messages(result: subprocess.CompletedProcess[str]) -> list[str]:
    # verify also loads dependencies such as network-online.target; only judge lines about this unit.
    return [line for line in (result.stdout + result.stderr).splitlines() if UNIT_NAME in line]


def test_unit_verifies_cleanly(tmp_path: Path) -> None:
    result = verify_copy(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert own_messages(result) == []


def test_verify_check_catches_bad_keys(tmp_path: Path) -> None:
    # Guards the test above: a typo in a key must show up as a message about this unit.
    result = verify_copy(tmp_path, extra="ProtectSytem=strict\n")
    assert any("ProtectSytem" in line for line in own_messages(result)), result.stdout + result.stderr


def test_security_exposure_stays_low() -> None:
    analyze = require_tool("systemd-analyze")
    result = subprocess.run(
        [analyze, "security", "--offline=true", "--no-pager", str(UNIT)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if "--offline" in result.stderr and result.returncode != 0:
        pytest.skip("systemd-analyze security --offline needs systemd >= 250")
    match = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", result.stdout)
    assert match, result.stdout + result.stderr
    # 1.5 with systemd 252; newer systemd weighs some checks differently, hence the margin.
    assert float(match.group(1)) <= 2.5


def test_required_settings() -> None:
    s = unit_settings()
    expect = {
        "Type": ["notify"],
        "NotifyAccess": ["main"],
        "ExecStart": ["/opt/emotion-edge/venv/bin/emotion-edge run --config /etc/emotion-edge/config.toml"],
        "ExecReload": ["/bin/kill -HUP $MAINPID"],
        "WatchdogSec": ["30"],
        "Restart": ["on-failure"],
        "RestartPreventExitStatus": ["78"],
        "StartLimitIntervalSec": ["300"],
        "StartLimitBurst": ["5"],
        "User": ["emotion-edge"],
        "StateDirectory": ["emotion-edge"],
        "LoadCredential": ["mqtt_password:/etc/emotion-edge/mqtt_password"],
        "Environment": [
            "EMOTION_EDGE__OUTBOX__PATH=/var/lib/emotion-edge/outbox.sqlite3",
            "PYTHONUNBUFFERED=1",
        ],
        "ProtectSystem": ["strict"],
        "CapabilityBoundingSet": [""],
        "DevicePolicy": ["closed"],
        "MemoryMax": ["300M"],
        "UMask": ["0077"],
    }
    for key, values in expect.items():
        assert s.get(key) == values, key
    assert "PrivateDevices" not in s  # it would hide the serial port and the camera
    allowed = {v.split()[0] for v in s["DeviceAllow"]}
    assert {"char-ttyACM", "char-ttyUSB", "char-video4linux", "char-media", "char-dma_heap"} <= allowed


def test_start_limits_are_in_unit_section() -> None:
    # In [Service] systemd >= 230 ignores them with only a warning, silently allowing endless restarts.
    unit_section = UNIT.read_text().split("[Service]")[0]
    assert "StartLimitIntervalSec=300" in unit_section
    assert "StartLimitBurst=5" in unit_section


def test_sysusers_config(tmp_path: Path) -> None:
    sysusers = require_tool("systemd-sysusers")
    result = subprocess.run(
        [sysusers, f"--root={tmp_path}", "--dry-run", str(SYSUSERS)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout + result.stderr
    assert "Creating user 'emotion-edge'" in out
    assert "ignoring" not in out.lower()


# --- state directory (tmpfiles.d) and configuration directory ------------------------------------------

TMPFILES = ROOT / "systemd" / "emotion-edge.tmpfiles.conf"
INSTALL = ROOT / "deploy" / "install.sh"


def tmpfiles_lines() -> list[list[str]]:
    return [
        line.split()
        for line in TMPFILES.read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]


def test_tmpfiles_creates_the_state_directory_like_the_unit() -> None:
    # The README's `sudo -u emotion-edge emotion-edge models fetch --dest /var/lib/emotion-edge/models`
    # runs before the first start, so the directory must not wait for StateDirectory=.
    s = unit_settings()
    (state,) = s["StateDirectory"]
    (mode,) = s.get("StateDirectoryMode", ["0755"])
    (user,), (group,) = s["User"], s["Group"]
    assert tmpfiles_lines() == [["d", f"/var/lib/{state}", mode, user, group, "-"]]
    assert s["WorkingDirectory"] == [f"/var/lib/{state}"]


def test_tmpfiles_config_applies(tmp_path: Path) -> None:
    sysusers = require_tool("systemd-sysusers")
    tmpfiles = require_tool("systemd-tmpfiles")
    (tmp_path / "etc").mkdir()
    subprocess.run([sysusers, f"--root={tmp_path}", str(SYSUSERS)], check=True, capture_output=True)
    result = subprocess.run(
        [tmpfiles, f"--root={tmp_path}", "--create", str(TMPFILES)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    state = tmp_path / "var" / "lib" / "emotion-edge"
    uid, gid = next(
        (int(f[2]), int(f[3]))
        for f in (line.split(":") for line in (tmp_path / "etc" / "passwd").read_text().splitlines())
        if f[0] == "emotion-edge"
    )
    st = state.stat()
    assert (st.st_uid, st.st_gid, oct(st.st_mode & 0o7777)) == (uid, gid, "0o700")


def test_configuration_directory_mode_matches_install_sh() -> None:
    # install.sh creates /etc/emotion-edge 0750 root:emotion-edge (the daemon reads config.toml through the
    # group); with the default ConfigurationDirectoryMode=0755 systemd would report a mode mismatch.
    s = unit_settings()
    assert s["ConfigurationDirectory"] == ["emotion-edge"]
    created = re.search(r'(?m)^run install -d -m (\d+) "\$ETC"$', INSTALL.read_text())
    assert created, "install.sh no longer creates $ETC with install -d -m MODE"
    assert s.get("ConfigurationDirectoryMode") == [created.group(1)] == ["0750"]


# --- GPIO UART drop-in ---------------------------------------------------------------------------------

UART_DROPIN = ROOT / "systemd" / "emotion-edge.service.d" / "uart.conf"


def verify_with_dropin(tmp_path: Path, dropin_text: str) -> subprocess.CompletedProcess[str]:
    result = verify_copy(tmp_path)  # writes the unit copy next to the drop-in directory
    assert result.returncode == 0, result.stdout + result.stderr
    dropin_dir = tmp_path / f"{UNIT_NAME}.d"
    dropin_dir.mkdir(exist_ok=True)
    (dropin_dir / "uart.conf").write_text(dropin_text)
    return subprocess.run(
        [require_tool("systemd-analyze"), "verify", str(tmp_path / UNIT_NAME)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_uart_dropin_verifies(tmp_path: Path) -> None:
    result = verify_with_dropin(tmp_path, UART_DROPIN.read_text())
    assert result.returncode == 0, result.stdout + result.stderr
    assert [line for line in own_messages(result) if "uart.conf" in line] == []


def test_verify_reads_the_dropin(tmp_path: Path) -> None:
    # Guards the test above: a bad key in the drop-in must be reported, i.e. verify did load the drop-in.
    result = verify_with_dropin(tmp_path, UART_DROPIN.read_text() + "DeviceAlow=/dev/ttyS0 rw\n")
    assert any("DeviceAlow" in line for line in (result.stdout + result.stderr).splitlines()), (
        result.stdout + result.stderr
    )


def test_uart_dropin_allows_the_gpio_uart_only() -> None:
    lines = [line.strip() for line in UART_DROPIN.read_text().splitlines()]
    settings = [line for line in lines if line and not line.startswith("#")]
    assert settings[0] == "[Service]"
    allows = [line.removeprefix("DeviceAllow=").split() for line in settings[1:]]
    assert all(line.startswith("DeviceAllow=") for line in settings[1:]), settings
    # /dev/ttyAMA0 (PL011, major 204 "ttyAMA") and /dev/ttyS0 (mini UART). /dev/serial0 is a symlink to one of
    # them. char-ttyS would be major 4, which also holds the virtual consoles /dev/tty0..63: name the node.
    assert ["char-ttyAMA", "rw"] in allows
    assert ["/dev/ttyS0", "rw"] in allows
    assert not any(a[0] in ("char-ttyS", "char-tty", "char-*") for a in allows)
    # Only DeviceAllow= lines: the drop-in adds to the unit's allow-list and keeps DevicePolicy=closed.
    assert unit_settings()["DevicePolicy"] == ["closed"]
