"""The broker connection: paho-mqtt 2.x on its own network thread, bridged to asyncio.

* Events come from the durable outbox and are handed to paho once each, in ``seq`` order,
  at QoS 1; the outbox row is deleted only when its PUBACK arrives. paho keeps unacked
  messages and resends them in order after a reconnect, so a broker outage loses nothing.
* A refused CONNACK (bad credentials, not authorised) is logged as an error and retried; it
  never counts as connected. So is an attempt that fails before any CONNACK (TLS certificate
  rejected, broker unreachable): paho only says *that* it failed, so the client subclass below
  reports *why*.
* Subscriptions are made once per connection: re-subscribing makes the broker replay the
  retained messages on that filter, and a handler that subscribes again (as the reaction to a
  retained ``homeassistant/status`` does) would loop forever.
* The password goes to paho and nowhere else: not to logs, not to stats.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.reasoncodes import ReasonCode

from edge.config.mqtt import MqttConfig
from edge.outbox import AsyncOutbox
from edge.publish.topics import Topics
from edge.tasks import Supervisor, TaskSet

log = logging.getLogger(__name__)

# How many outbox events may be handed to paho but not yet acknowledged. Bounds memory
# when a long outage left a large backlog.
MAX_UNACKED = 500


class _Client(mqtt.Client):
    """paho's client, telling ``on_connect_error`` why an attempt failed before any CONNACK."""

    on_connect_error: Callable[[OSError], None] | None = None

    def reconnect(self) -> MQTTErrorCode:
        # loop_forever (the loop_start thread) connects through here, first time and every retry.
        try:
            return super().reconnect()
        except OSError as exc:
            if self.on_connect_error is not None:
                self.on_connect_error(exc)
            raise


@dataclass
class LinkStats:
    connected: bool = False
    connects: int = 0
    disconnects: int = 0
    refused: int = 0
    connect_errors: int = 0
    last_error: str | None = None
    events_sent: int = 0
    events_acked: int = 0
    commands_received: int = 0
    commands_rejected: int = 0


class MqttLink:
    def __init__(
        self,
        config: MqttConfig,
        topics: Topics,
        outbox: AsyncOutbox,
        host: str,
        port: int,
        on_connected: Callable[[], Coroutine[Any, Any, None]],
        on_message: Callable[[str, bytes], None],
        supervisor: Supervisor,
    ) -> None:
        self.config = config
        self.topics = topics
        self.outbox = outbox
        self.host = host
        self.port = port
        self.stats = LinkStats()
        self._on_connected = on_connected
        self._on_message = on_message
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake = asyncio.Event()
        self._connected_event = asyncio.Event()
        self._inflight: dict[int, int] = {}  # paho mid -> outbox seq
        self._handed_seq = 0
        # The drain is the only path from the outbox to the broker: supervised, so a failure is
        # logged and retried, and a repeated one stops the daemon instead of silently ending it.
        self.supervisor = supervisor
        self._retained_acks: dict[int, asyncio.Future[None]] = {}
        self._subscribed: set[str] = set()  # filters subscribed on the current connection
        self.background = TaskSet()
        self._stopping = False
        self.client = self._make_client()

    def _make_client(self) -> mqtt.Client:
        cfg = self.config
        client = _Client(
            CallbackAPIVersion.VERSION2,
            client_id=cfg.client_id or f"emotion-edge-{self.topics.device_id}",
            protocol=mqtt.MQTTv311,
        )
        if cfg.username:
            password = cfg.password.get_secret_value() if cfg.password else None
            client.username_pw_set(cfg.username, password)
        if cfg.tls.enabled:
            client.tls_set(
                ca_certs=str(cfg.tls.ca_file) if cfg.tls.ca_file else None,
                certfile=str(cfg.tls.cert_file) if cfg.tls.cert_file else None,
                keyfile=str(cfg.tls.key_file) if cfg.tls.key_file else None,
                cert_reqs=ssl.CERT_REQUIRED,
            )
            client.tls_insecure_set(cfg.tls.insecure)
        client.will_set(self.topics.availability, "offline", qos=1, retain=True)
        client.reconnect_delay_set(
            min_delay=max(1, round(cfg.reconnect_min_s)), max_delay=round(cfg.reconnect_max_s)
        )
        # paho's own queue is unbounded; MAX_UNACKED bounds what we give it.
        client.max_inflight_messages_set(100)
        client.on_connect = self._paho_connect
        client.on_connect_error = self._paho_connect_error
        client.on_disconnect = self._paho_disconnect
        client.on_publish = self._paho_publish
        client.on_message = self._paho_message
        return client

    @property
    def connected(self) -> bool:
        return self.stats.connected

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        log.info(
            "MQTT: connecting to %s:%d%s as %s",
            self.host,
            self.port,
            " (TLS)" if self.config.tls.enabled else "",
            self.config.username or "anonymous",
        )
        self.client.connect_async(self.host, self.port, keepalive=self.config.keepalive_s)
        self.client.loop_start()
        self.supervisor.start("mqtt-drain", self._drain, group="mqtt")

    async def stop(self, final_availability: str = "stopped", timeout_s: float = 3.0) -> None:
        """Publish ``stopped`` (retained) and wait for its PUBACK, then disconnect."""
        self._stopping = True
        await self.supervisor.stop_group("mqtt")
        if self.connected:
            try:
                await asyncio.wait_for(
                    self.publish_retained(self.topics.availability, final_availability, wait=True), timeout_s
                )
            except TimeoutError:
                log.warning("MQTT: no PUBACK for %r within %.1f s", final_availability, timeout_s)
        self.client.disconnect()
        await asyncio.to_thread(self.client.loop_stop)
        # Callbacks the network thread queued before it stopped (late PUBACKs) run now, so their
        # outbox acks finish before the outbox closes.
        await asyncio.sleep(0)
        await self.background.wait()

    def notify_new_events(self) -> None:
        self._wake.set()

    async def publish_retained(self, topic: str, payload: str | bytes, wait: bool = False) -> None:
        info = self.client.publish(topic, payload, qos=1, retain=True)
        if wait and self._loop is not None:
            fut: asyncio.Future[None] = self._loop.create_future()
            self._retained_acks[info.mid] = fut
            await fut

    def publish_volatile(self, topic: str, payload: str | bytes) -> None:
        """QoS 0, not retained: stats, which are superseded every few seconds anyway."""
        if self.connected:
            self.client.publish(topic, payload, qos=0, retain=False)

    def subscribe(self, topic: str) -> None:
        """Subscribe once per connection; a repeat is a no-op (it would replay retained messages)."""
        if topic in self._subscribed:
            return
        result, _mid = self.client.subscribe(topic, qos=1)
        if result == mqtt.MQTT_ERR_SUCCESS:
            self._subscribed.add(topic)

    # --- the outbox drain -------------------------------------------------------------

    async def _drain(self) -> None:
        """Hand outbox rows to paho in order, keeping at most MAX_UNACKED in its hands."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            if not self.connected and self._handed_seq == 0:
                # Nothing handed over yet: wait for the first connection so a restart
                # resends the backlog in order before anything new.
                continue
            room = MAX_UNACKED - len(self._inflight)
            if room <= 0:
                continue
            rows = await self.outbox.pending(after_seq=self._handed_seq, limit=room)
            for row in rows:
                info = self.client.publish(row.topic, row.payload, qos=1)
                if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
                    log.error("MQTT: paho refused event seq %d: %s", row.seq, mqtt.error_string(info.rc))
                    break
                # Recorded before any await, so the PUBACK callback (marshalled onto this
                # loop) always finds it.
                self._inflight[info.mid] = row.seq
                self._handed_seq = row.seq
                self.stats.events_sent += 1
            if len(rows) == room:
                self._wake.set()

    # --- paho callbacks: network thread -> event loop ---------------------------------

    def _call(self, fn: Callable[..., Any], *args: Any) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(fn, *args)

    def _paho_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode, properties: Any
    ) -> None:
        self._call(self._handle_connect, reason.is_failure, str(reason))

    def _paho_connect_error(self, exc: OSError) -> None:
        self._call(self._handle_connect_error, isinstance(exc, ssl.SSLError), str(exc) or type(exc).__name__)

    def _paho_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode, properties: Any
    ) -> None:
        self._call(self._handle_disconnect, str(reason))

    def _paho_publish(
        self, client: mqtt.Client, userdata: Any, mid: int, reason: ReasonCode, properties: Any
    ) -> None:
        self._call(self._handle_puback, mid)

    def _paho_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        self._call(self._on_message, message.topic, bytes(message.payload))

    def _handle_connect(self, failed: bool, reason: str) -> None:
        if failed:
            self.stats.refused += 1
            self.stats.connected = False
            self.stats.last_error = f"broker refused connection: {reason}"
            log.error("MQTT: %s:%d refused the connection: %s (will retry)", self.host, self.port, reason)
            return
        self.stats.connected = True
        self.stats.connects += 1
        self._subscribed.clear()  # a clean session: the broker forgot them
        self.stats.last_error = None
        log.info("MQTT: connected to %s:%d", self.host, self.port)
        self._wake.set()
        self.background.spawn(self._on_connected(), name="mqtt-on-connected")

    def _handle_connect_error(self, tls: bool, error: str) -> None:
        if self._stopping:
            return
        self.stats.connect_errors += 1
        self.stats.connected = False
        if tls:
            # A rejected certificate is a configuration error, not a passing network problem.
            self.stats.last_error = f"TLS handshake failed: {error}"
            log.error("MQTT: TLS handshake with %s:%d failed: %s (will retry)", self.host, self.port, error)
        else:
            self.stats.last_error = f"cannot connect: {error}"
            log.warning("MQTT: cannot connect to %s:%d: %s (will retry)", self.host, self.port, error)

    def _handle_disconnect(self, reason: str) -> None:
        was = self.stats.connected
        self.stats.connected = False
        self._subscribed.clear()
        if was and not self._stopping:
            self.stats.disconnects += 1
            self.stats.last_error = f"disconnected: {reason}"
            log.warning("MQTT: disconnected (%s); paho will reconnect", reason)

    def _handle_puback(self, mid: int) -> None:
        fut = self._retained_acks.pop(mid, None)
        if fut is not None and not fut.done():
            fut.set_result(None)
        seq = self._inflight.pop(mid, None)
        if seq is None:
            return
        self.stats.events_acked += 1
        self.background.spawn(self.outbox.ack(seq), name="outbox-ack")
        self._wake.set()


def event_payload(seq: int, body: dict[str, Any]) -> bytes:
    return json.dumps({**body, "seq": seq}, separators=(",", ":")).encode()
