"""The ``emotion-edge`` command line."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from edge import __version__
from edge.paths import SHIPPED_EMG_MODEL, SHIPPED_FACE_MODEL, shipped_model

EXIT_DATA_ERROR = 65  # sysexits EX_DATAERR


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from edge.model_card import CardError
    from edge.recording import RecordingError

    try:
        if args.modality == "emg":
            from edge.evaluate import evaluate_emg

            model = Path(args.model) if args.model else shipped_model(SHIPPED_EMG_MODEL)
            report = evaluate_emg(Path(args.data), model, hop=args.hop, source_layout=args.source_layout)
        else:
            from edge.evaluate import evaluate_face

            model = Path(args.model) if args.model else shipped_model(SHIPPED_FACE_MODEL)
            report = evaluate_face(Path(args.data), model, usage=args.usage)
    except (CardError, RecordingError) as exc:
        print(f"emotion-edge: {exc}", file=sys.stderr)
        return EXIT_DATA_ERROR
    if args.json:
        print(json.dumps(report))
    else:
        print(f"accuracy {report['accuracy']:.4f}  macro-F1 {report['macro_f1']:.4f}  n={report['n']}")
        width = max(len(lbl) for lbl in report["labels"])
        for lbl, row in zip(report["labels"], report["confusion"], strict=True):
            print(f"  {lbl:>{width}}  " + " ".join(f"{v:4d}" for v in row))
    return 0


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
    ev.add_argument("--hop", type=int, help="hop in samples (default: the model's window)")
    ev.add_argument("--source-layout", action="store_true", help="EMG file in the source's 6x5000 layout")
    ev.add_argument("--usage", type=int, help="face: keep rows whose 'usage' equals this (1: PublicTest)")
    ev.add_argument("--json", action="store_true", help="print one JSON object")
    ev.set_defaults(func=_cmd_evaluate)

    from edge.config.commands import register as register_config_commands
    from edge.daemon_cli import register as register_daemon_commands
    from edge.models_fetch import register as register_models_commands

    register_daemon_commands(sub)
    register_config_commands(sub)
    register_models_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
