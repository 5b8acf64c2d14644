"""The live page's calibration view in a real headless Chromium, against the real daemon with a simulated
wearer on a pty (tests/calibration_wearer.py, following the prompts from the control socket): Start on the
page, the session's prompts, countdown, level meters and advice on the page, its result, the personal
models list with Rollback and Activate (the daemon reloads as on SIGHUP); and the new endpoints' refusals.
"""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path
from typing import Any

from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from edge.calibration.store import PersonalModelStore
from tests.browser import ARTIFACTS, chromium
from tests.harness import Daemon, free_port, wait_until
from tests.test_calibration_e2e import SESSION_S, start_without_daemon, teardown
from tests.test_web_page import _up, attr, request, text, web_toml

# Everything the page shows of the session, read in one script call (the panel changes 5 times a second).
READ_PANEL = """
const q = (s) => document.querySelector(s);
return {
  phase: q("#calibration").dataset.phase,
  prompt: q("#cal-prompt").textContent,
  count: q("#cal-count").textContent,
  progress: q("#cal-progress").style.width,
  step: q("#cal-step").textContent,
  verdicts: [...document.querySelectorAll("#cal-levels .pill")].map((p) => p.dataset.status),
  levels: [...document.querySelectorAll("#cal-levels .meter > div")].map((m) => m.style.width),
  advice: q("#cal-advice").hidden ? "" : q("#cal-advice").textContent,
  error: q("#cal-error").hidden ? "" : q("#cal-error").textContent,
};
"""


def models_on_page(driver: WebDriver) -> list[tuple[str, bool]]:
    # One script call: the list is rebuilt on every change, so an element found first may be gone.
    rows = driver.execute_script(
        'return [...document.querySelectorAll("#models-list tr[data-id]")]'
        '.map((r) => [r.dataset.id, r.dataset.active === "true"])'
    )
    return [(str(i), bool(a)) for i, a in rows]


def follow_session(driver: WebDriver, timeout: float) -> list[dict[str, Any]]:
    """Poll the panel until the session ends; screenshots while an electrode is flat, and of its retake."""
    seen: list[dict[str, Any]] = []
    shots = {"calibration-fault.png", "calibration-view.png"}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        panel = driver.execute_script(READ_PANEL)
        seen.append(panel)
        if panel["phase"] == "record" and len(panel["verdicts"]) == 3:
            name = "calibration-fault.png" if "flat" in panel["verdicts"] else "calibration-view.png"
            if name in shots and (panel["advice"] or name == "calibration-fault.png"):
                ARTIFACTS.mkdir(exist_ok=True)
                driver.save_screenshot(str(ARTIFACTS / name))
                shots.discard(name)
        if panel["phase"] in ("done", "refused", "failed", "cancelled"):
            return seen
        time.sleep(0.1)
    raise AssertionError(f"the session did not end on the page: {seen[-3:]}")


def test_calibration_view_runs_a_session_and_switches_models(tmp_path: Path, emg_csv: Path) -> None:
    # The second recording has a flat electrode 2: the page must say which one to check.
    broker, sub, wearer, config, state = start_without_daemon(tmp_path, emg_csv, "--fault", "flat@1:1")
    port = free_port()
    config.write_text(config.read_text() + web_toml(port))
    daemon = Daemon(config, tmp_path)
    url = f"http://127.0.0.1:{port}/"
    store = PersonalModelStore(state)

    def phase() -> str:
        return attr(driver, "#calibration", "data-phase")

    try:
        wait_until(lambda: _up(url, daemon), 60, 0.2, what="the live page to answer")
        with chromium() as driver:
            driver.get(url)
            wait_until(lambda: "none yet" in text(driver, "#models-list"), 10, what="the empty models list")
            assert attr(driver, "#models-rollback", "disabled") == "true"
            wait_until(lambda: "EMG available" in text(driver, "#modalities"), 30, what="EMG from the wearer")
            assert attr(driver, "#calibration", "data-phase") == "idle"

            t0 = time.monotonic()
            driver.find_element(By.ID, "cal-start").click()
            wait_until(lambda: phase() == "countdown", 5, 0.05, what="the session to start")
            # A second start (the page's own request; its button is disabled meanwhile) is refused, clearly.
            driver.execute_script('calibrationCommand("start")')
            wait_until(lambda: driver.execute_script(READ_PANEL)["error"], 5, 0.05, what="the error shown")
            assert "already running" in driver.execute_script(READ_PANEL)["error"]
            seen = follow_session(driver, SESSION_S + 90)
            session_s = time.monotonic() - t0
            final = seen[-1]
            assert final["phase"] == "done", (final, text(driver, "#cal-result"))

            # The page followed the session: prompts of each phase, a counting-down countdown, meters.
            prompts = {p["prompt"] for p in seen}
            assert any(p.startswith("get ready: show ") for p in prompts), prompts
            assert any(p.startswith("Show ") for p in prompts) and "Rest" in prompts, prompts
            counts = [float(p["count"].split()[0]) for p in seen if p["phase"] == "countdown" and p["count"]]
            assert counts and min(counts) < max(counts) <= 0.4, counts  # countdown_s = 0.4
            recording = [p for p in seen if p["phase"] == "record"]
            assert all(len(p["verdicts"]) == 3 for p in recording[2:]), recording[:4]
            assert any(p["levels"][0] not in ("", "0%") for p in recording if p["levels"])
            assert any("flat" in p["verdicts"] for p in recording), "no flat electrode shown during the fault"
            advice = {p["advice"] for p in seen if p["advice"]}
            assert any("check electrode 2 (zygomaticus): flat" in a for a in advice), advice
            assert any(p["step"].startswith("step ") and "repeated" in p["step"] for p in seen)
            progress = [float(p["progress"].rstrip("%")) for p in seen if p["progress"]]
            # It grows step by step (a repeated repetition takes its step's share again), to 100% at the end.
            half = len(progress) // 2
            assert progress[-1] == 100 and max(progress[:half]) < min(progress[-half // 4 :]), progress[::20]
            assert (ARTIFACTS / "calibration-view.png").is_file()

            # The result, and the new model, active, in the list.
            driver.save_screenshot(str(ARTIFACTS / "calibration-done.png"))
            result = text(driver, "#cal-result")
            active = store.active_id()
            assert active is not None and f"Personal model {active} is active" in result, result
            assert "accuracy " in result and "%" in result
            wait_until(lambda: models_on_page(driver) == [(active, True)], 10, what="the new model listed")
            assert f"personal model {active}" in text(driver, "#models-in-use")
            swapped_log = daemon.log

            # Rollback: the marker moves to the shipped model, the store and the running daemon follow.
            driver.find_element(By.ID, "models-rollback").click()
            wait_until(lambda: models_on_page(driver) == [(active, False)], 10, what="the marker to move")
            assert "shipped generic model" in text(driver, "#models-in-use")
            assert store.active_id() is None
            wait_until(
                lambda: "configuration reloaded" in daemon.log[len(swapped_log) :], 10, what="a reload"
            )
            changed = f"the EMG model changes from {store.models_dir / active}"
            assert changed in daemon.log[len(swapped_log) :], daemon.log[-2000:]

            # Activate it again from its row: the same path, back to the personal model.
            before = daemon.log
            driver.find_element(By.CSS_SELECTOR, f'button[data-activate="{active}"]').click()
            wait_until(lambda: models_on_page(driver) == [(active, True)], 10, what="the model active again")
            assert store.active_id() == active
            wait_until(lambda: f"EMG model: personal, {store.active()}" in daemon.log[len(before) :], 10)

            # An unknown id (as a stale page would send) comes back as a clear error on the page.
            driver.execute_script('activate("20000101T000000Z")')
            wait_until(lambda: not attr(driver, "#models-error", "hidden"), 5, what="the error shown")
            assert "no personal model '20000101T000000Z'" in text(driver, "#models-error")
            # A second session, cancelled from the page: nothing changes.
            driver.find_element(By.ID, "cal-start").click()
            wait_until(lambda: phase() == "countdown", 5, 0.05, what="the second session")
            driver.find_element(By.ID, "cal-cancel").click()
            wait_until(lambda: phase() == "cancelled", 5, 0.05, what="the session to be cancelled")
            assert "nothing was changed" in text(driver, "#cal-result")
            assert attr(driver, "#cal-start", "disabled") == "" and store.active_id() == active
            driver.execute_script('document.getElementById("models").scrollIntoView()')
            driver.save_screenshot(str(ARTIFACTS / "calibration-models.png"))

        # The new endpoints take the switches' checks: no cross-site POST, no POST without the token.
        with urllib.request.urlopen(url, timeout=5) as response:
            cookie = response.headers["Set-Cookie"].split(";")[0]
        token = cookie.split("=", 1)[1]
        origin = {"Origin": f"http://127.0.0.1:{port}", "Content-Type": "application/json"}
        evil = {**origin, "Origin": "http://evil.example", "Cookie": cookie, "X-CSRF-Token": token}
        for path in (
            "calibration/start",
            "calibration/cancel",
            "models/rollback",
            f"models/{active}/activate",
        ):
            assert request(url + f"api/{path}", "POST", b"{}", evil)[0] == 403, path
            assert request(url + f"api/{path}", "POST", b"{}", origin)[0] == 403, path
        assert store.active_id() == active
        status, body = request(url + "api/models")
        assert status == 200 and json.loads(body)["active"] == active
        page = {**origin, "Cookie": cookie, "X-CSRF-Token": token}
        status, body = request(url + "api/calibration/cancel", "POST", b"{}", page)
        assert status == 409 and "no calibration session" in json.loads(body)["error"]
        assert daemon.stop() == 0
    finally:
        teardown(broker, sub, wearer, daemon)
    assert "Traceback" not in daemon.log, daemon.log[-3000:]
    print(f"\nsession started from the page ended in {session_s:.1f} s; the page showed {len(seen)} polls")
