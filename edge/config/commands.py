"""``emotion-edge check-config | config-schema | print-default-config``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from edge.config import EXIT_CONFIG
from edge.config.loader import ConfigError, config_schema, default_config_toml, load_config
from edge.config.root import Config


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    check = subparsers.add_parser(
        "check-config",
        help="validate a config file (with EMOTION_EDGE__* overrides and credentials applied)",
        description=f"Exit 0 when valid; otherwise print one line per error and exit {EXIT_CONFIG}.",
    )
    check.add_argument("config_file", metavar="FILE", type=Path, help="TOML configuration file")
    check.set_defaults(func=_cmd_check_config)

    schema = subparsers.add_parser("config-schema", help="print the JSON schema of the config file")
    schema.set_defaults(func=_cmd_config_schema)

    default = subparsers.add_parser("print-default-config", help="print the default config as commented TOML")
    default.set_defaults(func=_cmd_print_default_config)


def _cmd_check_config(args: argparse.Namespace) -> int:
    try:
        # Also the recording: check-config answers whether `run` would start and find its input.
        config = load_config(args.config_file, check_recording=True)
    except ConfigError as exc:
        # One line per error and no traceback: this is read by an operator (or journalctl), not a developer.
        for path, message in exc.errors:
            print(f"emotion-edge: config error: {path}: {message}", file=sys.stderr)
        return EXIT_CONFIG
    print(f"config OK: {args.config_file}")
    for line in summary(config):
        print("  " + line)
    return 0


def _cmd_config_schema(args: argparse.Namespace) -> int:
    print(json.dumps(config_schema(), indent=2))
    return 0


def _cmd_print_default_config(args: argparse.Namespace) -> int:
    sys.stdout.write(default_config_toml())
    return 0


def summary(config: Config) -> list[str]:
    """A few human-readable lines; the password only ever appears as its SecretStr mask."""
    mqtt, emg = config.mqtt, config.emg
    broker = f"{mqtt.host}:{mqtt.port}" if mqtt.host is not None else "no broker configured (embedded)"
    auth = f"user={mqtt.username} password={mqtt.password or '(none)'}" if mqtt.username else "anonymous"
    if emg.source == "serial":
        source = f"serial {emg.serial.port} at {emg.serial.baudrate} baud"
    elif emg.source == "replay":
        source = f"replay {emg.replay.path} speed={emg.replay.speed} loop={emg.replay.loop}"
    else:
        source = "off"
    models = config.models
    return [
        f"device_id  {config.device_id}",
        f"mqtt       {broker} tls={'on' if mqtt.tls.enabled else 'off'} {auth} "
        f"topic_prefix={mqtt.topic_prefix} discovery=" + (mqtt.discovery_prefix if mqtt.discovery else "off"),
        f"emg        {source}, {emg.sample_rate_hz:g} Hz",
        f"models     emg={models.emg or '(shipped)'} face={models.face or '(shipped)'} "
        f"threads={models.num_threads}",
        f"camera     {config.camera.source}"
        + (f" {config.camera.display_path}" if config.camera.path else "")
        + f" at most {config.camera.fps:g} fps; face detector "
        + (f"YuNet {config.face.detector_model}" if config.face.detector_model else "Haar (built-in)")
        + f", policy {config.face.policy}",
        f"decision   enter={config.decision.enter_threshold:g} exit={config.decision.exit_threshold:g} "
        f"ema_alpha={config.decision.ema_alpha:g}",
        f"outbox     {config.outbox.path} (at most {config.outbox.max_events} events, "
        f"{config.outbox.max_age_s / 86400:g} days)",
        f"logging    {config.logging.level}",
        f"web        {_web_summary(config)}",
    ]


def _web_summary(config: Config) -> str:
    web = config.web
    if not web.enabled:
        return "off"
    return web.url + (" password set" if web.password is not None else " no password (loopback only)")
