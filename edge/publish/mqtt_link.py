"""The broker connection: paho-mqtt 2.x on its own network thread, bridged to asyncio.

* Events come from the durable outbox and are handed to paho once each, in ``seq`` order,
  at QoS 1; the outbox row is deleted only when its PUBACK arrives. paho keeps unacked
  messages and resends them in order after a reconnect, so a broker outage loses nothing.
* Order across reconnects. paho resends its unacked messages only when the CONNACK arrives,
  but a publish made after it opened the new socket (CONNECT sent, CONNACK not yet handled)
  goes on the wire at once, ahead of those resends: seq 66 reached the broker before 54-65.
  So rows are handed only on a connection whose CONNACK was seen, and only once every row
  handed on an earlier connection is acknowledged; the check and the hand-over happen under
  paho's outgoing-message lock, so a reconnect cannot slip in between. The guarantee: the
  broker receives the first copy of each event in ``seq`` order, on every connection, and
  every event at least once. (A broker that loses its own state can still redeliver or
  reorder what it already acknowledged; consumers deduplicate on ``seq``.)
* A refused CONNACK (bad credentials, not authorised) is logged as an error and retried; it
  never counts as connected. So is an attempt that fails before any CONNACK (TLS certificate
  rejected, broker unreachable): paho only says *that* it failed, so the client subclass below
  reports *why*. A peer that accepts the TCP connection and closes it (or stays silent) without
  a CONNACK is named too: typically a plain client pointed at a TLS port. Repeats of these
  errors are rate-limited (:mod:`edge.logs`).
* Commands are never taken from retained messages: a retained ``set/`` message would be
  replayed at every start and override the saved switch state. Such a message is counted
  (``commands_ignored_retained``) and logged once per link.
* Subscriptions are made once per connection: re-subscribing makes the broker replay the
  retained messages on that filter, and a handler that subscribes again (as the reaction to a
  retained ``homeassistant/status`` does) would loop forever.
* The password goes to paho and nowhere else: not to logs, not to stats.
"""

from __future__ import annotations

import asyncio
import contextlib
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
from edge.logs import LogLimiter
from edge.outbox import AsyncOutbox
from edge.publish.topics import Topics
from edge.tasks import Supervisor, TaskSet

log = logging.getLogger(__name__)

# How many outbox events may be handed to paho but not yet acknowledged. Bounds memory
# when a long outage left a large backlog.
MAX_UNACKED = 500
# Connection errors that repeat with every retry: one line, then one summary per interval.
CONNECT_ERROR_LOG_INTERVAL_S = 60.0


class _Client(mqtt.Client):
    """paho's client, telling ``on_connect_error`` why an attempt failed before any CONNACK.

    ``attempt`` numbers the connection attempts (network thread): callbacks use it to tell
    which connection they belong to.
    """

    on_connect_error: Callable[[OSError], None] | None = None
    attempt: int = 0

    def reconnect(self) -> MQTTErrorCode:
        # loop_forever (the loop_start thread) connects through here, first time and every retry.
        self.attempt += 1
        try:
            return super().reconnect()
        except OSError as exc:
            if self.on_connect_error is not None:
                self.on_connect_error(exc)
            raise

    def outgoing_lock(self) -> contextlib.AbstractContextManager[Any]:
        """paho's lock over its outgoing messages: held, paho neither resets them for a
        reconnect nor resends them, so a check and a publish made under it are atomic."""
        lock = getattr(self, "_out_message_mutex", None)  # paho 2.x; an RLock (publish takes it too)
        return lock if lock is not None else contextlib.nullcontext()


@dataclass
class LinkStats:
    connected: bool = False
    connects: int = 0
    disconnects: int = 0
    refused: int = 0
    connect_errors: int = 0
    closed_before_connack: int = 0
    last_error: str | None = None
    events_sent: int = 0
    events_acked: int = 0
    commands_received: int = 0
    commands_rejected: int = 0
    commands_ignored_retained: int = 0
    commands_coalesced: int = 0
    commands_rate_limited: int = 0
    commands_applied: int = 0


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
        self._inflight: dict[int, tuple[int, int]] = {}  # paho mid -> (outbox seq, attempt handed on)
        self._handed_seq = 0
        # Set on paho's network thread: the attempt whose CONNACK accepted us (0: none now), and
        # the last attempt that got any CONNACK (refusals included).
        self._live_attempt = 0
        self._answered_attempt = 0
        # mids handed on an attempt before `_earlier_for`: paho resends them at that CONNACK.
        self._earlier: set[int] = set()
        self._earlier_for = 0
        self._retained_warned = False
        self._error_log = LogLimiter(log, CONNECT_ERROR_LOG_INTERVAL_S)
        # The drain is the only path from the outbox to the broker: supervised, so a failure is
        # logged and retried, and a repeated one stops the daemon instead of silently ending it.
        self.supervisor = supervisor
        self._retained_acks: dict[int, asyncio.Future[None]] = {}
        self._subscribed: set[str] = set()  # filters subscribed on the current connection
        self.background = TaskSet()
        self._stopping = False
        self.client = self._make_client()

    def _make_client(self) -> _Client:
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
            if not self._may_hand():
                # Not connected, or paho still has rows of an earlier connection to resend: new
                # rows would overtake them. The CONNACK and the PUBACKs wake this loop again.
                continue
            room = MAX_UNACKED - len(self._inflight)
            if room <= 0:
                continue
            rows = await self.outbox.pending(after_seq=self._handed_seq, limit=room)
            if self._hand(rows) == room:
                self._wake.set()

    def _may_hand(self) -> bool:
        """Connected (CONNACK seen on paho's current attempt), nothing of earlier attempts unacked."""
        attempt = self._live_attempt
        if attempt == 0 or attempt != self.client.attempt:
            return False
        if self._earlier_for != attempt:
            self._earlier_for = attempt
            self._earlier = {mid for mid, (_, handed_on) in self._inflight.items() if handed_on != attempt}
        return not self._earlier

    def _hand(self, rows: list[Any]) -> int:
        """Publish ``rows`` (in seq order) unless a reconnect began since :meth:`_may_hand`."""
        handed = 0
        with self.client.outgoing_lock():
            # Re-checked under the lock: paho cannot start resending (or reset for a new attempt)
            # until it is released, so nothing handed here can overtake a resend.
            if not self._may_hand():
                self._wake.set()  # rows are left for the next round
                return 0
            attempt = self._live_attempt
            for row in rows:
                info = self.client.publish(row.topic, row.payload, qos=1)
                if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
                    log.error("MQTT: paho refused event seq %d: %s", row.seq, mqtt.error_string(info.rc))
                    break
                # NO_CONN (the socket just closed): paho keeps it and resends it, in order, at the
                # next CONNACK, like the others handed on this attempt.
                # Recorded before any await, so the PUBACK callback (marshalled onto this
                # loop) always finds it.
                self._inflight[info.mid] = (row.seq, attempt)
                self._handed_seq = row.seq
                self.stats.events_sent += 1
                handed += 1
        return handed

    # --- paho callbacks: network thread -> event loop ---------------------------------

    def _call(self, fn: Callable[..., Any], *args: Any) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(fn, *args)

    def _paho_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode, properties: Any
    ) -> None:
        # Network thread, before paho resends anything: the drain reads these under paho's lock.
        attempt = self.client.attempt
        self._answered_attempt = attempt
        self._live_attempt = 0 if reason.is_failure else attempt
        self._call(self._handle_connect, reason.is_failure, str(reason))

    def _paho_connect_error(self, exc: OSError) -> None:
        self._call(self._handle_connect_error, isinstance(exc, ssl.SSLError), str(exc) or type(exc).__name__)

    def _paho_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode, properties: Any
    ) -> None:
        self._live_attempt = 0
        answered = self._answered_attempt == self.client.attempt
        self._call(self._handle_disconnect, str(reason), answered)

    def _paho_publish(
        self, client: mqtt.Client, userdata: Any, mid: int, reason: ReasonCode, properties: Any
    ) -> None:
        self._call(self._handle_puback, mid)

    def _paho_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        if message.retain and message.topic.startswith(f"{self.topics.base}/set/"):
            # Retained means "replayed because we subscribed", not "sent to us now" (MQTT 3.1.1
            # clears the flag on live delivery): a stale command, never to be applied.
            self._call(self._handle_retained_command, message.topic, len(message.payload))
            return
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

    def _handle_disconnect(self, reason: str, answered: bool) -> None:
        was = self.stats.connected
        self.stats.connected = False
        self._subscribed.clear()
        if self._stopping:
            return
        if was:
            self.stats.disconnects += 1
            self.stats.last_error = f"disconnected: {reason}"
            log.warning("MQTT: disconnected (%s); paho will reconnect", reason)
        elif not answered:
            self._closed_before_connack(reason)

    def _closed_before_connack(self, reason: str) -> None:
        """The TCP connection worked, but no CONNACK came: say what the peer probably is."""
        self.stats.connect_errors += 1
        self.stats.closed_before_connack += 1
        where = f"{self.host}:{self.port}"
        if "keep alive" in reason.lower():
            what = f"did not answer the MQTT CONNECT within {self.config.keepalive_s} s: is it an MQTT port?"
        elif self.config.tls.enabled:
            what = (
                "closed the connection before answering: does it require a client certificate "
                "(mqtt.tls.cert_file), or is it not an MQTT port?"
            )
        else:
            what = "closed the connection before answering: is it a TLS port? (mqtt.tls.enabled is off)"
        self.stats.last_error = f"{where} {what}"
        self._error_log.error("closed-before-connack", "MQTT: %s %s (will retry)", where, what)

    def _handle_retained_command(self, topic: str, size: int) -> None:
        self.stats.commands_received += 1
        self.stats.commands_ignored_retained += 1
        if not self._retained_warned:
            self._retained_warned = True
            log.warning(
                "MQTT: ignored a retained command on %s (%d bytes): commands are never taken from "
                "retained messages, which the broker replays at every start and which would override "
                "the saved switch state. Clear it with: mosquitto_pub -r -n -t '%s' (further retained "
                "commands are only counted, as commands_ignored_retained)",
                topic,
                size,
                topic,
            )

    def _handle_puback(self, mid: int) -> None:
        fut = self._retained_acks.pop(mid, None)
        if fut is not None and not fut.done():
            fut.set_result(None)
        entry = self._inflight.pop(mid, None)
        if entry is None:
            return
        self._earlier.discard(mid)
        self.stats.events_acked += 1
        self.background.spawn(self.outbox.ack(entry[0]), name="outbox-ack")
        self._wake.set()


def event_payload(seq: int, body: dict[str, Any]) -> bytes:
    return json.dumps({**body, "seq": seq}, separators=(",", ":")).encode()
