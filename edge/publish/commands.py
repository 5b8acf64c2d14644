"""Commands from ``{prefix}/{device_id}/set/<switch>``: parsed and validated, never trusted.

The payload is exactly ``ON`` or ``OFF``, as documented in the README and as Home Assistant's MQTT
switch sends them (``payload_on``/``payload_off`` in the discovery payload). Nothing else is taken:
not ``on``, ``1``, ``true`` or padded variants. A lenient parser makes a typo or a stray tool act on
the device; a strict one makes it show up as ``commands_rejected``.
"""

from __future__ import annotations

from dataclasses import dataclass

SWITCHES = ("emg_paused", "camera_paused", "privacy")
# Only with the live page enabled: whether the page may show the camera.
LIVE_VIEW = "live_view"
PAYLOAD_ON = b"ON"
PAYLOAD_OFF = b"OFF"
# Longest payload quoted back in an error message (the rest is cut: logs are not for payloads).
_QUOTE_MAX = 16


class CommandError(ValueError):
    pass


@dataclass(frozen=True)
class SwitchCommand:
    switch: str
    on: bool


def _command_name(base_topic: str, topic: str) -> str | None:
    """``<base>/set/<name>`` -> ``name``; None for a topic outside ``<base>/set/``."""
    prefix = f"{base_topic}/set/"
    return topic[len(prefix) :] if topic.startswith(prefix) else None


def _bad_payload(command: str, expected: str, payload: bytes) -> CommandError:
    """The one-line error for a payload other than ``expected``, quoting at most _QUOTE_MAX bytes."""
    quoted = payload[:_QUOTE_MAX]
    more = f" (+{len(payload) - _QUOTE_MAX} bytes)" if len(payload) > _QUOTE_MAX else ""
    return CommandError(f"payload for {command} must be exactly {expected}, got {quoted!r}{more}")


def switch_of(base_topic: str, topic: str, switches: tuple[str, ...] = SWITCHES) -> str:
    """``.../set/emg_paused`` -> ``emg_paused``; CommandError for anything but one of ``switches``."""
    switch = _command_name(base_topic, topic)
    if switch is None:
        raise CommandError(f"not a command topic: {topic!r}")
    if switch not in switches:
        raise CommandError(f"unknown switch {switch[:32]!r}; known: {', '.join(switches)}")
    return switch


def parse_command(
    base_topic: str, topic: str, payload: bytes, switches: tuple[str, ...] = SWITCHES
) -> SwitchCommand:
    """``.../set/emg_paused`` + ``ON`` -> SwitchCommand("emg_paused", True)."""
    switch = switch_of(base_topic, topic, switches)
    if payload == PAYLOAD_ON:
        return SwitchCommand(switch, True)
    if payload == PAYLOAD_OFF:
        return SwitchCommand(switch, False)
    raise _bad_payload(switch, "ON or OFF", payload)


# Commands that act once rather than set a state (Home Assistant buttons): topic -> payloads taken.
ACTIONS: dict[str, tuple[bytes, ...]] = {"calibrate": (b"START", b"CANCEL")}


@dataclass(frozen=True)
class ActionCommand:
    action: str
    payload: str


def action_of(base_topic: str, topic: str) -> str | None:
    """``.../set/calibrate`` -> ``calibrate``; None for any other topic (a switch, or unknown)."""
    name = _command_name(base_topic, topic)
    return name if name in ACTIONS else None


def parse_action(base_topic: str, topic: str, payload: bytes) -> ActionCommand:
    """``.../set/calibrate`` + ``START`` -> ActionCommand("calibrate", "START"), as strictly as switches."""
    action = action_of(base_topic, topic)
    if action is None:
        raise CommandError(f"not an action topic: {topic[:64]!r}")
    allowed = ACTIONS[action]
    if payload not in allowed:
        raise _bad_payload(action, " or ".join(a.decode() for a in allowed), payload)
    return ActionCommand(action, payload.decode())
