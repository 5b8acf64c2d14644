"""Calibration over MQTT: the Home Assistant buttons start and cancel a session, and the session's
prompt, progress and result are published as retained JSON (:mod:`edge.publish.calibration_discovery`
declares the entities).

The prompt topic is refreshed at most once a second (Home Assistant records every state message),
and at once on every phase change, so a wall tablet never misses a prompt. The result topic is
published after every session that reached an outcome, and at start from the newest stored model,
so the "last calibration" sensors show something after a restart too.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from typing import Any

from edge.calibration.manager import CalibrationBusy, CalibrationManager
from edge.calibration.store import PersonalModelStore
from edge.publish.commands import ActionCommand
from edge.publish.publisher import Publisher

log = logging.getLogger(__name__)

PROMPT_MIN_INTERVAL_S = 1.0
RECONNECT_POLL_S = 0.5
# The keys of a snapshot that the prompt topic carries (not the flagged list or per-channel detail).
PROMPT_KEYS = ("phase", "prompt", "label", "rep", "remaining_s", "step", "steps", "progress", "message")


class CalibrationMqtt:
    def __init__(
        self,
        manager: CalibrationManager,
        store: PersonalModelStore,
        publisher: Callable[[], Publisher | None],
    ) -> None:
        self.manager = manager
        self.store = store
        self._publisher = publisher
        self._last_sent = 0.0
        self._last_phase: str | None = None
        # What the retained topics should hold: published again after every (re)connection.
        self._retained: dict[str, dict[str, Any]] = {}
        self.rejected = 0

    async def run(self) -> None:
        """Publish the retained topics again whenever the MQTT link (re)connects."""
        was_connected = False
        while True:
            await asyncio.sleep(RECONNECT_POLL_S)
            publisher = self._publisher()
            connected = publisher is not None and publisher.connected
            if connected and not was_connected:
                for which, body in list(self._retained.items()):
                    self._retain(which, body)
            was_connected = connected

    def on_action(self, cmd: ActionCommand) -> None:
        if cmd.action != "calibrate":
            return
        if cmd.payload == "CANCEL":
            self.manager.cancel()
            return
        try:
            self.manager.start()
        except CalibrationBusy as exc:
            self.rejected += 1
            log.warning("calibration not started from MQTT: %s", exc)
            self._publish(self.manager.status() | {"message": f"not started: {exc}"}, force=True)

    def on_snapshot(self, snap: dict[str, Any]) -> None:
        self._publish(snap)
        result = snap.get("result")
        if snap.get("phase") in ("done", "refused") and result:
            self._retain("result", result)

    def load_stored_result(self) -> None:
        """The newest stored model as the last calibration (nothing before the first one)."""
        models = self.store.list_models()
        if not models:
            return
        newest = models[0]
        self._retain(
            "result",
            {
                "model_id": newest.model_id,
                "accuracy": newest.accuracy,
                "activated": newest.active,
                "reasons": newest.reasons,
                "date": newest.session_date,
            },
        )

    def _publish(self, snap: dict[str, Any], force: bool = False) -> None:
        now = time.monotonic()
        phase = snap.get("phase")
        if not (force or phase != self._last_phase or now - self._last_sent >= PROMPT_MIN_INTERVAL_S):
            return
        self._last_sent, self._last_phase = now, str(phase)
        self._retain("state", {k: snap.get(k) for k in PROMPT_KEYS})

    def _retain(self, which: str, body: dict[str, Any]) -> None:
        self._retained[which] = body
        publisher = self._publisher()
        if publisher is None or publisher.link is None or not publisher.connected:
            return  # run() publishes it once connected
        topics = publisher.topics
        topic = topics.calibration_state if which == "state" else topics.calibration_result
        publisher.background.spawn(publisher.link.publish_retained(topic, json.dumps(body)))
