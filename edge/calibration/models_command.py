"""``emotion-edge models list | activate ID | rollback`` and ``calibrate --forget``: the personal models.

They work on the state directory of the config (``--config``; without it, the built-in default
``/var/lib/emotion-edge``), with or without the daemon. When a daemon runs on that state
directory (it holds the instance lock beside its outbox), it is sent SIGHUP, and its reload swaps
the newly active model in.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge.cli import fail
from edge.config import EXIT_CONFIG, Config, ConfigError, load_config

if TYPE_CHECKING:
    from edge.calibration.store import PersonalModelStore

Action = Callable[["PersonalModelStore", Config], int]

EXIT_UNKNOWN_MODEL = os.EX_DATAERR  # 65: no stored model has that id
EXIT_NO_STATE = os.EX_NOINPUT  # 66: the state directory does not exist
EXIT_NO_PERMISSION = os.EX_NOPERM  # 77: the state directory belongs to the daemon's user
EXIT_CANTCREAT = os.EX_CANTCREAT  # 73: the store cannot be written


def register(models_sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``list``, ``activate`` and ``rollback`` to the ``models`` command's subparsers."""

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--config",
            type=Path,
            metavar="FILE",
            help="the daemon's config file: where its state directory is",
        )
        p.add_argument("--json", action="store_true", help="print one JSON object")

    ls = models_sub.add_parser(
        "list",
        help="list the personal EMG models from calibration",
        description="List the stored personal EMG models, newest first, and which one the daemon runs. "
        f"Exit {EXIT_NO_STATE} when the state directory does not exist, {EXIT_NO_PERMISSION} when it "
        "cannot be read (run as the daemon's user).",
    )
    common(ls)
    ls.set_defaults(func=_cmd_list)

    act = models_sub.add_parser(
        "activate",
        help="run a stored personal EMG model (the running daemon reloads)",
        description="Make a stored personal model the active one, even one that failed validation (the "
        f"reasons are shown). Exit {EXIT_UNKNOWN_MODEL} for an unknown id.",
    )
    act.add_argument("model_id", metavar="ID", help="a model id from `emotion-edge models list`")
    common(act)
    act.set_defaults(func=_cmd_activate)

    back = models_sub.add_parser(
        "rollback",
        help="go back to the previously active EMG model (in the end, the shipped one)",
        description="Activate the model that was active before the current one; with none left, the "
        "shipped generic model runs again.",
    )
    common(back)
    back.set_defaults(func=_cmd_rollback)


def _config(path: Path | None) -> Config | int:
    try:
        return load_config(path)
    except ConfigError as exc:
        for key, message in exc.errors:
            print(f"emotion-edge: config error: {key}: {message}", file=sys.stderr)
        return EXIT_CONFIG


def _with_store(args: argparse.Namespace, command: str, action: Action) -> int:
    """Load the config, check the state directory, run ``action(store, config)``: every user
    mistake as one line and a sysexits code."""
    from edge.calibration.store import PersonalModelStore, StoreError, UnknownModel, state_dir

    config = _config(args.config)
    if isinstance(config, int):
        return config
    state = state_dir(config)
    hint = "" if args.config else " (the default; pass --config with the daemon's config file)"
    if not state.is_dir():
        return fail(f"no state directory {state}{hint}: has the daemon run here?", EXIT_NO_STATE)
    if not os.access(state, os.R_OK | os.X_OK):
        return fail(
            f"cannot read {state}: permission denied (run as the daemon's user, e.g. "
            f"sudo -u emotion-edge emotion-edge {command})",
            EXIT_NO_PERMISSION,
        )
    try:
        return action(PersonalModelStore(state), config)
    except UnknownModel as exc:
        return fail(str(exc), EXIT_UNKNOWN_MODEL)
    except PermissionError as exc:
        return fail(f"cannot change {exc.filename or state}: permission denied", EXIT_NO_PERMISSION)
    except (StoreError, OSError) as exc:
        return fail(f"cannot update the models in {state}: {exc}", EXIT_CANTCREAT)


def _cmd_list(args: argparse.Namespace) -> int:
    def action(store: PersonalModelStore, config: Config) -> int:
        models = store.list_models()
        if args.json:
            print(
                json.dumps(
                    {
                        "state_dir": str(store.state),
                        "active": store.active_id(),
                        "in_use": store.in_use(config),
                        "models": [m.as_json() for m in models],
                    }
                )
            )
            return 0
        if not models:
            print(f"no personal models in {store.models_dir}; EMG runs {store.in_use(config)}")
            return 0
        print(f"{'':2}{'ID':<20} {'ACCURACY':>8}  {'VALIDATION':<10} LABELS")
        for m in models:
            acc = "-" if m.accuracy is None else f"{m.accuracy:.1%}"
            verdict = "passed" if m.passed else "refused"
            print(f"{'*' if m.active else ' '} {m.model_id:<20} {acc:>8}  {verdict:<10} {','.join(m.labels)}")
            for reason in m.reasons:
                print(f"{'':23}- {reason}")
            for warning in m.warnings:
                print(f"{'':23}! {warning}")
        print(f"EMG runs {store.in_use(config)} (* = active)")
        return 0

    return _with_store(args, "models list", action)


def _cmd_activate(args: argparse.Namespace) -> int:
    def action(store: PersonalModelStore, config: Config) -> int:
        store.activate(args.model_id)
        refused = next((m for m in store.list_models() if m.model_id == args.model_id and not m.passed), None)
        return _changed(args, store, config, f"activated {args.model_id}", refused.reasons if refused else [])

    return _with_store(args, f"models activate {args.model_id}", action)


def _cmd_rollback(args: argparse.Namespace) -> int:
    def action(store: PersonalModelStore, config: Config) -> int:
        before = store.active_id()
        target = store.rollback()
        if before is None and target is None:
            message = "nothing to roll back: the shipped generic model is already active"
            print(json.dumps({"message": message, "active": None, "daemon": None}) if args.json else message)
            return 0
        return _changed(args, store, config, f"rolled back to {target or 'the shipped generic model'}", [])

    return _with_store(args, "models rollback", action)


def _changed(
    args: argparse.Namespace, store: PersonalModelStore, config: Config, message: str, refused: list[str]
) -> int:
    """Report a change of the active model and have a running daemon reload."""
    daemon = _reload_daemon(config)
    if args.json:
        print(
            json.dumps(
                {"message": message, "active": store.active_id(), "daemon": daemon, "reasons": refused}
            )
        )
        return 0
    print(message)
    for reason in refused:
        print(f"  note: it failed validation: {reason}")
    if config.models.emg is not None:
        print(f"  note: [models] emg is set in the config, so the daemon runs {config.models.emg}")
    print(f"  {daemon['message']}")
    return 0


def _reload_daemon(config: Config) -> dict[str, Any]:
    from edge.service.instance_lock import running_daemon

    pid = running_daemon(config.outbox.path)
    if pid is None:
        return {
            "pid": None,
            "reloaded": False,
            "message": "no daemon is running: it is used from the next start",
        }
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        return {
            "pid": pid,
            "reloaded": False,
            "message": "the daemon has just stopped: used from the next start",
        }
    except PermissionError:
        return {
            "pid": pid,
            "reloaded": False,
            "message": f"the daemon (PID {pid}) runs as another user: reload it with "
            "`sudo systemctl reload emotion-edge`",
        }
    return {"pid": pid, "reloaded": True, "message": f"the running daemon (PID {pid}) is reloading"}


def forget_recordings_command(args: argparse.Namespace) -> int:
    """``calibrate --forget``: delete the kept raw calibration recordings (the models stay)."""

    def action(store: PersonalModelStore, config: Config) -> int:
        deleted = store.forget_recordings()
        if args.json:
            print(json.dumps({"deleted": [str(p) for p in deleted]}))
        elif deleted:
            print(f"deleted {len(deleted)} calibration recording(s) from {store.recordings_dir}:")
            for path in deleted:
                print(f"  {path.name}")
        else:
            print(f"no calibration recordings in {store.recordings_dir}: nothing to delete")
        return 0

    return _with_store(args, "calibrate --forget", action)
