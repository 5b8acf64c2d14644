"""Broker-side faults the daemon must name, survive and keep in order, and log floods it must contain.

* A peer that accepts the TCP connection and closes it before any CONNACK (a plain client on a
  TLS port, a port that is not MQTT at all): named in the log, at ERROR, once per interval.
* Event order across a reconnect whose CONNACK is slow: a TCP proxy in front of a real mosquitto
  holds the CONNACK back, which widens (deterministically) the window that a loaded machine opens
  by chance between paho's new CONNECT and its resending of the unacknowledged events.
* :class:`edge.logs.LogLimiter`, and the outbox's ``outbox full`` warning that used it to need.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import pytest

import edge.logs
from edge.config.mqtt import MqttConfig
from edge.logs import LogLimiter
from edge.outbox import AsyncOutbox, Outbox
from edge.publish.mqtt_link import MqttLink, event_payload
from edge.publish.topics import Topics
from edge.tasks import Supervisor
from tests.harness import Daemon, Mosquitto, Subscriber, daemon_config, replay_emg, wait_until

# --- 1. LogLimiter ------------------------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def limiter(caplog: pytest.LogCaptureFixture, **kwargs: Any) -> tuple[LogLimiter, FakeClock]:
    clock = FakeClock()
    caplog.set_level(logging.INFO, logger="test.limited")
    return LogLimiter(logging.getLogger("test.limited"), 60.0, clock=clock, timers=False, **kwargs), clock


def messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "test.limited"]


def test_log_limiter_first_line_then_one_summary_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    lim, clock = limiter(caplog)
    assert lim.warning("full", "outbox full (%d events): dropped %d", 10, 1) is True
    for i in range(500):
        clock.now += 0.1
        lim.warning("full", "outbox full (%d events): dropped %d", 10, i)
    assert messages(caplog) == ["outbox full (10 events): dropped 1"]
    clock.now += 20  # 70 s after the first line: the next occurrence writes the summary
    lim.warning("full", "outbox full (%d events): dropped %d", 10, 7)
    assert messages(caplog)[1] == "outbox full (10 events): dropped 7 [501 more like this in the last 70 s]"
    # In the next interval, again at most one line.
    for _ in range(100):
        clock.now += 0.5
        lim.warning("full", "outbox full (%d events): dropped %d", 10, 8)
    assert len(messages(caplog)) == 2
    clock.now += 11
    lim.warning("full", "outbox full (%d events): dropped %d", 10, 9)
    assert messages(caplog)[2].endswith("[101 more like this in the last 61 s]")
    assert lim.suppressed == 602
    # A key that stayed quiet for a whole interval starts afresh: logged as is.
    clock.now += 200
    lim.warning("full", "outbox full (%d events): dropped %d", 10, 10)
    assert messages(caplog)[3] == "outbox full (10 events): dropped 10"


def test_log_limiter_burst_keys_and_flush(caplog: pytest.LogCaptureFixture) -> None:
    lim, clock = limiter(caplog, burst=3)
    for i in range(10):
        lim.info("a", "a %d", i)
        lim.info("b", "b %d", i)
    assert messages(caplog) == ["a 0", "b 0", "a 1", "b 1", "a 2", "b 2"]
    clock.now += 5
    lim.flush()
    assert messages(caplog)[6:] == [
        "a 9 [7 more like this in the last 5 s]",
        "b 9 [7 more like this in the last 5 s]",
    ]
    # A '%' in the arguments is not taken for a placeholder in the summary.
    lim.info("c", "%s", "100%")
    lim.info("c", "%s", "50%s")
    lim.info("c", "%s", "50%s")
    lim.info("c", "%s", "50%s")
    lim.flush()
    assert messages(caplog)[-1] == "50%s [1 more like this in the last 0 s]"


def test_log_limiter_timer_writes_the_summary_when_occurrences_stop(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="test.limited")
    lim = LogLimiter(logging.getLogger("test.limited"), 0.3)
    for _ in range(50):
        lim.error("k", "closed before answering")
    assert messages(caplog) == ["closed before answering"]
    wait_until(lambda: len(messages(caplog)) == 2, 5, what="the timer's summary")
    assert messages(caplog)[1].startswith("closed before answering [49 more like this in the last 0 s]")


def test_outbox_full_is_logged_once_per_interval(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An outage with a full outbox wrote 'outbox full' for every new event (45,705 lines in 300 s)."""
    # Limiters are per process (one outbox per daemon); another test's outbox must not have used
    # up this one's first line.
    monkeypatch.setattr(edge.logs, "_shared", {})
    caplog.set_level(logging.WARNING, logger="edge.outbox")
    outbox = Outbox(tmp_path / "outbox.sqlite3", 5, 1e9)
    try:
        for _ in range(300):
            outbox.append("t", lambda seq: b"{}")
    finally:
        outbox.close()
    full = [r for r in caplog.records if "outbox full" in r.getMessage()]
    assert 1 <= len(full) <= 2, f"{len(full)} 'outbox full' lines for 295 dropped events"


# --- 2. a peer that closes the connection before CONNACK ----------------------------------------------------


@contextmanager
def closing_server(mode: str) -> Iterator[int]:
    """A TCP server that accepts and then closes at once (``close``) or never answers (``silent``)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    srv.settimeout(0.2)
    stop = threading.Event()
    held: list[socket.socket] = []

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if mode == "close":
                conn.close()
            else:
                held.append(conn)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield srv.getsockname()[1]
    finally:
        stop.set()
        thread.join(5)
        srv.close()
        for conn in held:
            conn.close()


@pytest.fixture(scope="module")
def tls_listener_files() -> Iterator[dict[str, Path]]:
    """A self-signed certificate mosquitto can read (it drops to its own user when started as root)."""
    d = Path(tempfile.mkdtemp(prefix="emotion-edge-tls-"))
    d.chmod(0o755)
    key, crt = d / "server.key", d / "server.crt"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(crt), "-days", "2", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    key.chmod(0o644)
    crt.chmod(0o644)
    try:
        yield {"key": key, "cert": crt}
    finally:
        shutil.rmtree(d, ignore_errors=True)


def run_daemon_against(tmp_path: Path, emg_csv: Path, port: int, seconds: float) -> str:
    config = daemon_config(tmp_path, port, emg=replay_emg(emg_csv, speed=1, loop=True))
    d = Daemon(config, tmp_path)
    try:
        wait_until(lambda: "before answering" in d.log or "did not answer" in d.log, 20, interval=0.1)
        time.sleep(seconds)  # more retries, which must not each write a line
        assert d.proc.poll() is None, d.log[-3000:]
        assert d.stop(timeout=10) == 0
    finally:
        d.kill()
    return d.log


def test_plain_client_on_a_tls_port_is_named(
    tmp_path: Path, emg_csv: Path, tls_listener_files: dict[str, Path]
) -> None:
    extra = [f"certfile {tls_listener_files['cert']}", f"keyfile {tls_listener_files['key']}"]
    broker = Mosquitto(tmp_path / "broker", extra=extra).start()
    try:
        log = run_daemon_against(tmp_path, emg_csv, broker.port, 4.0)
    finally:
        broker.stop()
    named = [line for line in log.splitlines() if "closed the connection before answering" in line]
    assert named, log[-3000:]
    assert (
        f"MQTT: 127.0.0.1:{broker.port} closed the connection before answering: is it a TLS port?" in named[0]
    )
    assert " ERROR " in named[0]
    assert len(named) == 1, f"not rate-limited: {named}"
    assert "MQTT: connected to" not in log


@pytest.mark.parametrize("mode", ["close", "silent"])
def test_tcp_server_that_never_answers_is_named(tmp_path: Path, emg_csv: Path, mode: str) -> None:
    with closing_server(mode) as port:
        log = run_daemon_against(tmp_path, emg_csv, port, 3.0 if mode == "close" else 0.0)
    errors = [line for line in log.splitlines() if " ERROR " in line and f"127.0.0.1:{port}" in line]
    assert errors, log[-3000:]
    if mode == "close":
        assert "closed the connection before answering: is it a TLS port?" in errors[0]
        assert len(errors) == 1, f"not rate-limited: {errors}"
    else:
        assert "did not answer the MQTT CONNECT within 5 s: is it an MQTT port?" in errors[0]


# --- 3. order across a reconnect with a slow CONNACK --------------------------------------------------


class Proxy:
    """TCP proxy to the broker that can cut every connection and hold back the broker's first bytes
    (the CONNACK) on the next one, for ``connack_delay`` seconds."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.srv = socket.socket()
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen(16)
        self.srv.settimeout(0.2)
        self.port: int = self.srv.getsockname()[1]
        self.connack_delay = 0.0
        self.accepted = threading.Event()
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self.srv.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            with self._lock:
                self._conns += [client, upstream]
                delay, self.connack_delay = self.connack_delay, 0.0
            threading.Thread(
                target=self._pump, args=(client, upstream, 0.0, self.accepted), daemon=True
            ).start()
            threading.Thread(target=self._pump, args=(upstream, client, delay, None), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket, delay: float, first: threading.Event | None) -> None:
        try:
            while data := src.recv(65536):
                if delay:
                    time.sleep(delay)
                    delay = 0.0
                dst.sendall(data)
                if first is not None:
                    first.set()
                    first = None
        except OSError:
            pass
        for s in (src, dst):
            with suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        with self._lock:
            conns, self._conns = self._conns, []
        for s in conns:
            with suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def close(self) -> None:
        self._stop.set()
        self.cut()
        self.srv.close()


async def until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.02)


def test_first_deliveries_stay_in_order_when_the_connack_is_slow(tmp_path: Path) -> None:
    """Events published while paho waits for a CONNACK must not overtake the ones it will resend.

    paho 2.x resends unacknowledged messages when the CONNACK arrives; a publish made after it opened
    the new socket goes on the wire at once. Without a guard, seq 11-12 (published during the slow
    CONNACK) reach the broker before 6-10 (published while disconnected), as seq 66-67 overtook
    54-65 in the broker-restart test on a loaded machine.
    """
    topics = Topics("emotion_edge", "order", "homeassistant")
    broker = Mosquitto(tmp_path / "broker").start()
    proxy = Proxy(broker.port)
    sub = Subscriber(broker.port, [topics.event])

    def seqs() -> list[int]:
        return [json.loads(p)["seq"] for p in sub.on(topics.event)]

    async def scenario() -> None:
        outbox = AsyncOutbox(tmp_path / "outbox.sqlite3", 10_000, 1e9)

        async def nothing() -> None:
            return None

        config = MqttConfig(
            host="127.0.0.1", port=proxy.port, keepalive_s=5, reconnect_min_s=0.2, reconnect_max_s=1.0
        )
        link = MqttLink(
            config,
            topics,
            outbox,
            "127.0.0.1",
            proxy.port,
            nothing,
            lambda t, p: None,
            Supervisor(lambda why: None),
        )

        async def emit(n: int) -> None:
            for _ in range(n):
                await outbox.append(topics.event, lambda seq: event_payload(seq, {"type": "new"}))
            link.notify_new_events()

        await link.start()
        try:
            await until(lambda: link.connected, 10, "the first connection")
            await emit(5)
            await until(lambda: seqs()[-1:] == [5], 10, "seq 1-5")
            # The connection drops; events go on being produced while paho waits to reconnect.
            proxy.accepted.clear()
            proxy.connack_delay = 1.5
            proxy.cut()
            await until(lambda: not link.connected, 10, "the disconnect")
            await emit(5)  # seq 6-10
            # paho reconnects: CONNECT is through, the CONNACK is held back by the proxy.
            await asyncio.to_thread(proxy.accepted.wait, 10)
            await asyncio.sleep(0.2)
            await emit(2)  # seq 11-12, during the slow CONNACK
            await until(lambda: set(seqs()) >= set(range(1, 13)), 15, "every seq")
            await emit(3)  # and new ones flow afterwards, after the others
            await until(lambda: set(seqs()) >= set(range(1, 16)), 15, "seq 13-15")
            assert link.stats.connects == 2
        finally:
            await link.stop()
            await outbox.close()

    try:
        asyncio.run(scenario())
    finally:
        sub.close()
        proxy.close()
        broker.stop()
    first_seen = list(dict.fromkeys(seqs()))
    assert first_seen == sorted(first_seen), f"first deliveries out of order: {first_seen}"
    assert first_seen == list(range(1, 16))
