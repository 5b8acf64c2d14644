"""The ``emotion-edge`` command line."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from edge import __version__
from edge.paths import SHIPPED_EMG_MODEL, SHIPPED_FACE_MODEL, shipped_model

EXIT_DATA_ERROR = os.EX_DATAERR  # a malformed input file (65)


def fail(message: str, code: int) -> int:
    """One line on stderr for a mistake the user can fix; the exit code says which kind (sysexits)."""
    print(f"emotion-edge: {message}", file=sys.stderr)
    return code


def _face_usage(text: str | None) -> int | Literal["all"] | None:
    """``--usage``: a usage value, "all", or None for the file's default; ValueError otherwise."""
    if text is None:
        return None
    return "all" if text == "all" else int(text)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from edge.model_card import CardError
    from edge.recording import RecordingError, RecordingUnreadable

    if args.hop is not None and args.hop <= 0:
        return fail(f"--hop must be a positive number of samples, got {args.hop}", os.EX_USAGE)
    try:
        usage = _face_usage(args.usage)
    except ValueError:
        return fail(f"--usage must be a number (1: PublicTest) or 'all', got {args.usage!r}", os.EX_USAGE)
    data = Path(args.data)
    shipped = SHIPPED_EMG_MODEL if args.modality == "emg" else SHIPPED_FACE_MODEL
    model = Path(args.model) if args.model else shipped_model(shipped)
    try:
        if args.modality == "emg":
            from edge.evaluate import evaluate_emg

            report = evaluate_emg(data, model, hop=args.hop, source_layout=args.source_layout)
        else:
            from edge.evaluate import evaluate_face

            report = evaluate_face(data, model, usage=usage)
    except RecordingUnreadable as exc:
        return fail(str(exc), os.EX_NOINPUT)
    except CardError as exc:
        # A --model path that leads nowhere is a missing input like a missing --data, not a bad model.
        return fail(str(exc), EXIT_DATA_ERROR if model.is_file() else os.EX_NOINPUT)
    except RecordingError as exc:
        return fail(str(exc), EXIT_DATA_ERROR)
    if report["training_data"]:
        # A score on the data the model was fitted on says how well it memorised, not how well it works.
        print(
            f"emotion-edge: warning: the model was trained on these rows ({data} is training data in its "
            "model card), so this score shows how well it fits them, not how it does on new data",
            file=sys.stderr,
        )
    if args.json:
        print(json.dumps(report))
        return 0
    if "usage" in report:
        print(_usage_line(report["usage"], defaulted=usage is None))
    print(f"accuracy {report['accuracy']:.4f}  macro-F1 {report['macro_f1']:.4f}  n={report['n']}")
    width = max(len(lbl) for lbl in report["labels"])
    for lbl, row in zip(report["labels"], report["confusion"], strict=True):
        print(f"  {lbl:>{width}}  " + " ".join(f"{v:4d}" for v in row))
    return 0


def _usage_line(usage: int | str, defaulted: bool) -> str:
    """Which face rows were scored: the default is PublicTest, which a reader should not have to guess."""
    from edge.evaluate import FER2013_USAGE

    if usage == "all":
        return "rows: all"
    named = f"usage {usage} ({FER2013_USAGE[usage]})" if usage in FER2013_USAGE else f"usage {usage}"
    return f"rows: {named}" + (", the default; --usage all scores every row" if defaulted else "")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="emotion-edge", description="On-device emotion recognition to MQTT."
    )
    parser.add_argument("--version", action="version", version=f"emotion-edge {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    ev = sub.add_parser("evaluate", help="score a model on labelled data")
    ev.add_argument("modality", choices=["emg", "face"])
    ev.add_argument("--data", required=True, help="labelled recording CSV (emg) or npz (face)")
    ev.add_argument("--model", help="a .tflite with its .card.json beside it (default: the shipped model)")
    ev.add_argument(
        "--hop",
        type=int,
        help="hop in samples (default: the card's hop, one window per prediction the daemon makes)",
    )
    ev.add_argument("--source-layout", action="store_true", help="EMG file in the source's 6x5000 layout")
    ev.add_argument(
        "--usage",
        help="face: keep rows whose 'usage' array equals this, or 'all' (default: 1, PublicTest)",
    )
    ev.add_argument("--json", action="store_true", help="print one JSON object")
    ev.set_defaults(func=_cmd_evaluate)

    from edge.calibration.command import register as register_calibrate_command
    from edge.config.commands import register as register_config_commands
    from edge.daemon_cli import register as register_daemon_commands
    from edge.models_fetch import register as register_models_commands

    register_daemon_commands(sub)
    register_config_commands(sub)
    register_models_commands(sub)
    register_calibrate_command(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except BrokenPipeError:
        # The reader went away (`emotion-edge ... | head`): not an error worth a traceback.
        from edge.demo_view import silence_stdout

        silence_stdout()
        return 0
    return code


if __name__ == "__main__":
    raise SystemExit(main())
