"""``emotion-edge calibrate``: fit a personal EMG model.

Only argument parsing lives here, so building the CLI's parser stays cheap; the work is in
:mod:`edge.calibration.offline`, imported when the command runs.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

from edge.calibration import DEFAULT_NAME

EXIT_DATA_ERROR = os.EX_DATAERR  # 65: the recording cannot calibrate a model
EXIT_NO_INPUT = os.EX_NOINPUT  # 66: the recording cannot be read
EXIT_UNAVAILABLE = os.EX_UNAVAILABLE  # 69: no TFLite schema/interpreter installed
EXIT_CANTCREAT = os.EX_CANTCREAT  # 73: the output cannot be written
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    cal = sub.add_parser(
        "calibrate",
        help="calibrate a personal EMG model: a guided session, or from a labelled recording",
        description=(
            "Without --from-recording: a guided session in the terminal (prompt, countdown, a level bar "
            "per electrode, progress), run by the daemon over its control socket, or on the configured "
            "serial port when no daemon runs; the new model is activated if its validation passes. Exit 0 "
            "when it is active, 65 when refused or failed, 69 when calibration is not possible now, 75 when "
            "cancelled (Ctrl-C). With --from-recording: train and validate (leave-one-repetition-out) "
            "a personal EMG model from a saved recording, "
            "then write it as an int8 .tflite with its .card.json. The CSV has the columns "
            "sample,EMG1,EMG2,EMG3,label and optionally rep (the repetition index); without rep, each "
            f"contiguous run of one label is one repetition. Exit {EXIT_DATA_ERROR} when a label has "
            f"fewer than two repetitions or the file is malformed, {EXIT_NO_INPUT} when it cannot be read. "
            "With --forget, delete the raw calibration recordings kept in the state directory instead."
        ),
    )
    cal.add_argument(
        "--from-recording",
        type=Path,
        metavar="CSV",
        help="labelled recording: sample,EMG1,EMG2,EMG3,label[,rep]",
    )
    cal.add_argument("--out", type=Path, metavar="DIR", help="folder for the model and card")
    cal.add_argument(
        "--forget",
        action="store_true",
        help="delete the raw calibration recordings kept in the state directory (the models stay)",
    )
    cal.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="the daemon's config file: its state directory, serial port and [calibration] settings",
    )
    cal.add_argument(
        "--name", default=DEFAULT_NAME, help=f"file stem and card name of the model (default: {DEFAULT_NAME})"
    )
    cal.add_argument(
        "--sample-rate", type=float, metavar="HZ", help="sample rate of the recording, stored in the card"
    )
    cal.add_argument("--json", action="store_true", help="print one JSON object")
    cal.set_defaults(func=_cmd_calibrate)


def _fail(message: str, code: int) -> int:
    print(f"emotion-edge: calibrate: {message}", file=sys.stderr)
    return code


def _cmd_session(args: argparse.Namespace) -> int:
    """No recording given: the guided session in the terminal (:mod:`edge.calibration.tui`)."""
    import asyncio

    from edge.calibration.tui import run
    from edge.config import EXIT_CONFIG, ConfigError, load_config

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        for key, message in exc.errors:
            print(f"emotion-edge: config error: {key}: {message}", file=sys.stderr)
        return EXIT_CONFIG
    return asyncio.run(run(config))


def _cmd_calibrate(args: argparse.Namespace) -> int:
    from edge.calibration.offline import calibrate_recording
    from edge.calibration.tflite_writer import TfliteSchemaUnavailable
    from edge.interpreter import NoInterpreterError
    from edge.model_card import CardError
    from edge.recording import RecordingError, RecordingUnreadable

    if args.forget:
        if args.from_recording is not None or args.out is not None:
            return _fail("--forget deletes the kept recordings; it takes no --from-recording or --out", 64)
        from edge.calibration.models_command import forget_recordings_command

        return forget_recordings_command(args)
    if args.from_recording is None and args.out is None:
        return _cmd_session(args)
    if args.from_recording is None or args.out is None:
        return _fail("--from-recording CSV and --out DIR go together", 64)
    if not _NAME.fullmatch(args.name):
        return _fail(f"--name must be a plain file stem (letters, digits, . _ -), got {args.name!r}", 64)
    if args.sample_rate is not None and not args.sample_rate > 0:
        return _fail(f"--sample-rate must be positive, got {args.sample_rate}", 64)

    def log(msg: str) -> None:
        if not args.json:
            print(msg, flush=True)

    try:
        result = calibrate_recording(
            args.from_recording,
            args.out,
            name=args.name,
            sample_rate_hz=args.sample_rate,
            command=" ".join(["emotion-edge", *sys.argv[1:]]),
            log=log,
        )
    except RecordingUnreadable as exc:
        return _fail(str(exc), EXIT_NO_INPUT)
    except RecordingError as exc:
        return _fail(str(exc), EXIT_DATA_ERROR)
    except (TfliteSchemaUnavailable, NoInterpreterError) as exc:
        return _fail(str(exc), EXIT_UNAVAILABLE)
    except CardError as exc:  # the written pair failed to load: a bug, not the user's data
        return _fail(f"the written model does not load: {exc}", os.EX_SOFTWARE)
    except OSError as exc:
        return _fail(f"{args.out}: cannot write the model: {exc.strerror or exc}", EXIT_CANTCREAT)
    report = result.report
    if args.json:
        print(json.dumps(report))
        return 0
    print(
        f"accuracy {report['accuracy']:.4f}  macro-F1 {report['macro_f1']:.4f}  "
        f"(leave-one-repetition-out, int8; float {report['float_accuracy']:.4f})  "
        f"n={report['n_test_windows']}"
    )
    width = max(len(lbl) for lbl in report["labels"])
    for lbl, row in zip(report["labels"], report["confusion"], strict=True):
        reps = len(report["repetitions"][lbl])
        print(f"  {lbl:>{width}}  " + " ".join(f"{v:4d}" for v in row) + f"   ({reps} reps)")
    print(f"wrote {report['model']} and {Path(report['card']).name} in {report['seconds']['total']:.1f} s")
    return 0
