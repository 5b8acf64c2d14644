"""Commands on ``{prefix}/{id}/set/<switch>``: strict payloads, retained ones ignored, floods coalesced.

The parser is checked directly; everything else against a real mosquitto and the real daemon
process, as Home Assistant (or a misbehaving script) would drive it.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge.config import Config
from edge.publish.commands import CommandError, SwitchCommand, parse_command
from edge.publish.discovery import discovery_payload
from edge.publish.topics import Topics
from tests.harness import Daemon, Mosquitto, Subscriber, daemon_config, replay_emg, wait_until

PREFIX = "emotion_edge"
BASE = f"{PREFIX}/test_pi"

# --- 1. the parser: exactly ON or OFF -------------------------------------------------------------------


@pytest.mark.parametrize(("payload", "on"), [(b"ON", True), (b"OFF", False)])
def test_exact_on_off_accepted(payload: bytes, on: bool) -> None:
    assert parse_command(BASE, f"{BASE}/set/privacy", payload) == SwitchCommand("privacy", on)


@pytest.mark.parametrize(
    "payload",
    [
        b"on", b"off", b"On", b"Off", b"1", b"0", b"true", b"false", b"TRUE", b"pause", b"resume",
        b"enable", b"disabled", b" ON", b"ON ", b"ON\n", b"\tOFF", b'"ON"', b"'OFF'", b"ON\x00", b"",
        b"ONN", b"OF", b"\xef\xbb\xbfON", b"O N",
    ],
)  # fmt: skip
def test_anything_but_exact_on_off_rejected(payload: bytes) -> None:
    with pytest.raises(CommandError, match="exactly ON or OFF"):
        parse_command(BASE, f"{BASE}/set/emg_paused", payload)


def test_rejections_name_the_problem_without_echoing_a_long_payload() -> None:
    with pytest.raises(CommandError) as exc:
        parse_command(BASE, f"{BASE}/set/emg_paused", b"x" * 1000)
    assert len(str(exc.value)) < 120 and "984 bytes" in str(exc.value)
    with pytest.raises(CommandError, match="unknown switch 'reactor'"):
        parse_command(BASE, f"{BASE}/set/reactor", b"ON")
    with pytest.raises(CommandError, match="not a command topic"):
        parse_command(BASE, f"{PREFIX}/other/set/privacy", b"ON")


def test_home_assistant_switches_send_what_the_parser_takes() -> None:
    """Discovery tells Home Assistant which payloads to send; each must parse, and mean on/off."""
    topics = Topics(PREFIX, "test_pi", "homeassistant")
    config = Config.model_validate({"device_id": "test_pi", "camera": {"source": "images", "path": "/x"}})
    switches = [c for c in discovery_payload(topics, config)["cmps"].values() if c["p"] == "switch"]
    assert len(switches) == 3
    for comp in switches:
        on = parse_command(topics.base, comp["command_topic"], comp["payload_on"].encode())
        off = parse_command(topics.base, comp["command_topic"], comp["payload_off"].encode())
        assert (on.on, off.on) == (True, False)


# --- helpers for the daemon tests --------------------------------------------------------------------------


@contextmanager
def running(
    tmp_path: Path, emg_csv: Path, broker_extra: list[str] | None = None
) -> Iterator[tuple[Mosquitto, Subscriber, Path]]:
    broker = Mosquitto(tmp_path / "broker", extra=broker_extra or []).start()
    sub = Subscriber(broker.port, [f"{BASE}/#"])
    config = daemon_config(tmp_path, broker.port, emg=replay_emg(emg_csv, speed=8, loop=True))
    try:
        yield broker, sub, config
    finally:
        sub.close()
        broker.stop()


def stats_after(sub: Subscriber, t0: float) -> list[dict[str, Any]]:
    topic = f"{BASE}/stats"
    with sub._lock:
        return [json.loads(p) for t, tp, p, _ in sub.messages if tp == topic and t > t0]


def latest_stats(sub: Subscriber, t0: float = 0.0) -> dict[str, Any]:
    stats = stats_after(sub, t0)
    return stats[-1] if stats else {}


def mqtt_stats(sub: Subscriber, t0: float = 0.0) -> dict[str, Any]:
    stats: dict[str, Any] = latest_stats(sub, t0).get("mqtt", {})
    return stats


def publisher(port: int) -> mqtt.Client:
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=f"cmd-pub-{os.getpid()}", protocol=mqtt.MQTTv311
    )
    client.max_inflight_messages_set(1000)
    client.connect("127.0.0.1", port)
    client.loop_start()
    return client


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def command_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if "command" in line and "edge.publish" in line]


def assert_alive(d: Daemon) -> None:
    assert d.proc.poll() is None, f"daemon exited with {d.proc.returncode}:\n{d.log[-3000:]}"


# --- 2. a flood of valid commands ------------------------------------------------------------


def test_command_flood_is_coalesced_and_costs_little(tmp_path: Path, emg_csv: Path) -> None:
    """10,000 valid toggles: few log lines, events keep flowing promptly, memory stays put."""
    n = 10_000
    switch, state = f"{BASE}/set/privacy", f"{BASE}/switch/privacy"
    events = f"{BASE}/event"
    # Deliver every command (mosquitto drops a QoS 1 backlog beyond 1000 per client by default).
    with running(tmp_path, emg_csv, ["max_queued_messages 0", "max_inflight_messages 0"]) as (
        broker,
        sub,
        config,
    ):
        d = Daemon(config, tmp_path)
        try:
            sub.wait_for(events, lambda m: len(m) >= 3, timeout=30)
            sub.wait_for(state, lambda m: m[-1:] == [b"OFF"], timeout=10)
            time.sleep(3.0)  # warm: the model, the outbox and paho have allocated what they need
            rss0 = rss_kib(d.proc.pid)
            lines0 = len(command_lines(d.log))
            wall_minus_mono = time.time() - time.monotonic()
            t_flood = time.monotonic()

            pub = publisher(broker.port)
            try:
                # Alternating, ending with ON (odd count of ON after OFF first): the last one wins.
                infos = [pub.publish(switch, b"ON" if i % 2 else b"OFF", qos=1) for i in range(n)]
                for info in infos:
                    info.wait_for_publish(60)
            finally:
                pub.loop_stop()
                pub.disconnect()
            t_sent = time.monotonic()

            wait_until(
                lambda: mqtt_stats(sub, t_sent).get("commands_received") == n,
                60,
                what=f"the daemon to count {n} commands",
            )
            sub.wait_for(state, lambda m: m[-1:] == [b"ON"], timeout=10)
            t_on = time.monotonic()
            wait_until(lambda: latest_stats(sub, t_on).get("switches", {}).get("privacy") is True, 10)
            time.sleep(2.0)
            rss1 = rss_kib(d.proc.pid)
            t_end = time.monotonic()
            # Events kept flowing during the flood, each within a bounded delay of its creation.
            with sub._lock:
                during = [
                    (t + wall_minus_mono - json.loads(p)["ts"], json.loads(p)["seq"])
                    for t, tp, p, _ in sub.messages
                    if tp == events and t_flood <= t <= t_end
                ]
            assert_alive(d)
            stats = mqtt_stats(sub)
            log = d.log
        finally:
            d.stop()
            d.kill()

    flood_lines = command_lines(log)[lines0:]
    print(
        f"rss {rss0 / 1024:.1f} -> {rss1 / 1024:.1f} MiB; {len(flood_lines)} command log lines; "
        f"{len(during)} events, max delay {max((x for x, _ in during), default=0):.2f} s; "
        f"flood sent in {t_sent - t_flood:.1f} s; stats {stats}"
    )
    assert len(flood_lines) < 100, f"{len(flood_lines)} log lines about commands:\n" + "\n".join(
        flood_lines[:20]
    )
    assert during, "no event arrived during the flood"
    assert max(x for x, _ in during) < 3.0, f"events delayed up to {max(x for x, _ in during):.1f} s"
    assert (rss1 - rss0) / 1024 < 25, f"RSS grew {(rss1 - rss0) / 1024:.1f} MiB"
    assert stats["commands_coalesced"] > n // 2
    assert stats["commands_applied"] < n // 10
    assert stats["commands_rate_limited"] > 0
    assert stats["commands_rejected"] == 0
    assert "Traceback" not in log


# --- 3. commands that are not exactly ON/OFF: counted, logged a few times --------------------


def test_lenient_payloads_are_rejected_counted_and_logged_sparingly(tmp_path: Path, emg_csv: Path) -> None:
    switch, state = f"{BASE}/set/emg_paused", f"{BASE}/switch/emg_paused"
    bad = [b"on", b"1", b"true", b" ON", b"ON\n", b'"ON"', b"On", b"pause"]
    with running(tmp_path, emg_csv) as (broker, sub, config):
        d = Daemon(config, tmp_path)
        try:
            sub.wait_for(state, lambda m: m[-1:] == [b"OFF"], timeout=30)
            wait_until(lambda: bool(mqtt_stats(sub)), 10, what="stats")
            pub = publisher(broker.port)
            try:
                for _ in range(25):
                    for payload in bad:
                        pub.publish(switch, payload, qos=1).wait_for_publish(10)
            finally:
                pub.loop_stop()
                pub.disconnect()
            t_sent = time.monotonic()
            total = 25 * len(bad)
            wait_until(
                lambda: mqtt_stats(sub, t_sent).get("commands_received", 0) >= total,
                20,
                what="the daemon to count the commands",
            )
            time.sleep(1.0)
            stats = latest_stats(sub, time.monotonic() - 0.6)
            assert_alive(d)
            log = d.log
        finally:
            d.stop()
            d.kill()
    assert stats["mqtt"]["commands_rejected"] == total, stats["mqtt"]
    assert stats["switches"]["emg_paused"] is False, "a lenient payload was taken as ON"
    assert sub.on(state) and set(sub.on(state)) == {b"OFF"}
    rejected = [line for line in log.splitlines() if "ignored command" in line]
    assert 1 <= len(rejected) <= 12, f"{len(rejected)} lines for {total} rejected commands"
    assert "exactly ON or OFF" in rejected[0]


# --- 4. a retained command does not override the saved state at the next start ------------------------------


def test_retained_command_is_ignored_at_restart(tmp_path: Path, emg_csv: Path) -> None:
    switch, state = f"{BASE}/set/emg_paused", f"{BASE}/switch/emg_paused"
    with running(tmp_path, emg_csv) as (broker, sub, config):
        d = Daemon(config, tmp_path)
        try:
            sub.wait_for(state, lambda m: m[-1:] == [b"OFF"], timeout=30)
            pub = publisher(broker.port)
            try:
                # A retained ON (a misconfigured tool, or HA with retain: true) applies while running...
                pub.publish(switch, b"ON", qos=1, retain=True).wait_for_publish(10)
                sub.wait_for(state, lambda m: m[-1:] == [b"ON"], timeout=10)
                # ...then the user switches it off again: OFF is saved.
                pub.publish(switch, b"OFF", qos=1).wait_for_publish(10)
                sub.wait_for(state, lambda m: m[-1:] == [b"OFF"], timeout=10)
            finally:
                pub.loop_stop()
                pub.disconnect()
            assert d.stop() == 0
        finally:
            d.kill()

        # The broker still holds the retained ON and replays it when the daemon subscribes again.
        t_restart = time.monotonic()
        d2 = Daemon(config, tmp_path)
        try:
            wait_until(
                lambda: mqtt_stats(sub, t_restart).get("commands_received", 0) >= 1,
                30,
                what="the replayed retained command to reach the daemon",
            )
            time.sleep(1.0)  # a command taken would be applied (and show in stats) by now
            after = latest_stats(sub, time.monotonic() - 0.6)
            assert_alive(d2)
            log = d2.log
        finally:
            d2.stop()
            d2.kill()
    assert after["switches"]["emg_paused"] is False, "the retained ON overrode the saved OFF"
    assert after["mqtt"]["commands_ignored_retained"] == 1
    restarted_states = [p for t, tp, p, _ in sub.messages if tp == state and t > t_restart]
    assert restarted_states and set(restarted_states) == {b"OFF"}
    assert len(re.findall(r"ignored a retained command", log)) == 1
    assert "mosquitto_pub -r -n" in log
