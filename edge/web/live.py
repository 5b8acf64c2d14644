"""What the page shows, gathered a few times a second, and only while at least one page is open.

One loop (supervised) builds each tick's messages once and offers them to every viewer. A viewer keeps
only the newest message of each kind: a slow browser skips ticks (counted as superseded) instead of
queueing frames without bound. With no viewer the loop sleeps on an event, the EMG tap is a no-op and
no frame is encoded.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from edge.publish.commands import LIVE_VIEW
from edge.service.stats import collect_stats
from edge.web.frames import encode_jpeg
from edge.web.traces import EmgTraces

if TYPE_CHECKING:
    from edge.service.supervisor import Service
    from edge.sources.camera import Frame

log = logging.getLogger(__name__)

TICK_S = 0.2  # state and traces at 5 Hz; frames at video_fps, which is at most that
STATS_EVERY_S = 2.0
RECENT_EVENTS = 20
EVENT_FIELDS = ("type", "id", "emotion", "confidence", "modalities", "ts", "seq")

Message = str | bytes


@dataclass
class LiveStats:
    viewers: int = 0
    viewers_total: int = 0
    frames_encoded: int = 0
    frames_served: int = 0  # JPEGs sent, counted per viewer: every picture that left the process
    frames_superseded: int = 0  # a viewer was still busy with the previous one
    frames_withheld: int = 0  # encoded, then privacy or a pause came first: not sent
    frame_errors: int = 0
    messages_superseded: int = 0


class Viewer:
    """One open page: the newest pending message of each kind, in a fixed order."""

    KINDS = ("state", "calibration", "emg", "frame")

    def __init__(self) -> None:
        self.pending: dict[str, list[Message]] = {}
        self.wake = asyncio.Event()

    def offer(self, kind: str, messages: list[Message]) -> bool:
        """Queue ``messages`` (sent together); True when they replace ones not yet sent."""
        replaced = kind in self.pending
        self.pending[kind] = messages
        self.wake.set()
        return replaced

    async def take(self) -> list[Message]:
        await self.wake.wait()
        self.wake.clear()
        out = [m for kind in self.KINDS for m in self.pending.pop(kind, [])]
        return out


class LiveFeed:
    def __init__(self, service: Service) -> None:
        self.service = service
        cfg = service.config
        self.video_interval_s = 1.0 / cfg.web.video_fps
        self.traces = EmgTraces(cfg.emg.sample_rate_hz, cfg.emg.serial.value_min, cfg.emg.serial.value_max)
        self.viewers: set[Viewer] = set()
        self.stats = LiveStats()
        self.events: deque[dict[str, Any]] = deque(maxlen=RECENT_EVENTS)
        self.episode: dict[str, Any] | None = None
        self._watched = asyncio.Event()
        self._stats: dict[str, Any] = {}
        self._stats_at = -float("inf")
        self._frame_sent: Frame | None = None
        self._frame_due = 0.0
        self._calibration_sent = ""

    # --- viewers -----------------------------------------------------------------------

    def join(self) -> Viewer:
        viewer = Viewer()
        if not self.viewers:
            self.traces.clear()
            self.traces.active = True
            self._stats_at = -float("inf")
            self._frame_sent = None
        self._calibration_sent = ""  # every page, the new one included, gets the session again
        self.viewers.add(viewer)
        self.stats.viewers = len(self.viewers)
        self.stats.viewers_total += 1
        self._watched.set()
        return viewer

    def leave(self, viewer: Viewer) -> None:
        self.viewers.discard(viewer)
        self.stats.viewers = len(self.viewers)
        if not self.viewers:
            self._watched.clear()
            self.traces.active = False
            self.traces.clear()

    def _offer(self, kind: str, messages: list[Message]) -> None:
        for viewer in self.viewers:
            if viewer.offer(kind, messages):
                if kind == "frame":
                    self.stats.frames_superseded += 1
                else:
                    self.stats.messages_superseded += 1

    # --- events (from the publisher, after they are stored in the outbox) ---------------

    def on_event(self, body: dict[str, Any]) -> None:
        event = {key: body.get(key) for key in EVENT_FIELDS}
        self.events.append(event)
        self.episode = None if event["type"] == "end" else event

    # --- the loop -------------------------------------------------------------------------

    async def run(self) -> None:
        while True:
            await self._watched.wait()
            started = time.monotonic()
            await self._tick(started)
            await asyncio.sleep(max(0.0, TICK_S - (time.monotonic() - started)))

    async def _tick(self, now: float) -> None:
        if now - self._stats_at >= STATS_EVERY_S:
            self._stats_at = now
            self._stats = await collect_stats(self.service)
        self._offer("state", [json.dumps(self.state_message(), separators=(",", ":"))])
        self._offer_calibration()
        traces = self.traces.snapshot()
        if traces is not None:
            self._offer("emg", [json.dumps({"t": "emg", **traces}, separators=(",", ":"))])
        if now >= self._frame_due:
            self._frame_due = now + self.video_interval_s
            await self._send_frame()

    def _offer_calibration(self) -> None:
        """The calibration session's snapshot, when it changed (every tick while one counts down)."""
        message = json.dumps(
            {"t": "calibration", **self.service.calibration.manager.status()}, separators=(",", ":")
        )
        if message != self._calibration_sent:
            self._calibration_sent = message
            self._offer("calibration", [message])

    def video_status(self) -> str:
        switches, pipeline = self.service.switches, self.service.pipeline
        if self.service.config.camera.source == "off":
            return "none"
        if switches["privacy"]:
            return "privacy"
        if switches["camera_paused"]:
            return "paused"
        if not switches.get(LIVE_VIEW, True):
            return "off"
        return "live" if pipeline.availability()["camera"] else "waiting"

    async def _send_frame(self) -> None:
        stage = self.service.pipeline.camera_stage
        frame = stage.last_frame if stage is not None else None
        if frame is None or frame is self._frame_sent or self.video_status() != "live":
            return
        self._frame_sent = frame
        faces = list(self.service.pipeline.faces)  # the faces of this very frame (set together)
        try:
            jpeg, scale = await asyncio.to_thread(encode_jpeg, frame.image)
        except Exception:
            self.stats.frame_errors += 1
            log.exception("could not encode a frame for the live page")
            return
        self.stats.frames_encoded += 1
        if self.video_status() != "live":  # privacy or a pause came while it was being encoded
            self.stats.frames_withheld += 1
            return
        height, width = frame.image.shape[:2]
        header = {"t": "frame", "w": width, "h": height, "scale": scale, "index": frame.index, "faces": faces}
        self._offer("frame", [json.dumps(header, separators=(",", ":")), jpeg])

    def state_message(self) -> dict[str, Any]:
        service = self.service
        publisher = service.publisher
        return {
            "t": "state",
            "device_id": service.config.device_id,
            "state": service.pipeline.state_body(),
            "switches": dict(service.switches),
            "modalities": service.pipeline.availability(),
            "mqtt": publisher is not None and publisher.connected,
            "video": self.video_status(),
            "episode": self.episode,
            "events": list(self.events),
            "stats": self._stats,
        }

    def stats_dict(self) -> dict[str, Any]:
        return asdict(self.stats)
