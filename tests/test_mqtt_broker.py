"""The daemon against a real mosquitto with anonymous, password and TLS listeners.

Modelled on aiomqtt's test set-up: every test starts a real broker (with the listener kind under
test) and the real daemon process replaying the EMG recording in real time, then checks what a
Home Assistant-like client sees on the wire.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import pytest

from edge.config import Config, load_config
from edge.publish.discovery import EVENT_TYPES, discovery_payload
from edge.publish.mqtt_link import event_payload
from edge.publish.topics import Topics
from tests.harness import Daemon, Mosquitto, Subscriber, daemon_config, replay_emg, wait_until

PREFIX = "emotion_edge"
# Distinctive texts: any hit in a log or payload can only be a leak.
RIGHT_PASSWORD = "S3cr3t-xyz-Right-7Q"
WRONG_PASSWORD = "S3cr3t-xyz-Wrong-4K"
DEVICE_USER = "edge_device"
OBSERVER_USER = "observer"
OBSERVER_PASSWORD = "0bserver-pw-91"


def base(device_id: str) -> str:
    return f"{PREFIX}/{device_id}"


# --- helpers -------------------------------------------------------------------------------------------


@contextmanager
def broker(workdir: Path, extra: list[str] | None = None) -> Iterator[Mosquitto]:
    b = Mosquitto(workdir, extra=extra or []).start()
    try:
        yield b
    finally:
        b.stop()


@contextmanager
def subscriber(port: int, topics: list[str], **kwargs: Any) -> Iterator[Subscriber]:
    s = Subscriber(port, topics, **kwargs)
    try:
        yield s
    finally:
        s.close()


@contextmanager
def daemon(
    tmp_path: Path,
    port: int,
    emg_csv: Path,
    device_id: str,
    mqtt_extra: str = "",
    env: dict[str, str] | None = None,
) -> Iterator[Daemon]:
    config = daemon_config(
        tmp_path,
        port,
        device_id=device_id,
        emg=replay_emg(emg_csv, speed=1, loop=True),
        mqtt_extra=mqtt_extra,
    )
    d = Daemon(config, tmp_path, env=env)
    try:
        yield d
    finally:
        d.kill()


def assert_alive(d: Daemon) -> None:
    assert d.proc.poll() is None, f"daemon exited with {d.proc.returncode}:\n{d.log[-3000:]}"


def stats_of(sub: Subscriber, device_id: str) -> list[dict[str, Any]]:
    return sub.json_on(f"{base(device_id)}/stats")


def latest_stats(sub: Subscriber, device_id: str) -> dict[str, Any]:
    stats = stats_of(sub, device_id)
    return stats[-1] if stats else {}


def stats_after(sub: Subscriber, device_id: str, t0: float) -> list[dict[str, Any]]:
    topic = f"{base(device_id)}/stats"
    with sub._lock:
        return [json.loads(p) for t, tp, p, _ in sub.messages if tp == topic and t > t0]


def wait_for_log(d: Daemon, pattern: str, count: int = 1, timeout: float = 10) -> None:
    def seen() -> bool:
        assert_alive(d)
        return len(re.findall(pattern, d.log)) >= count

    wait_until(seen, timeout, interval=0.1, what=f"{count}x {pattern!r} in the daemon log")


@pytest.fixture(scope="module")
def broker_files() -> Iterator[Path]:
    """A directory the broker can read files from.

    Started as root, mosquitto drops to its own user before it loads the password file and the
    certificates, and pytest's tmp_path (under a 0700 directory) is out of its reach.
    """
    d = Path(tempfile.mkdtemp(prefix="emotion-edge-broker-"))
    d.chmod(0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def readable(*paths: Path) -> None:
    for path in paths:
        path.chmod(0o644)


def all_payloads(sub: Subscriber) -> list[bytes]:
    with sub._lock:
        return [p for _, _, p, _ in sub.messages]


def assert_no_secret(texts: list[bytes | str], *secrets: str) -> None:
    for text in texts:
        raw = text.encode() if isinstance(text, str) else text
        for secret in secrets:
            assert secret.encode() not in raw, f"secret leaked into {raw[:200]!r}"


# --- 1. anonymous listener: retained availability ---------------------------------------------------


def test_availability_online_is_retained_for_late_subscribers(tmp_path: Path, emg_csv: Path) -> None:
    device_id = "anon_retained"
    avail = f"{base(device_id)}/availability"
    with (
        broker(tmp_path / "broker") as b,
        subscriber(b.port, [avail]) as early,
        daemon(tmp_path, b.port, emg_csv, device_id) as d,
    ):
        early.wait_for(avail, lambda m: m[-1:] == [b"online"], timeout=15)
        # Connected only now, after the daemon went online: the broker must replay it, retained.
        with subscriber(b.port, [avail]) as late:
            wait_until(lambda: late.on(avail) == [b"online"], 5, what="retained online")
            assert [(t, p, r) for _, t, p, r in late.messages] == [(avail, b"online", True)]
        assert_alive(d)
        assert "MQTT: connected to 127.0.0.1" in d.log


# --- 2. discovery payload as Home Assistant requires it ---------------------------------------------


def _component(cmps: dict[str, Any], platform: str, **match: Any) -> list[tuple[str, dict[str, Any]]]:
    return [
        (key, c)
        for key, c in cmps.items()
        if c.get("p", c.get("platform")) == platform and all(c.get(k) == v for k, v in match.items())
    ]


def validate_discovery(payload: dict[str, Any], device_id: str) -> None:
    """Home Assistant's required fields for device-based discovery (``homeassistant/device/<id>/config``)."""
    b = base(device_id)
    # Device: identifiers and a name (abbreviated or not).
    dev = payload.get("dev", payload.get("device"))
    assert isinstance(dev, dict), "device-based discovery needs 'dev'"
    ids = dev.get("ids", dev.get("identifiers"))
    assert ids and (isinstance(ids, str) or all(isinstance(i, str) and i for i in ids))
    assert isinstance(dev.get("name"), str) and dev["name"]
    # Origin: required for device-based discovery, at least a name.
    origin = payload.get("o", payload.get("origin"))
    assert isinstance(origin, dict) and isinstance(origin.get("name"), str) and origin["name"]
    # Components: a dict of component-id -> config, each with a platform and a unique_id.
    cmps = payload.get("cmps", payload.get("components"))
    assert isinstance(cmps, dict) and cmps
    unique_ids = []
    for key, comp in cmps.items():
        assert isinstance(comp, dict), key
        platform = comp.get("p", comp.get("platform"))
        assert platform, f"component {key} has no platform"
        # Every topic a component names lives under the device's base topic.
        for k, v in comp.items():
            if k.endswith("_topic") or k == "topic":
                assert isinstance(v, str) and v.startswith(f"{b}/"), (key, k, v)
        if platform == "device_automation":  # device triggers are not entities: no unique_id
            assert comp["automation_type"] == "trigger" and comp["type"] and comp["subtype"], key
            continue
        assert isinstance(comp.get("unique_id"), str) and comp["unique_id"], f"component {key}: no unique_id"
        unique_ids.append(comp["unique_id"])
    assert len(unique_ids) == len(set(unique_ids)), f"duplicate unique_id: {unique_ids}"

    sensors = _component(cmps, "sensor")
    assert sensors and all(c.get("state_topic") for _, c in sensors)
    emotion = [c for _, c in sensors if c.get("json_attributes_topic")]
    assert emotion, "the emotion sensor must publish its probabilities as attributes"
    assert emotion[0]["json_attributes_topic"] == f"{b}/state"
    assert "value_json.probs" in emotion[0].get("json_attributes_template", "")
    assert "value_json.emotion" in emotion[0].get("value_template", "")

    events = _component(cmps, "event")
    assert len(events) == 1
    event = events[0][1]
    assert event["state_topic"] == f"{b}/event"
    assert {"new", "update", "end"} <= set(event["event_types"])
    # HA reads the event type from 'event_type'; our payload carries it as 'type'.
    assert "value_json.type" in event["value_template"]
    assert "event_type" in event["value_template"]

    # The daemons here replay EMG without a camera: only EMG's entities are declared.
    assert not _component(cmps, "binary_sensor", state_topic=f"{b}/modality/camera/available")
    for modality in ("emg",):
        found = _component(cmps, "binary_sensor", state_topic=f"{b}/modality/{modality}/available")
        assert len(found) == 1, f"no connectivity binary_sensor for {modality}"
        assert found[0][1]["device_class"] == "connectivity"

    for switch in ("emg_paused",):
        found = _component(cmps, "switch", command_topic=f"{b}/set/{switch}")
        assert len(found) == 1, f"no switch for {switch}"
        assert found[0][1]["state_topic"] == f"{b}/switch/{switch}"
        assert found[0][1]["command_topic"].startswith(f"{b}/set/")

    # Availability shared by every component (top level) or set on each one.
    availability = payload.get("availability_topic", payload.get("avty_t"))
    if availability is None:
        assert all(c.get("availability_topic") == f"{b}/availability" for c in cmps.values())
    else:
        assert availability == f"{b}/availability"


def test_discovery_payload_has_home_assistant_required_fields(tmp_path: Path, emg_csv: Path) -> None:
    device_id = "anon_discovery"
    b = base(device_id)
    disc = f"homeassistant/device/{device_id}/config"
    with (
        broker(tmp_path / "broker") as br,
        subscriber(br.port, [disc, f"{b}/#"]) as sub,
        daemon(tmp_path, br.port, emg_csv, device_id) as d,
    ):
        sub.wait_for(disc, lambda m: len(m) >= 1, timeout=15)
        payload = json.loads(sub.on(disc)[0])
        validate_discovery(payload, device_id)
        # The payload the daemon sent is exactly what the module builds (no drift in the service).
        assert payload == discovery_payload(
            Topics(PREFIX, device_id, "homeassistant"), load_config(d.config, env={})
        )
        # What the templates read is really in the payloads on those topics.
        sub.wait_for(f"{b}/event", lambda m: len(m) >= 1, timeout=10)
        ev = json.loads(sub.on(f"{b}/event")[0])
        assert ev["type"] in payload["cmps"]["episode"]["event_types"]
        sub.wait_for(f"{b}/state", lambda m: len(m) >= 1, timeout=10)
        state = json.loads(sub.on(f"{b}/state")[-1])
        assert state["emotion"] in payload["cmps"]["emotion"]["options"]
        assert {"probs", "confidence", "modalities"} <= state.keys()
        # Retained, so Home Assistant learns the device whenever it connects.
        with subscriber(br.port, [disc]) as late:
            wait_until(lambda: len(late.on(disc)) == 1, 5, what="retained discovery")
            assert late.messages[0][3] is True
        assert_alive(d)


def test_discovery_templates_render_with_jinja2() -> None:
    """Renders the templates Home Assistant evaluates; needs jinja2 (HA's engine), skipped without it."""
    jinja2_sandbox = pytest.importorskip("jinja2.sandbox")
    env = jinja2_sandbox.ImmutableSandboxedEnvironment()
    payload = discovery_payload(Topics(PREFIX, "tmpl", "homeassistant"), Config(device_id="tmpl"))
    cmps = payload["cmps"]
    body = {
        "type": "new",
        "id": "ep-1",
        "emotion": "happy",
        "confidence": 0.91,
        "probs": {"happy": 0.91, "sad": 0.09},
        "modalities": ["emg"],
        "ts": 1.0,
        "sample": 10,
        "device_id": "tmpl",
    }
    value_json = json.loads(event_payload(7, body))
    rendered = json.loads(env.from_string(cmps["episode"]["value_template"]).render(value_json=value_json))
    assert rendered["event_type"] == "new" and rendered["event_type"] in EVENT_TYPES
    assert rendered["emotion"] == "happy" and rendered["seq"] == 7
    state = {"emotion": "happy", "confidence": 0.91, "probs": body["probs"], "modalities": ["emg"], "ts": 1.0}
    assert env.from_string(cmps["emotion"]["value_template"]).render(value_json=state) == "happy"
    attrs = json.loads(env.from_string(cmps["emotion"]["json_attributes_template"]).render(value_json=state))
    assert attrs["happy"] == 0.91 and attrs["confidence"] == 0.91 and attrs["modalities"] == ["emg"]
    assert env.from_string(cmps["confidence"]["value_template"]).render(value_json=state) == "91.0"
    avail = payload["availability_template"]
    assert env.from_string(avail).render(value="online") == "online"
    assert env.from_string(avail).render(value="stopped") == "offline"


# --- 3. Home Assistant restart: discovery is re-sent ------------------------------------------------


def test_home_assistant_restart_resends_discovery(tmp_path: Path, emg_csv: Path) -> None:
    device_id = "anon_ha_restart"
    disc = f"homeassistant/device/{device_id}/config"
    with (
        broker(tmp_path / "broker") as br,
        subscriber(br.port, [disc]) as sub,
        daemon(tmp_path, br.port, emg_csv, device_id) as d,
    ):
        sub.wait_for(disc, lambda m: len(m) >= 1, timeout=15)
        wait_for_log(d, r"MQTT: connected to")

        # HA's birth message, not retained.
        n = len(sub.on(disc))
        sub.client.publish("homeassistant/status", "online", qos=1, retain=False)
        sub.wait_for(disc, lambda m: len(m) > n, timeout=5)

        # HA's birth message, retained (HA's default): also re-sent, and only once per birth; the
        # daemon's own (re)subscriptions must not make the broker replay it into a loop.
        n = len(sub.on(disc))
        sub.client.publish("homeassistant/status", "online", qos=1, retain=True)
        sub.wait_for(disc, lambda m: len(m) > n, timeout=5)
        # A quiet period proves there is no re-send storm (the thing checked is an absence).
        time.sleep(1.0)
        settled = len(sub.on(disc))
        time.sleep(1.5)
        assert len(sub.on(disc)) == settled, "discovery keeps being re-sent"
        assert settled - n == 1, f"one birth message caused {settled - n} discovery messages"

        # 'offline' (HA's last will) asks for nothing.
        sub.client.publish("homeassistant/status", "offline", qos=1, retain=True)
        time.sleep(1.0)
        assert len(sub.on(disc)) == settled
        for p in sub.on(disc):
            validate_discovery(json.loads(p), device_id)
        assert_alive(d)


# --- 4. commands --------------------------------------------------------------------------------------


def test_switch_commands_and_bad_payloads(tmp_path: Path, emg_csv: Path) -> None:
    device_id = "anon_commands"
    b = base(device_id)
    switch = f"{b}/switch/emg_paused"
    emg_avail = f"{b}/modality/emg/available"
    with (
        broker(tmp_path / "broker") as br,
        subscriber(br.port, [f"{b}/#"]) as sub,
        daemon(tmp_path, br.port, emg_csv, device_id) as d,
    ):
        sub.wait_for(f"{b}/availability", lambda m: m[-1:] == [b"online"], timeout=15)
        sub.wait_for(switch, lambda m: m[-1:] == [b"OFF"], timeout=5)
        sub.wait_for(emg_avail, lambda m: m[-1:] == [b"ON"], timeout=10)
        wait_until(lambda: latest_stats(sub, device_id).get("emg", {}).get("samples", 0) > 0, 10)

        # Pause EMG.
        sub.client.publish(f"{b}/set/emg_paused", "ON", qos=1)
        sub.wait_for(switch, lambda m: m[-1:] == [b"ON"], timeout=5)
        sub.wait_for(emg_avail, lambda m: m[-1:] == [b"OFF"], timeout=5)
        t_paused = time.monotonic()
        wait_until(
            lambda: (
                len({s["emg"]["paused_samples"] for s in stats_after(sub, device_id, t_paused)}) >= 2
                and stats_after(sub, device_id, t_paused)[-1]["emg"]["paused_samples"] > 0
            ),
            10,
            what="paused_samples increasing",
        )
        paused = stats_after(sub, device_id, t_paused)[-1]
        assert paused["switches"]["emg_paused"] is True
        assert paused["modalities"]["emg"] is False
        rejected0 = paused["mqtt"]["commands_rejected"]
        received0 = paused["mqtt"]["commands_received"]
        switch_msgs = len(sub.on(switch))

        # Bad commands: logged, counted, ignored.
        bad: list[tuple[str, bytes]] = [
            (f"{b}/set/emg_paused", b"maybe"),
            (f"{b}/set/emg_paused", bytes(range(256)) * 4),  # 1 KiB of garbage
            (f"{b}/set/emg_paused", b"\xff\xfe\xc3\x28ON"),  # not UTF-8
            (f"{b}/set/reactor", b"ON"),  # unknown switch
        ]
        for topic, payload in bad:
            sub.client.publish(topic, payload, qos=1).wait_for_publish(5)
        wait_until(
            lambda: latest_stats(sub, device_id)["mqtt"]["commands_rejected"] == rejected0 + len(bad),
            10,
            what="commands_rejected counting the bad commands",
        )
        wait_for_log(d, r"ignored command", count=len(bad))
        after = latest_stats(sub, device_id)
        assert after["mqtt"]["commands_received"] == received0 + len(bad)
        assert after["switches"]["emg_paused"] is True
        assert len(sub.on(switch)) == switch_msgs and sub.last(switch) == b"ON"
        assert sub.last(emg_avail) == b"OFF"
        assert "reactor" in d.log
        assert_alive(d)

        # Resume.
        sub.client.publish(f"{b}/set/emg_paused", "OFF", qos=1)
        sub.wait_for(switch, lambda m: m[-1:] == [b"OFF"], timeout=5)
        sub.wait_for(emg_avail, lambda m: m[-1:] == [b"ON"], timeout=5)
        t_resumed = time.monotonic()
        wait_until(
            lambda: len({s["emg"]["windows"] for s in stats_after(sub, device_id, t_resumed)}) >= 2,
            10,
            what="windows increasing after resume",
        )
        resumed = stats_after(sub, device_id, t_resumed)
        # Paused samples stop growing once resumed (the first message may predate the switch).
        assert resumed[-1]["emg"]["paused_samples"] == resumed[-2]["emg"]["paused_samples"]
        assert resumed[-1]["switches"]["emg_paused"] is False
        assert resumed[-1]["mqtt"]["commands_rejected"] == rejected0 + len(bad)
        assert_alive(d)
        assert "Traceback" not in d.log


# --- 5. password listener -------------------------------------------------------------------------------


def password_broker_extra(files: Path, name: str) -> list[str]:
    passwd = files / f"{name}.passwd"
    subprocess.run(
        ["mosquitto_passwd", "-c", "-b", str(passwd), DEVICE_USER, RIGHT_PASSWORD], check=True, timeout=10
    )
    subprocess.run(
        ["mosquitto_passwd", "-b", str(passwd), OBSERVER_USER, OBSERVER_PASSWORD], check=True, timeout=10
    )
    readable(passwd)
    return [f"password_file {passwd}", "allow_anonymous false"]


def observer(port: int, topics: list[str], **kwargs: Any) -> AbstractContextManager[Subscriber]:
    return subscriber(port, topics, username=OBSERVER_USER, password=OBSERVER_PASSWORD, **kwargs)


@pytest.mark.parametrize("source", ["password_file", "credentials_directory"])
def test_password_listener_accepts_right_credentials(
    tmp_path: Path, emg_csv: Path, broker_files: Path, source: str
) -> None:
    device_id = f"auth_ok_{source}"
    b = base(device_id)
    env: dict[str, str] = {}
    if source == "password_file":
        secret = tmp_path / "mqtt.pass"
        secret.write_text(RIGHT_PASSWORD + "\n")
        extra = f'username = "{DEVICE_USER}"\npassword_file = "{secret}"'
    else:
        creds = tmp_path / "credentials"
        creds.mkdir()
        (creds / "mqtt_password").write_text(RIGHT_PASSWORD)
        extra = f'username = "{DEVICE_USER}"'
        env["CREDENTIALS_DIRECTORY"] = str(creds)
    with (
        broker(tmp_path / "broker", password_broker_extra(broker_files, device_id)) as br,
        observer(br.port, [f"{b}/#"]) as sub,
        daemon(tmp_path, br.port, emg_csv, device_id, extra, env) as d,
    ):
        sub.wait_for(f"{b}/availability", lambda m: m[-1:] == [b"online"], timeout=15)
        wait_until(lambda: len(stats_of(sub, device_id)) >= 2, 10, what="stats")
        stats = latest_stats(sub, device_id)["mqtt"]
        assert stats["connected"] is True and stats["refused"] == 0 and stats["last_error"] is None
        assert f"as {DEVICE_USER}" in d.log
        assert_alive(d)
        assert d.stop() == 0
        sub.wait_for(f"{b}/availability", lambda m: m[-1:] == [b"stopped"], timeout=10)
        assert_no_secret([d.log, *all_payloads(sub)], RIGHT_PASSWORD)


def test_password_listener_wrong_password_is_refused_and_retried(
    tmp_path: Path, emg_csv: Path, broker_files: Path
) -> None:
    device_id = "auth_wrong"
    b = base(device_id)
    secret = tmp_path / "mqtt.pass"
    secret.write_text(WRONG_PASSWORD + "\n")
    extra = f'username = "{DEVICE_USER}"\npassword_file = "{secret}"'
    with (
        broker(tmp_path / "broker", password_broker_extra(broker_files, device_id)) as br,
        observer(br.port, [f"{b}/#"]) as sub,
        daemon(tmp_path, br.port, emg_csv, device_id, extra) as d,
    ):
        # Refused, logged clearly, and retried (at least twice), the process staying up.
        wait_for_log(d, r"ERROR .*refused", count=3, timeout=12)
        assert_alive(d)
        assert "MQTT: connected to" not in d.log
        assert sub.on(f"{b}/availability") == [], "a refused daemon must never be reported online"
        assert b"online" not in b"".join(all_payloads(sub))
        assert sub.on(f"{b}/stats") == []
        # Stopping a daemon that never connected is prompt and clean.
        assert d.stop(timeout=10) == 0
        log = d.log
        assert "MQTT: connected to" not in log
        assert_no_secret([log, *all_payloads(sub)], WRONG_PASSWORD, RIGHT_PASSWORD)


# --- 6. TLS listener --------------------------------------------------------------------------------------


def _openssl(*args: str | Path, cwd: Path) -> None:
    subprocess.run(["openssl", *map(str, args)], cwd=cwd, check=True, capture_output=True, timeout=30)


def _make_ca(d: Path, name: str) -> tuple[Path, Path]:
    key, crt = d / f"{name}.key", d / f"{name}.crt"
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", key, "-out", crt, "-days", "2", "-subj", f"/CN={name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        "-addext", "subjectKeyIdentifier=hash",
        cwd=d,
    )  # fmt: skip
    return key, crt


@pytest.fixture(scope="module")
def tls_files(broker_files: Path) -> dict[str, Path]:
    d = broker_files / "tls"
    d.mkdir(mode=0o755)
    ca_key, ca_crt = _make_ca(d, "test-ca")
    _, other_ca = _make_ca(d, "other-ca")
    key, csr, crt, ext = d / "server.key", d / "server.csr", d / "server.crt", d / "server.ext"
    ext.write_text(
        "subjectAltName = IP:127.0.0.1, DNS:localhost\n"
        "basicConstraints = critical, CA:FALSE\n"
        "keyUsage = critical, digitalSignature, keyEncipherment\n"
        "extendedKeyUsage = serverAuth\n"
        "subjectKeyIdentifier = hash\n"
        "authorityKeyIdentifier = keyid\n"
    )
    _openssl(
        "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", key, "-out", csr, "-subj", "/CN=127.0.0.1", cwd=d,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", csr, "-CA", ca_crt, "-CAkey", ca_key, "-CAcreateserial",
        "-out", crt, "-days", "2", "-extfile", ext, cwd=d,
    )  # fmt: skip
    readable(ca_crt, other_ca, crt, key)
    return {"ca": ca_crt, "other_ca": other_ca, "cert": crt, "key": key}


def tls_broker_extra(tls: dict[str, Path]) -> list[str]:
    # The harness writes "listener PORT 127.0.0.1" first: these lines apply to that listener.
    return [f"cafile {tls['ca']}", f"certfile {tls['cert']}", f"keyfile {tls['key']}"]


def tls_mqtt_extra(ca: Path) -> str:
    return f'\n[mqtt.tls]\nenabled = true\nca_file = "{ca}"\n'


def test_tls_listener_online_and_events(tmp_path: Path, emg_csv: Path, tls_files: dict[str, Path]) -> None:
    device_id = "tls_ok"
    b = base(device_id)
    with (
        broker(tmp_path / "broker", tls_broker_extra(tls_files)) as br,
        subscriber(br.port, [f"{b}/#"], tls_ca=tls_files["ca"]) as sub,
        daemon(tmp_path, br.port, emg_csv, device_id, tls_mqtt_extra(tls_files["ca"])) as d,
    ):
        sub.wait_for(f"{b}/availability", lambda m: m[-1:] == [b"online"], timeout=15)
        sub.wait_for(f"{b}/event", lambda m: len(m) >= 1, timeout=10)
        ev = sub.json_on(f"{b}/event")[0]
        assert ev["type"] in EVENT_TYPES and ev["device_id"] == device_id
        assert "(TLS)" in d.log
        assert_alive(d)


def test_tls_listener_wrong_ca_never_online(
    tmp_path: Path, emg_csv: Path, tls_files: dict[str, Path]
) -> None:
    device_id = "tls_wrong_ca"
    b = base(device_id)
    with (
        broker(tmp_path / "broker", tls_broker_extra(tls_files)) as br,
        subscriber(br.port, [f"{b}/#"], tls_ca=tls_files["ca"]) as sub,
        daemon(tmp_path, br.port, emg_csv, device_id, tls_mqtt_extra(tls_files["other_ca"])) as d,
    ):
        # The certificate check fails on every attempt; each is logged as an error and retried.
        wait_for_log(d, r"ERROR .*(?i:certificate verify failed)", count=2, timeout=12)
        assert_alive(d)
        assert "MQTT: connected to" not in d.log
        assert sub.on(f"{b}/availability") == []
        assert d.stop(timeout=10) == 0
