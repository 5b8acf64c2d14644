from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.sdnotify import ProgressWatchdog, SystemdNotifier


@pytest.fixture
def listener(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(2.0)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    yield sock
    sock.close()


def recv(sock: socket.socket) -> bytes:
    return sock.recv(4096)


def test_messages_arrive_byte_exact(listener: socket.socket) -> None:
    with SystemdNotifier() as notifier:
        assert notifier.enabled
        assert notifier.ready()
        assert recv(listener) == b"READY=1"
        assert notifier.status("streaming: emg 1000 Hz")
        assert recv(listener) == b"STATUS=streaming: emg 1000 Hz"
        assert notifier.watchdog()
        assert recv(listener) == b"WATCHDOG=1"
        assert notifier.stopping()
        assert recv(listener) == b"STOPPING=1"


def test_notify_fields_form_one_datagram(listener: socket.socket) -> None:
    with SystemdNotifier() as notifier:
        assert notifier.notify(READY=True, STATUS="up", EXTEND_TIMEOUT_USEC=5_000_000)
        assert recv(listener) == b"READY=1\nSTATUS=up\nEXTEND_TIMEOUT_USEC=5000000"


def test_reloading_carries_monotonic_timestamp(listener: socket.socket) -> None:
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    with SystemdNotifier() as notifier:
        assert notifier.reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    first, second = recv(listener).decode().split("\n")
    assert first == "RELOADING=1"
    key, _, usec = second.partition("=")
    assert key == "MONOTONIC_USEC"
    assert before <= int(usec) <= after


def test_status_cannot_inject_other_assignments(listener: socket.socket) -> None:
    with SystemdNotifier() as notifier:
        assert notifier.status("serial error\nREADY=1")
        assert recv(listener) == b"STATUS=serial error READY=1"
        with pytest.raises(ValueError):
            notifier.send("STATUS=a\nREADY=1")
        with pytest.raises(ValueError):
            notifier.send("READY")


def test_explicit_path_overrides_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "elsewhere.sock"))
    path = tmp_path / "explicit.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(2.0)
        with SystemdNotifier(str(path)) as notifier:
            assert notifier.ready()
        assert recv(sock) == b"READY=1"


def test_abstract_namespace_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"emotion-edge-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(2.0)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        with SystemdNotifier() as notifier:
            assert notifier.enabled
            assert notifier.watchdog()
        assert recv(sock) == b"WATCHDOG=1"


def test_unset_socket_is_a_quiet_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    notifier = SystemdNotifier()
    assert not notifier.enabled
    assert not notifier.ready()
    assert not notifier.status("x")
    assert not notifier.watchdog()
    assert not notifier.stopping()
    assert not notifier.reloading()
    assert notifier.watchdog_interval_s() is None
    assert not SystemdNotifier("").enabled
    assert not SystemdNotifier("vsock:2:1234").enabled


def test_send_failure_returns_false_and_logs_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="edge.sdnotify")
    notifier = SystemdNotifier(str(tmp_path / "nobody-listens.sock"))
    assert notifier.enabled
    assert not notifier.ready()
    assert not notifier.watchdog()
    assert len([r for r in caplog.records if r.name == "edge.sdnotify"]) == 1
    notifier.close()


def test_recovers_when_the_socket_appears_later(tmp_path: Path) -> None:
    path = tmp_path / "late.sock"
    with SystemdNotifier(str(path)) as notifier:
        assert not notifier.ready()
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.bind(str(path))
            sock.settimeout(2.0)
            assert notifier.ready()
            assert recv(sock) == b"READY=1"


@pytest.mark.parametrize(
    ("usec", "pid", "expected"),
    [
        ("30000000", None, 15.0),
        ("30000000", "self", 15.0),
        ("1000", "self", 0.0005),
        ("30000000", "other", None),
        ("30000000", "garbage", None),
        (None, None, None),
        ("", None, None),
        ("0", None, None),
        ("-5", None, None),
        ("thirty", None, None),
    ],
)
def test_watchdog_interval(
    listener: socket.socket,
    monkeypatch: pytest.MonkeyPatch,
    usec: str | None,
    pid: str | None,
    expected: float | None,
) -> None:
    if usec is None:
        monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    else:
        monkeypatch.setenv("WATCHDOG_USEC", usec)
    pids = {"self": str(os.getpid()), "other": str(os.getpid() + 1)}
    if pid is None:
        monkeypatch.delenv("WATCHDOG_PID", raising=False)
    else:
        monkeypatch.setenv("WATCHDOG_PID", pids.get(pid, pid))
    assert SystemdNotifier().watchdog_interval_s() == expected


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_progress_watchdog_detects_stalls() -> None:
    clock = FakeClock()
    wd = ProgressWatchdog(clock)
    wd.register("emg", 2.0)
    wd.register("camera", 10.0)
    assert wd.healthy() == (True, [])

    clock.t += 1.5
    wd.beat("emg")
    clock.t += 1.5  # emg beat 1.5 s ago, camera silent for 3 s of its 10
    assert wd.healthy() == (True, [])

    clock.t += 1.0  # emg silent for 2.5 s
    assert wd.healthy() == (False, ["emg"])
    wd.beat("emg")
    assert wd.healthy() == (True, [])

    clock.t += 20.0
    assert wd.healthy() == (False, ["emg", "camera"])
    # An explicit time is used as-is, e.g. from a caller that already read the clock.
    assert wd.healthy(now=clock.t - 19.0) == (True, [])


def test_exactly_at_limit_is_not_stalled() -> None:
    clock = FakeClock()
    wd = ProgressWatchdog(clock)
    wd.register("emg", 2.0)
    clock.t += 2.0
    assert wd.healthy() == (True, [])


def test_paused_stage_is_not_stalled_and_gets_a_fresh_window_on_resume() -> None:
    clock = FakeClock()
    wd = ProgressWatchdog(clock)
    wd.register("camera", 5.0)
    wd.register("emg", 5.0)
    wd.pause("camera")
    clock.t += 60.0
    wd.beat("emg")
    assert wd.healthy() == (True, [])

    wd.resume("camera")
    clock.t += 4.0
    wd.beat("emg")
    assert wd.healthy() == (True, [])
    clock.t += 2.0
    assert wd.healthy() == (False, ["camera"])

    # Resuming a running stage must not hide a stall.
    wd.resume("camera")
    assert wd.healthy() == (False, ["camera"])


def test_register_again_and_unregister() -> None:
    clock = FakeClock()
    wd = ProgressWatchdog(clock)
    wd.register("emg", 1.0)
    clock.t += 5.0
    assert wd.healthy() == (False, ["emg"])
    wd.register("emg", 1.0)  # a restarted stage
    assert wd.healthy() == (True, [])
    clock.t += 5.0
    wd.unregister("emg")
    assert wd.healthy() == (True, [])
    wd.unregister("emg")  # idempotent


def test_unknown_stage_and_bad_limit_are_errors() -> None:
    wd = ProgressWatchdog()
    with pytest.raises(KeyError, match="camera"):
        wd.beat("camera")
    with pytest.raises(KeyError):
        wd.pause("camera")
    with pytest.raises(ValueError):
        wd.register("emg", 0)
    with pytest.raises(ValueError):
        wd.register("emg", float("nan"))
