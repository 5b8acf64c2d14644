"""Everything the daemon tells the broker, and the commands it takes back.

The publisher owns the MQTT link and the device's retained topics: availability, discovery,
switches, modality availability and the state. Episode events go to the durable outbox first
and reach the broker from there. Commands are parsed strictly and handed to the pipeline as
switch changes; the switches are saved so they survive a restart.

Commands are coalesced and rate-limited: a flood (a script toggling a switch 10,000 times, a
retained-message loop) costs neither memory nor event latency. Per switch only the latest value
waits to be applied; applications happen at most ``COMMANDS_PER_S`` times a second, and each one
saves the settings and publishes the retained switch state once for the whole burst. Counted as
``commands_coalesced`` (superseded by a later command before being applied) and
``commands_rate_limited`` (held back because the previous application was too recent). Log lines
about commands are rate-limited as well (:mod:`edge.logs`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

from edge.config import Config
from edge.decision import EmotionState, EpisodeEvent
from edge.logs import LogLimiter
from edge.outbox import AsyncOutbox
from edge.publish.commands import ActionCommand, CommandError, action_of, parse_action, parse_command
from edge.publish.discovery import discovery_payload
from edge.publish.mqtt_link import MqttLink, event_payload
from edge.publish.state_budget import StateBudget
from edge.publish.topics import Topics
from edge.tasks import Supervisor, TaskSet

log = logging.getLogger(__name__)

# Command applications per second, at most; commands arriving faster are coalesced per switch.
COMMANDS_PER_S = 5.0
# Log lines about commands (applied, rejected): this many per interval, then one summary line.
COMMAND_LOG_BURST = 10
COMMAND_LOG_INTERVAL_S = 60.0

EventSink = Callable[[EpisodeEvent, dict[str, Any]], None]


def _topics(config: Config) -> Topics:
    return Topics(config.mqtt.topic_prefix, config.device_id, config.mqtt.discovery_prefix)


def _on_off(value: bool) -> str:
    return "ON" if value else "OFF"


class Publisher:
    def __init__(
        self,
        config: Config,
        outbox: AsyncOutbox,
        switches: dict[str, bool],
        state_body: Callable[[], dict[str, Any]],
        availability: Callable[[], Mapping[str, bool]],
        on_switch: Callable[[str, bool], None],
        supervisor: Supervisor,
        on_event: EventSink | None = None,
    ) -> None:
        self.config = config
        self.outbox = outbox
        self.switches = switches
        self._state_body = state_body
        self._availability = availability
        self._on_switch = on_switch
        self.on_event = on_event
        self.supervisor = supervisor
        self.topics = _topics(config)
        self.background = TaskSet()
        self.link: MqttLink | None = None
        self._state_budget = StateBudget(config.mqtt.state_min_interval_s, config.mqtt.state_confidence_step)
        # Commands waiting to be applied: switch -> the latest value asked for.
        self._pending_commands: dict[str, bool] = {}
        self._applier: asyncio.Task[None] | None = None
        self._last_apply = -float("inf")
        self._command_log = LogLimiter(log, COMMAND_LOG_INTERVAL_S, burst=COMMAND_LOG_BURST)
        self._republish: asyncio.Task[None] | None = None
        self._republish_again = False
        self.on_action: Callable[[ActionCommand], None] | None = None  # set by the calibration

    @property
    def connected(self) -> bool:
        return self.link is not None and self.link.connected

    async def start(self, host: str, port: int) -> None:
        self.link = MqttLink(
            self.config.mqtt,
            self.topics,
            self.outbox,
            host,
            port,
            self._on_connected,
            self._on_message,
            self.supervisor,
        )
        await self.link.start()

    async def reconnect(self, config: Config) -> None:
        """New MQTT settings or device id: a new link; events in flight stay in the outbox."""
        assert self.link is not None
        log.info("MQTT settings changed: reconnecting")
        old = self.link
        await old.stop()
        self.config = config
        self.topics = _topics(config)
        self._state_budget = StateBudget(config.mqtt.state_min_interval_s, config.mqtt.state_confidence_step)
        host = config.mqtt.host or old.host
        port = config.mqtt.port if config.mqtt.host else old.port
        await self.start(host, port)

    async def stop(self) -> None:
        await self.background.wait()
        if self.link is not None:
            await self.flush_outbox(timeout_s=3.0)
            await self.link.stop("stopped")

    async def flush_outbox(self, timeout_s: float) -> None:
        """Give the broker a moment to acknowledge what is queued; the rest stays on disk."""
        assert self.link is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self.link.connected:
            if (await self.outbox.stats())["pending"] == 0:
                return
            self.link.notify_new_events()
            await asyncio.sleep(0.05)

    # --- events and state -------------------------------------------------------------

    async def emit(self, events: list[EpisodeEvent]) -> None:
        if not events:
            return
        for ev in events:
            body = {
                "type": ev.type,
                "id": ev.episode_id,
                "emotion": ev.emotion,
                "confidence": ev.confidence,
                "probs": ev.probs,
                "modalities": ev.modalities,
                "ts": round(time.time(), 3),
                "sample": ev.sample,
                "device_id": self.config.device_id,
                # With seq, what consumers deduplicate on: greatest (generation, seq) wins.
                "generation": self.outbox.generation,
                **({"reason": ev.reason} if ev.reason is not None else {}),
            }
            seq = await self.outbox.append(self.topics.event, partial(event_payload, body=body))
            if self.on_event is not None:
                self.on_event(ev, {**body, "seq": seq})
            log.debug("event %s seq=%d %s %.2f", ev.type, seq, ev.emotion, ev.confidence)
        if self.link is not None:
            self.link.notify_new_events()

    def maybe_publish_state(self, state: EmotionState, force: bool = False) -> None:
        """Publish the state if the recorder budget allows it (:mod:`edge.publish.state_budget`)."""
        if not self._state_budget.due(state, time.monotonic(), force):
            return
        if self.link is None or not self.link.connected:
            return  # retained state is re-sent on connect
        self.background.spawn(self.link.publish_retained(self.topics.state, json.dumps(self._state_body())))

    def publish_stats(self, stats: dict[str, Any]) -> None:
        if self.link is not None:
            self.link.publish_volatile(self.topics.stats, json.dumps(stats))

    async def publish_availability(self) -> None:
        assert self.link is not None
        for modality, available in self._availability().items():
            await self.link.publish_retained(self.topics.modality_available(modality), _on_off(available))

    # --- connection and commands ------------------------------------------------------

    async def _on_connected(self) -> None:
        assert self.link is not None
        self.link.subscribe(self.topics.command_filter)
        if self.config.mqtt.discovery:
            self.link.subscribe(self.topics.ha_status)
        await self._publish_all()

    async def _publish_all(self) -> None:
        """Everything retained that describes the device: sent on connect and when HA restarts."""
        link = self.link
        assert link is not None
        if self.config.mqtt.discovery:
            payload = json.dumps(discovery_payload(self.topics, self.config), separators=(",", ":"))
            await link.publish_retained(self.topics.discovery, payload)
        for name, on in self.switches.items():
            await link.publish_retained(self.topics.switch_state(name), _on_off(on))
        await self.publish_availability()
        await link.publish_retained(self.topics.state, json.dumps(self._state_body()))
        # Last: until now subscribers see "offline", so the previous run's retained values (read before
        # the refresh above) are never shown as current.
        await link.publish_retained(self.topics.availability, "online")

    def _on_message(self, topic: str, payload: bytes) -> None:
        assert self.link is not None
        if topic == self.topics.ha_status:
            if payload.strip() == b"online" and self.config.mqtt.discovery:
                self._command_log.info("ha-online", "Home Assistant came online: re-sending discovery")
                self._republish_all()
            return
        stats = self.link.stats
        stats.commands_received += 1
        try:
            if action_of(self.topics.base, topic) is not None:
                self._apply_action(parse_action(self.topics.base, topic, payload))
                return
            cmd = parse_command(self.topics.base, topic, payload, tuple(self.switches))
        except CommandError as exc:
            stats.commands_rejected += 1
            self._command_log.warning("rejected", "ignored command: %s", exc)
            return
        self.submit(cmd.switch, cmd.on)

    def submit(self, switch: str, on: bool) -> None:
        """Queue a switch change, from MQTT or the live page: one path, coalesced and rate-limited."""
        assert self.link is not None and switch in self.switches
        stats = self.link.stats
        if switch in self._pending_commands:
            stats.commands_coalesced += 1
        self._pending_commands[switch] = on
        busy = self._applier is not None and not self._applier.done()
        if busy or time.monotonic() - self._last_apply < 1.0 / COMMANDS_PER_S:
            # Not applied at once: it waits for the applier's next turn (and may be coalesced).
            stats.commands_rate_limited += 1
        if not busy:
            self._applier = self.background.spawn(self._apply_commands(), name="apply-commands")

    def _apply_action(self, cmd: ActionCommand) -> None:
        """Buttons (start a calibration): applied at once; their handler refuses what it cannot do."""
        assert self.link is not None
        self.link.stats.commands_applied += 1
        self._command_log.info("action", "command: %s %s", cmd.action, cmd.payload)
        if self.on_action is not None:
            self.on_action(cmd)

    async def _apply_commands(self) -> None:
        """Apply what waits, at most COMMANDS_PER_S times a second, until nothing does."""
        while self._pending_commands:
            wait = self._last_apply + 1.0 / COMMANDS_PER_S - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            batch, self._pending_commands = self._pending_commands, {}
            self._last_apply = time.monotonic()
            await self._apply(batch)

    async def _apply(self, batch: dict[str, bool]) -> None:
        assert self.link is not None
        self.link.stats.commands_applied += len(batch)
        changed = [switch for switch, on in batch.items() if self.switches[switch] != on]
        for switch in changed:
            self.switches[switch] = batch[switch]
            self._on_switch(switch, batch[switch])
        self._command_log.info(
            "applied",
            "command: %s",
            ", ".join(
                f"{switch} -> {_on_off(on)}" + ("" if switch in changed else " (unchanged)")
                for switch, on in batch.items()
            ),
        )
        if changed:
            await self.outbox.save_settings("switches", self.switches)
        # The state is confirmed even when unchanged: Home Assistant waits for it (not optimistic).
        for switch in batch:
            await self.link.publish_retained(self.topics.switch_state(switch), _on_off(self.switches[switch]))
        if changed:
            await self.publish_availability()

    def reconfigure(self, config: Config) -> None:
        """A reload that keeps the link: discovery is re-sent if it changed (name, modalities)."""
        old, self.config = self.config, config
        if config.mqtt.discovery and discovery_payload(self.topics, config) != discovery_payload(
            self.topics, old
        ):
            self._republish_all()

    def _republish_all(self) -> None:
        """``_publish_all`` once, or once more after the one running: births do not pile up."""
        if self._republish is not None and not self._republish.done():
            self._republish_again = True
            return

        async def run() -> None:
            while True:
                self._republish_again = False
                await self._publish_all()
                if not self._republish_again:
                    return

        self._republish = self.background.spawn(run(), name="republish")
