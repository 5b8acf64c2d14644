"""The live page in a real headless Chromium against the real daemon, replaying a recording with the
camera on a folder of photos; and its access rules over plain HTTP."""

from __future__ import annotations

import base64
import http.client
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from tests.browser import ARTIFACTS, chromium
from tests.conftest import REPO, shared_file
from tests.harness import Daemon, Mosquitto, Subscriber, daemon_config, free_port, replay_emg, wait_until
from tests.test_face_daemon import assert_no_pixels_left_the_process, photo_folder

BASE = "emotion_edge/test_pi"
PHOTOS = ("skimage_astronaut.png", "facerec_obama.jpg", "skimage_chelsea_cat_noface.png")


def web_toml(port: int, host: str = "127.0.0.1", extra: str = "") -> str:
    return f'\n[web]\nenabled = true\nhost = "{host}"\nport = {port}\n{extra}\n'


def camera_toml(photos: Path) -> str:
    yunet = shared_file("models/face_detection_yunet_2023mar.onnx")
    return (
        f'\n[camera]\nsource = "images"\npath = "{photos}"\nfps = 5\nloop = true\n'
        f'\n[face]\ndetector_model = "{yunet}"\n'
    )


class Live(NamedTuple):
    sub: Subscriber
    daemon: Daemon
    url: str


@contextmanager
def live_daemon(
    tmp_path: Path, sections: str, web_port: int, env: dict[str, str] | None = None
) -> Iterator[Live]:
    broker = Mosquitto(tmp_path / "broker").start()
    sub = Subscriber(broker.port, ["#"])
    config = daemon_config(tmp_path, broker.port, emg=sections, stats_interval_s=0.3)
    daemon = Daemon(config, tmp_path)
    url = f"http://127.0.0.1:{web_port}/"
    try:
        wait_until(lambda: _up(url, daemon), 60, 0.2, what="the live page to answer")
        yield Live(sub, daemon, url)
    finally:
        daemon.kill()
        sub.close()
        broker.stop()


def _up(url: str, daemon: Daemon) -> bool:
    assert daemon.proc.poll() is None, daemon.log[-3000:]
    try:
        urllib.request.urlopen(url + "favicon.ico", timeout=1)
        return True
    except urllib.error.HTTPError:
        return True  # it answers (401 without credentials)
    except OSError:
        return False


def request(
    url: str, method: str = "GET", body: bytes | None = None, headers: Mapping[str, str] | None = None
) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, method=method, headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(req, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def handshake(port: int, headers: Mapping[str, str]) -> int:
    """The status of a WebSocket handshake (urllib would add ``Connection: close``)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/ws", headers=dict(headers))
        return conn.getresponse().status
    finally:
        conn.close()


def last_stats(sub: Subscriber) -> dict[str, Any]:
    stats = sub.json_on(f"{BASE}/stats")
    return stats[-1] if stats else {}


def captured(sub: Subscriber) -> int:
    return int(last_stats(sub).get("camera", {}).get("frames_captured", 0))


def text(driver: WebDriver, css: str) -> str:
    return str(driver.find_element(By.CSS_SELECTOR, css).text)


def attr(driver: WebDriver, css: str, name: str) -> str:
    return str(driver.find_element(By.CSS_SELECTOR, css).get_attribute(name) or "")


def frames_drawn(driver: WebDriver) -> int:
    return int(attr(driver, "#frame", "data-frames") or 0)


def page_events(driver: WebDriver) -> int:
    return int(driver.execute_script('return document.querySelectorAll("#events li.event").length'))


def newest_on_page(driver: WebDriver) -> int:
    # One script call: the list is rebuilt when events arrive, so an element found first may be gone.
    seq = driver.execute_script(
        'const li = document.querySelector("#events li.event"); return li ? li.dataset.seq : null'
    )
    return int(seq) if seq is not None else -1


def newest_on_mqtt(sub: Subscriber) -> int:
    return max((e["seq"] for e in sub.json_on(f"{BASE}/event")), default=-1)


def test_live_page_follows_the_daemon_and_its_switches(tmp_path: Path, emg_csv: Path) -> None:
    photos = photo_folder(tmp_path / "photos", *PHOTOS)
    for n in range(3):  # faces most of the time, so the screenshot likely shows a box
        shutil.copy(photos / PHOTOS[0], photos / f"astronaut{n}.png")
    port = free_port()
    sections = replay_emg(emg_csv, speed=2, loop=True) + camera_toml(photos) + web_toml(port)
    with live_daemon(tmp_path, sections, port) as (sub, daemon, url), chromium() as driver:
        driver.get(url)
        assert "emotion-edge" in driver.title
        # The estimate, its bars and the timeline follow the replay.
        wait_until(lambda: text(driver, "#emotion") not in ("", "–"), 30, 0.2, what="an emotion on the page")
        wait_until(lambda: page_events(driver) >= 1, 60, 0.2, what="an event in the timeline")
        wait_until(lambda: newest_on_page(driver) == newest_on_mqtt(sub), 10, 0.2, what="the timeline")
        before = newest_on_mqtt(sub)
        widths = [attr(driver, f"#bar-{e}", "style") for e in ("happy", "sad", "angry", "neutral")]
        assert any("width" in w and "width: 0%" not in w for w in widths), widths
        # Video, with a face box drawn on the client for a photo with a face.
        wait_until(lambda: frames_drawn(driver) >= 3, 30, 0.2, what="camera frames on the page")
        wait_until(lambda: attr(driver, "#frame", "data-faces") not in ("", "0"), 30, 0.1, what="a face box")
        assert text(driver, "#video-status") == "live"
        # Three EMG traces, each with a quality badge.
        wait_until(
            lambda: len(driver.find_elements(By.CSS_SELECTOR, "#traces canvas")) == 3, 20, what="EMG traces"
        )
        badges = [attr(driver, f"#badge-{i}", "data-badge") for i in range(3)]
        assert all(b in ("ok", "flat", "saturated", "clipping", "mains") for b in badges), badges
        # The screenshot to look at: one showing a face box (the folder also holds a photo without one).
        ARTIFACTS.mkdir(exist_ok=True)

        def shown() -> tuple[str, int]:
            return attr(driver, "#frame", "data-faces"), frames_drawn(driver)

        for _ in range(50):
            on_screen = shown()
            driver.save_screenshot(str(ARTIFACTS / "live-page.png"))
            if on_screen[0] not in ("", "0") and on_screen == shown():
                break  # no other frame was drawn meanwhile: the picture has a box
            time.sleep(0.05)

        # Privacy from the page: the camera stops, the retained MQTT switch says so, the page too.
        driver.find_element(By.CSS_SELECTOR, 'button[data-switch="privacy"]').click()
        sub.wait_for(f"{BASE}/switch/privacy", lambda m: m[-1:] == [b"ON"])
        wait_until(lambda: text(driver, "#video-status") == "privacy", 10, what="the page to show privacy")
        assert not driver.find_element(By.ID, "video-note").get_attribute("hidden")
        time.sleep(1.0)
        frozen, drawn = captured(sub), frames_drawn(driver)
        time.sleep(2.0)
        assert captured(sub) == frozen, "the camera kept capturing in privacy mode"
        assert frames_drawn(driver) == drawn, "frames reached the page in privacy mode"
        assert attr(driver, 'button[data-switch="privacy"]', "aria-pressed") == "true"

        # Losing the face changed the episode: the timeline shows the new event.
        wait_until(lambda: newest_on_mqtt(sub) > before, 20, 0.2, what="an event after privacy came on")
        wait_until(lambda: newest_on_page(driver) == newest_on_mqtt(sub), 10, 0.2, what="the timeline")

        # Privacy off from MQTT (as Home Assistant would): the page follows.
        sub.client.publish(f"{BASE}/set/privacy", "OFF", qos=1)
        wait_until(
            lambda: attr(driver, 'button[data-switch="privacy"]', "aria-pressed") == "false",
            10,
            what="the page's privacy button to follow MQTT",
        )
        wait_until(lambda: frames_drawn(driver) > drawn + 2, 20, 0.2, what="video to resume")

        # live_view (Home Assistant's "Live page video") hides the video without touching the camera.
        sub.client.publish(f"{BASE}/set/live_view", "OFF", qos=1)
        sub.wait_for(f"{BASE}/switch/live_view", lambda m: m[-1:] == [b"OFF"])
        wait_until(lambda: text(driver, "#video-status") == "video off", 10, what="video off on the page")
        time.sleep(0.6)
        drawn, before = frames_drawn(driver), captured(sub)
        time.sleep(1.5)
        assert frames_drawn(driver) == drawn
        wait_until(lambda: captured(sub) > before, 10, what="the camera to keep running for the model")

        discovery = json.loads(sub.last("homeassistant/device/test_pi/config") or b"{}")
        assert discovery["cmps"]["live_view"]["command_topic"] == f"{BASE}/set/live_view"
        web_stats = last_stats(sub)["web"]
        assert web_stats["frames_served"] >= 3 and web_stats["viewers"] == 1
        assert daemon.stop() == 0
    assert "Traceback" not in daemon.log
    # JPEGs went to the page only: nothing image-like on MQTT, in the log or on disk.
    assert_no_pixels_left_the_process(sub, daemon.log, tmp_path, inputs=set(photos.iterdir()))


def test_no_frame_is_encoded_without_a_viewer(tmp_path: Path) -> None:
    photos = photo_folder(tmp_path / "photos", "skimage_astronaut.png")
    port = free_port()
    sections = '[emg]\nsource = "off"\n' + camera_toml(photos) + web_toml(port)
    with live_daemon(tmp_path, sections, port) as (sub, daemon, url):
        wait_until(lambda: captured(sub) >= 10, 30, what="frames being captured")
        with urllib.request.urlopen(url, timeout=5) as page:
            assert page.status == 200 and page.headers["Content-Type"] == "text/html; charset=utf-8"
        status, body = request(url + "api/state")
        assert status == 200 and json.loads(body)["faces"], body
        time.sleep(1.0)
        web = last_stats(sub)["web"]
        assert web["frames_encoded"] == 0 and web["frames_served"] == 0 and web["viewers"] == 0
        assert daemon.stop() == 0


def test_off_loopback_needs_the_password_and_refuses_cross_site_posts(tmp_path: Path, emg_csv: Path) -> None:
    secret = tmp_path / "web_password"
    secret.write_text("s3cret-pass\n")
    port = free_port()
    sections = replay_emg(emg_csv, speed=1, loop=True) + web_toml(
        port, "0.0.0.0", f'password_file = "{secret}"'
    )
    with live_daemon(tmp_path, sections, port) as (sub, daemon, url):
        for path in ("", "api/state", "static/app.js", "ws"):
            assert request(url + path)[0] == 401, path
        wrong = {"Authorization": "Basic " + base64.b64encode(b"me:nope").decode()}
        assert request(url + "api/state", headers=wrong)[0] == 401
        basic = {"Authorization": "Basic " + base64.b64encode(b"anyone:s3cret-pass").decode()}
        status, body = request(url + "api/state", headers=basic)
        assert status == 200 and "emotion" in json.loads(body)
        assert request(url + "api/state", headers={"Authorization": "Bearer s3cret-pass"})[0] == 200
        status, _ = request(url, headers=basic)
        assert status == 200

        # A cross-site POST (another site's form or script, with the browser adding the credentials).
        on = json.dumps({"on": True}).encode()
        json_type = {"Content-Type": "application/json"}
        evil = {**basic, **json_type, "Origin": "http://evil.example"}
        assert request(url + "api/switch/privacy", "POST", on, evil)[0] == 403
        no_token = {**basic, **json_type, "Origin": f"http://127.0.0.1:{port}"}
        assert request(url + "api/switch/privacy", "POST", on, no_token)[0] == 403
        assert request(url + "api/switch/privacy", "POST", on, {**basic, **json_type})[0] == 403
        time.sleep(0.5)
        assert sub.last(f"{BASE}/switch/privacy") == b"OFF"
        # Cross-site WebSocket hijacking: the handshake is not covered by the same-origin policy.
        upgrade = {
            **basic,
            "Connection": "Upgrade",
            "Upgrade": "websocket",
            "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
        }
        assert handshake(port, {**upgrade, "Origin": "http://evil.example"}) == 403
        assert handshake(port, {**upgrade, "Origin": f"http://127.0.0.1:{port}"}) == 101

        # The page's own POST: same origin, with the CSRF cookie echoed in the header.
        with urllib.request.urlopen(urllib.request.Request(url, headers=basic), timeout=5) as response:
            cookie = response.headers["Set-Cookie"].split(";")[0]
        token = cookie.split("=", 1)[1]
        page = {**no_token, "Cookie": cookie, "X-CSRF-Token": token}
        assert request(url + "api/switch/privacy", "POST", on, page)[0] == 202
        sub.wait_for(f"{BASE}/switch/privacy", lambda m: m[-1:] == [b"ON"])
        # A script with the token (no browser adds it on its own): no CSRF check needed.
        bearer = {"Authorization": "Bearer s3cret-pass", **json_type}
        off = json.dumps({"on": False}).encode()
        assert request(url + "api/switch/privacy", "POST", off, bearer)[0] == 202
        sub.wait_for(f"{BASE}/switch/privacy", lambda m: m[-1:] == [b"OFF"])
        wait_until(
            lambda: last_stats(sub)["web"]["unauthorized"] >= 5 and last_stats(sub)["web"]["cross_site"] >= 4,
            5,
            what="refusals counted in the stats",
        )
        assert daemon.stop() == 0
    assert "s3cret-pass" not in daemon.log


def test_loopback_page_refuses_a_foreign_host_name(tmp_path: Path, emg_csv: Path) -> None:
    port = free_port()
    with live_daemon(tmp_path, replay_emg(emg_csv, speed=1, loop=True) + web_toml(port), port) as live:
        assert request(live.url + "api/state")[0] == 200
        # DNS rebinding: a site whose name now points at 127.0.0.1, read from the visitor's browser.
        assert request(live.url + "api/state", headers={"Host": f"evil.example:{port}"})[0] == 403
        assert live.daemon.stop() == 0


def _check_config(path: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge.cli", "check-config", str(path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def test_off_loopback_without_credentials_exits_78_naming_a_web_key(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[web]\nhost = "0.0.0.0"\n')
    done = _check_config(config)
    assert done.returncode == 78, done.stderr
    assert "config error: web.password_file: required when web.host (0.0.0.0)" in done.stderr
    assert "Traceback" not in done.stderr
    # The daemon refuses to start the same way.
    config.write_text('[web]\nenabled = true\nhost = "0.0.0.0"\n[emg]\nsource = "off"\n')
    run = subprocess.run(
        [sys.executable, "-m", "edge.cli", "run", "--config", str(config)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 78 and "web.password_file" in run.stderr
    # A systemd credential is enough.
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "web_password").write_text("from-systemd\n")
    done = _check_config(config, env={**os.environ, "CREDENTIALS_DIRECTORY": str(credentials)})
    assert done.returncode == 0, done.stderr
    assert "from-systemd" not in done.stdout + done.stderr


def test_the_page_is_small_and_self_contained() -> None:
    """No build step, no CDN: three files served by the daemon, 150 kB at most, no address elsewhere."""
    static = REPO / "edge" / "web" / "static"
    files = sorted(static.iterdir())
    assert [f.name for f in files] == ["app.js", "index.html", "style.css"]
    assert sum(f.stat().st_size for f in files) <= 150_000
    for f in files:
        text = f.read_text()
        assert "http://" not in text and "https://" not in text and "//cdn" not in text, f.name
        assert "<script>" not in text and "onclick=" not in text, (
            f.name
        )  # nothing inline (the CSP forbids it)
