"""A real Home Assistant Core for the tests: its own venv, set up headless, asserted through its APIs.

The venv comes from scripts/ha-venv.sh (pinned version, cached in ~/.cache/emotion-edge). HA runs
with a minimal configuration.yaml bound to 127.0.0.1 and ``--skip-pip`` (the venv already holds
what its integrations need). The owner is created through the onboarding API, a long-lived token
through the websocket API, and the MQTT integration through the config-flow REST API: exactly
what the UI would do, without a browser.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from websockets.sync.client import ClientConnection, connect

from tests.conftest import REPO, missing
from tests.harness import free_port, wait_until

HA_VENV_SCRIPT = REPO / "scripts" / "ha-venv.sh"
_VERSION = re.search(r"^HA_VERSION=(\S+)$", HA_VENV_SCRIPT.read_text(), re.M)
assert _VERSION is not None
HA_VERSION = _VERSION.group(1)
OWNER = {"name": "Test Owner", "username": "owner", "password": "owner-password-1"}
# Log lines that are about us: the MQTT integration, device triggers, our topics or our devices' entities.
OURS = re.compile(r"components\.mqtt|device_automation|paho|emotion_edge/|\b\w+\.\w+_pi_\w+")


def ha_venv() -> Path:
    """The cached HA venv; created when this runs as root or in CI, else a skip (a failure under CI)."""
    default = Path.home() / ".cache" / "emotion-edge" / f"ha-{HA_VERSION}"
    venv = Path(os.environ.get("EMOTION_EDGE_HA_VENV", default))
    if (venv / ".complete").exists():
        return venv
    if os.geteuid() != 0 and os.environ.get("CI", "").lower() != "true":
        missing(f"Home Assistant {HA_VERSION} not installed: run bash {HA_VENV_SCRIPT}")
    result = subprocess.run(["bash", str(HA_VENV_SCRIPT)], capture_output=True, text=True, timeout=1800)
    if result.returncode != 0 or not (venv / ".complete").exists():
        missing(f"Home Assistant {HA_VERSION} could not be installed: {result.stderr[-2000:]}")
    return venv


CONFIGURATION = """\
homeassistant:
  name: emotion-edge test
  unit_system: metric
  time_zone: UTC
  latitude: 52.0
  longitude: 5.0
  elevation: 0
  currency: EUR
  country: NL
  language: en
  internal_url: http://127.0.0.1:{port}
http:
  server_host: 127.0.0.1
  server_port: {port}
api:
config:
websocket_api:
automation: !include automations.yaml
logger:
  default: warning
"""


@dataclass
class HomeAssistant:
    venv: Path
    config_dir: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    token: str | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.config_dir / "home-assistant.log"

    def log(self) -> str:
        """home-assistant.log of this run and the one before (HA moves it to .log.1 when it restarts)."""
        paths = [self.log_path.with_name(self.log_path.name + ".1"), self.log_path]
        return "".join(p.read_text(errors="replace") for p in paths if p.exists())

    def start(self, timeout: float = 240) -> HomeAssistant:
        self.config_dir.mkdir(parents=True, exist_ok=True)
        conf = self.config_dir / "configuration.yaml"
        if not conf.exists():
            conf.write_text(CONFIGURATION.format(port=self.port))
        automations = self.config_dir / "automations.yaml"
        if not automations.exists():
            automations.write_text("[]\n")
        with (self.config_dir / "hass-stdout.log").open("ab") as out:  # the child keeps its own copy
            self.proc = subprocess.Popen(
                [str(self.venv / "bin" / "hass"), "--config", str(self.config_dir), "--skip-pip"],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        wait_until(self._running, timeout, interval=0.5, what="Home Assistant to start")
        return self

    def _running(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"Home Assistant exited {self.proc.returncode}:\n{self.log()[-3000:]}")
        try:
            if self.token is None:
                # Answers without auth, as soon as the HTTP server and onboarding are up.
                self.request("GET", "/api/onboarding", auth=False)
                return True
            return bool(self.request("GET", "/api/config")["state"] == "RUNNING")
        except (OSError, urllib.error.URLError, KeyError):
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    # --- headless set-up ----------------------------------------------------------------------

    def onboard(self) -> None:
        """Create the owner, log in, and keep a long-lived token (survives HA restarts)."""
        client_id = f"{self.url}/"
        user = self.request(
            "POST", "/api/onboarding/users", {**OWNER, "client_id": client_id, "language": "en"}, auth=False
        )
        form = urllib.parse.urlencode(
            {"grant_type": "authorization_code", "code": user["auth_code"], "client_id": client_id}
        ).encode()
        req = urllib.request.Request(f"{self.url}/auth/token", data=form, method="POST")
        with urllib.request.urlopen(req, timeout=30) as resp:
            access = json.loads(resp.read())["access_token"]
        self.token = access
        self.token = str(
            self.ws({"type": "auth/long_lived_access_token", "client_name": "tests", "lifespan": 365})
        )
        # The later onboarding steps are skipped: "core_config" sets up weather, radio and TTS integrations
        # a test has no use for (and whose requirements the venv does not hold).

    def add_mqtt(self, broker_port: int) -> dict[str, Any]:
        """The MQTT integration through the config flow, as the UI's "Add integration" does."""
        flow = self.request("POST", "/api/config/config_entries/flow", {"handler": "mqtt"})
        assert flow.get("type") == "form", flow
        result = self.request(
            "POST",
            f"/api/config/config_entries/flow/{flow['flow_id']}",
            {"broker": "127.0.0.1", "port": broker_port},
        )
        assert result.get("type") == "create_entry", result
        return dict(result)

    # --- APIs ----------------------------------------------------------------------------------

    def request(self, method: str, path: str, body: Any = None, auth: bool = True) -> Any:
        headers = {"Content-Type": "application/json"}
        if auth:
            assert self.token is not None
            headers["Authorization"] = f"Bearer {self.token}"
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"{self.url}{path}", data=data, method=method, headers=headers)
        with urllib.request.urlopen(req, timeout=30) as resp:
            raw = resp.read()
        return json.loads(raw) if raw else None

    def states(self) -> dict[str, dict[str, Any]]:
        return {s["entity_id"]: s for s in self.request("GET", "/api/states")}

    def state(self, entity_id: str) -> dict[str, Any] | None:
        try:
            return dict(self.request("GET", f"/api/states/{entity_id}"))
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise

    def call(self, domain: str, service: str, **data: Any) -> None:
        self.request("POST", f"/api/services/{domain}/{service}", data)

    def _ws_connect(self) -> ClientConnection:
        ws = connect(f"ws://127.0.0.1:{self.port}/api/websocket", open_timeout=30)
        assert json.loads(ws.recv(timeout=30))["type"] == "auth_required"
        ws.send(json.dumps({"type": "auth", "access_token": self.token}))
        assert json.loads(ws.recv(timeout=30))["type"] == "auth_ok"
        return ws

    def ws(self, command: dict[str, Any]) -> Any:
        """One websocket command's result (a new connection each time: simple, and cheap enough)."""
        with self._ws_connect() as ws:
            ws.send(json.dumps({"id": 1, **command}))
            while True:
                msg = json.loads(ws.recv(timeout=30))
                if msg.get("id") == 1 and msg.get("type") == "result":
                    assert msg["success"], msg
                    return msg["result"]

    def load_automations(self, text: str) -> None:
        """Replace automations.yaml and reload it (after MQTT is set up: MQTT triggers subscribe on load)."""
        (self.config_dir / "automations.yaml").write_text(text)
        self.call("automation", "reload")

    def integration_problems(self) -> list[str]:
        """WARNING/ERROR/CRITICAL lines of home-assistant.log about MQTT or our device."""
        lines = re.split(r"\n(?=\d{4}-\d\d-\d\d )", self.log())
        return [
            line
            for line in lines
            if re.match(r"\S+ \S+ (WARNING|ERROR|CRITICAL) ", line) and OURS.search(line)
        ]


class StateChanges:
    """Every ``state_changed`` event HA fires, recorded from a websocket subscription in a thread."""

    def __init__(self, ha: HomeAssistant) -> None:
        self.events: list[tuple[float, str, dict[str, Any] | None]] = []
        self._lock = threading.Lock()
        self._ws = ha._ws_connect()
        self._ws.send(json.dumps({"id": 1, "type": "subscribe_events", "event_type": "state_changed"}))
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for raw in self._ws:
                msg = json.loads(raw)
                if msg.get("type") == "event":
                    data = msg["event"]["data"]
                    with self._lock:
                        self.events.append((time.monotonic(), data["entity_id"], data["new_state"]))
        except Exception:
            return

    def of(self, entity_id: str, since: float = 0.0) -> list[dict[str, Any]]:
        with self._lock:
            return [s for t, e, s in self.events if e == entity_id and t >= since and s is not None]

    def wait_for(self, entity_id: str, predicate: Callable[[dict[str, Any]], bool], timeout: float) -> None:
        wait_until(
            lambda: any(predicate(s) for s in self.of(entity_id)), timeout, interval=0.1, what=entity_id
        )

    def close(self) -> None:
        self._ws.close()
        self._thread.join(5)
