"""``emotion-edge run | replay | demo``: start the service."""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import logging
import math
import os
import sqlite3
import sys
import tempfile
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from edge.cli import fail
from edge.config import EXIT_CONFIG, Config, ConfigError, load_config
from edge.decision import EpisodeEvent
from edge.recording import EMG_CHANNELS, RecordingError, RecordingUnreadable, check_recording, read_header

log = logging.getLogger("edge")

# The source project's public recording (6 x 5000 samples, unlabelled, in a fixed emotion order).
PUBLIC_EMG_URL = "https://raw.githubusercontent.com/puldavid87/emotion_recognition/main/emg_data.csv"
PUBLIC_EMG_SHA256 = "cdb885c23f14cf1c86731d3edf298b07f09a7f87597791e8f24e06104412cd95"
EXIT_UNAVAILABLE = 69  # sysexits EX_UNAVAILABLE
EXIT_CANTCREAT = 73  # sysexits EX_CANTCREAT


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    run = sub.add_parser("run", help="run the daemon (what systemd starts)")
    run.add_argument("--config", type=Path, help="TOML config file (default: built-in defaults)")
    run.set_defaults(func=_cmd_run)

    replay = sub.add_parser("replay", help="run a recording through the whole pipeline, then exit")
    replay.add_argument("recording", type=Path, help="CSV: sample,EMG1,EMG2,EMG3[,label]")
    replay.add_argument("--config", type=Path, help="TOML config file for everything but the source")
    replay.add_argument("--speed", default="max", help="real-time multiple, or 'max' (default)")
    replay.add_argument("--source-layout", action="store_true", help="the source project's 6x5000 file")
    replay.add_argument("--print-events", action="store_true", help="print each event as JSON to stdout")
    replay.set_defaults(func=_cmd_replay)

    demo = sub.add_parser(
        "demo",
        help="quick start: replay the public EMG recording to an embedded broker and show the events",
    )
    demo.add_argument("--emg-file", type=Path, help="a local recording instead of downloading the public one")
    demo.add_argument("--speed", default="10", help="real-time multiple, or 'max' (default 10)")
    demo.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache" / "emotion-edge")
    demo.set_defaults(func=_cmd_demo)


def _setup_logging(level: str) -> None:
    # Under systemd the journal adds its own timestamps.
    fmt = (
        "%(levelname)s %(name)s: %(message)s"
        if os.environ.get("INVOCATION_ID")
        else ("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    logging.basicConfig(level=level, format=fmt, stream=sys.stderr, force=True)


def _load(path: Path | None, overrides: Mapping[str, str] | None = None) -> Config | None:
    try:
        return load_config(path, env={**os.environ, **(overrides or {})})
    except ConfigError as exc:
        for key, message in exc.errors:
            print(f"emotion-edge: config error: {key}: {message}", file=sys.stderr)
        return None


def _serve(config: Config, config_path: Path | None, print_events: bool = False, **kwargs: Any) -> int:
    from edge.broker import BrokerUnavailable
    from edge.demo_view import print_line
    from edge.model_card import CardError
    from edge.service import Service
    from edge.service.instance_lock import AlreadyRunning

    service: Service | None = None

    def print_event(event: EpisodeEvent, payload: dict[str, Any]) -> None:
        # --print-events: one JSON line per event; once nobody reads stdout (`| head`), stop the replay.
        assert service is not None
        print_line(json.dumps(payload), service.request_stop)

    _setup_logging(config.logging.level)
    try:
        service = Service(config, config_path, on_event=print_event if print_events else None, **kwargs)
        return asyncio.run(service.run())
    except RecordingUnreadable as exc:  # a replay file named by --config, or gone since it was checked
        log.error("%s", exc)
        return os.EX_NOINPUT
    except RecordingError as exc:
        log.error("%s", exc)
        return os.EX_DATAERR
    except CardError as exc:
        log.error("%s", exc)
        return EXIT_CONFIG
    except ConfigError as exc:  # found only once the service loads files the config names
        for key, message in exc.errors:
            log.error("config error: %s: %s", key, message)
        return EXIT_CONFIG
    except BrokerUnavailable as exc:
        log.error("%s", exc)
        return EXIT_UNAVAILABLE
    except AlreadyRunning as exc:
        log.error("%s", exc)
        return os.EX_TEMPFAIL
    except (OSError, sqlite3.Error) as exc:
        if service is not None and service.started:
            # It ran, then failed (while stopping, say): not a start-up problem, and not 73.
            log.error("stopped on an error: %s (outbox: %s)", exc, config.outbox.path)
            return os.EX_SOFTWARE
        # Typically the outbox directory: not writable, or a full disk.
        log.error("cannot start: %s (outbox: %s)", exc, config.outbox.path)
        return EXIT_CANTCREAT


def _cmd_run(args: argparse.Namespace) -> int:
    config = _load(args.config)
    if config is None:
        return EXIT_CONFIG
    return _serve(config, args.config)


def _replay_speed(text: str) -> str | None:
    """``--speed`` as the config takes it: "max" or a real-time multiple > 0; None if it is neither."""
    if text == "max":
        return text
    try:
        speed = float(text)
    except ValueError:
        return None
    return str(speed) if math.isfinite(speed) and speed > 0 else None


def _bad_recording(exc: RecordingError) -> int:
    """The recording named on the command line will not do: missing or unreadable, or not a recording."""
    return fail(str(exc), os.EX_NOINPUT if isinstance(exc, RecordingUnreadable) else os.EX_DATAERR)


def _replay_overrides(recording: Path, speed: str, source_layout: bool) -> dict[str, str]:
    return {
        "EMOTION_EDGE__EMG__SOURCE": "replay",
        "EMOTION_EDGE__EMG__REPLAY__PATH": str(recording),
        "EMOTION_EDGE__EMG__REPLAY__SPEED": speed,
        "EMOTION_EDGE__EMG__REPLAY__SOURCE_LAYOUT": "true" if source_layout else "false",
        "EMOTION_EDGE__EMG__REPLAY__LOOP": "false",
    }


def _state_in(state_dir: str) -> dict[str, str]:
    """State (the outbox) in a throwaway folder: no privileges needed for /var/lib, nothing left behind."""
    return {"EMOTION_EDGE__OUTBOX__PATH": str(Path(state_dir) / "outbox.sqlite3")}


def _bad_speed(text: str) -> int:
    return fail(f"--speed must be a positive real-time multiple or 'max', got {text!r}", os.EX_USAGE)


def _cmd_replay(args: argparse.Namespace) -> int:
    speed = _replay_speed(args.speed)
    if speed is None:
        return _bad_speed(args.speed)
    try:
        # Read once before anything starts, so a bad file is one line rather than a traceback later.
        check_recording(args.recording, source_layout=args.source_layout)
    except RecordingError as exc:
        return _bad_recording(exc)
    with tempfile.TemporaryDirectory(prefix="emotion-edge-") as state_dir:
        overrides = _replay_overrides(args.recording, speed, args.source_layout)
        if args.config is None:
            overrides |= _state_in(state_dir)
        config = _load(args.config, overrides)
        if config is None:
            return EXIT_CONFIG
        return _serve(config, args.config, print_events=args.print_events, exit_when_input_ends=True)


def fetch_public_recording(cache_dir: Path) -> Path:
    """Download the source project's emg_data.csv once and check its sha256."""
    target = cache_dir / "emg_data.csv"
    if target.is_file() and _sha256(target.read_bytes()) == PUBLIC_EMG_SHA256:
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    with urllib.request.urlopen(PUBLIC_EMG_URL, timeout=20) as resp:
        data = resp.read()
    digest = _sha256(data)
    if digest != PUBLIC_EMG_SHA256:
        raise ValueError(f"downloaded file has sha256 {digest}, expected {PUBLIC_EMG_SHA256}")
    target.write_bytes(data)
    return target


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _cmd_demo(args: argparse.Namespace) -> int:
    # Every check before the download: a typo should not cost a fetch first.
    speed = _replay_speed(args.speed)
    if speed is None:
        return _bad_speed(args.speed)
    if args.emg_file is not None:
        recording = args.emg_file
        try:
            # The source's emg_data.csv has a bare EMG1,EMG2,EMG3 header; the project's adds sample and label.
            source_layout = read_header(recording) == list(EMG_CHANNELS)
            check_recording(recording, source_layout=source_layout)
        except RecordingError as exc:
            return _bad_recording(exc)
    else:
        try:
            recording, source_layout = fetch_public_recording(args.cache_dir), True
        except (OSError, ValueError) as exc:
            print(
                f"emotion-edge: could not download the public EMG recording ({exc}).\n"
                f"  Offline? Pass a local copy instead, either the project's labelled file:\n"
                f"      emotion-edge demo --emg-file ../shared/data/emg/emg_train.csv\n"
                f"  or the source's emg_data.csv (sha256 {PUBLIC_EMG_SHA256}) fetched elsewhere from\n"
                f"      {PUBLIC_EMG_URL}\n"
                f"      emotion-edge demo --emg-file /path/to/emg_data.csv",
                file=sys.stderr,
            )
            return EXIT_UNAVAILABLE
    from edge.demo_view import watch_events

    pace = "full speed" if speed == "max" else f"{args.speed}x real time"
    print(f"emotion-edge demo: replaying {recording} at {pace} through the daemon", flush=True)
    with tempfile.TemporaryDirectory(prefix="emotion-edge-") as state_dir:
        overrides = _replay_overrides(recording, speed, source_layout) | _state_in(state_dir)
        overrides.setdefault("EMOTION_EDGE__LOGGING__LEVEL", "WARNING")
        config = _load(None, overrides)
        if config is None:
            return EXIT_CONFIG
        return _serve(config, None, exit_when_input_ends=True, on_started=watch_events)
