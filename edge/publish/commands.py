"""Commands from ``{prefix}/{device_id}/set/<switch>``: parsed and validated, never trusted."""

from __future__ import annotations

from dataclasses import dataclass

SWITCHES = ("emg_paused", "camera_paused", "privacy")
_ON = {"on", "true", "1", "pause", "paused", "enable", "enabled"}
_OFF = {"off", "false", "0", "resume", "resumed", "disable", "disabled"}


class CommandError(ValueError):
    pass


@dataclass(frozen=True)
class SwitchCommand:
    switch: str
    on: bool


def parse_command(base_topic: str, topic: str, payload: bytes) -> SwitchCommand:
    """``.../set/emg_paused`` + ``ON`` -> SwitchCommand("emg_paused", True)."""
    prefix = f"{base_topic}/set/"
    if not topic.startswith(prefix):
        raise CommandError(f"not a command topic: {topic!r}")
    switch = topic[len(prefix) :]
    if switch not in SWITCHES:
        raise CommandError(f"unknown switch {switch!r}; known: {', '.join(SWITCHES)}")
    if len(payload) > 32:
        raise CommandError(f"payload for {switch} too long ({len(payload)} bytes)")
    try:
        text = payload.decode("ascii").strip().strip('"').lower()
    except UnicodeDecodeError as exc:
        raise CommandError(f"payload for {switch} is not ASCII") from exc
    if text in _ON:
        return SwitchCommand(switch, True)
    if text in _OFF:
        return SwitchCommand(switch, False)
    raise CommandError(f"payload for {switch} must be ON or OFF, got {text[:16]!r}")
