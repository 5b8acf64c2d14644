"""Does personal calibration pay? Generic (other people's data) vs calibrated (own data) accuracy.

    python -m training.cross_subject \\
        --data ../shared/data/emg_extra/kolodzima2024_posed_8ch_features/all_subjects.csv \\
        --out training/CROSS_SUBJECT.md

Data: Kołodziej et al. 2024 (see that folder's PROVENANCE.md): 16 subjects x 7 posed classes
x 10 quarter-second segments, average power per channel. No raw signal, so the EMG pipeline's TD
features cannot be computed; the study takes the three channels closest to our electrode sites
(CH1 above the eye, CH7 cheek, CH8 jaw) and their log power. The classifier, its normalisation and
the validation loop are the calibration's own (:mod:`edge.calibration.fit`), run on these features.

Protocols (normalisation is always fitted on the training rows of a fold, as in calibration):

- **generic, leave-one-subject-out**: train on 15 subjects, test on the 16th: a model shipped to a
  new user.
- **generic + the user's own z-scoring**: as above, but every subject's features are first
  standardised with that subject's own mean and deviation (all 70 of its rows, labels unused): the
  best a label-free per-user adjustment can do here, and an optimistic one (it sees the test rows).
- **calibrated, halves**: within one subject, train on segments 1-5 of every class and test on 6-10,
  then the reverse; predictions pooled. Segments play the part of repetitions: held-out ones are
  never seen in training.
- **calibrated, leave-one-segment-pair-out**: within one subject, 5 folds, each holding out two
  consecutive segments of every class (8 training segments per class).
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge.calibration.fit import IntArray, Standardisation, leave_one_group_out
from edge.emg.dsp import FloatArray
from edge.metrics import macro_f1
from edge.model_card import sha256_file

DEFAULT_DATA = (
    Path(__file__).resolve().parents[2]
    / "shared/data/emg_extra/kolodzima2024_posed_8ch_features/all_subjects.csv"
)
# Our three sites: corrugator (above the eyebrow), zygomaticus (cheek), depressor/masseter (jaw).
CHANNELS: tuple[str, ...] = ("ch1_above_eye", "ch7_cheek", "ch8_jaw")


@dataclass(frozen=True)
class Dataset:
    x: FloatArray  # log power, (n, len(CHANNELS))
    y: IntArray
    subject: IntArray
    segment: IntArray  # 0..9 within (subject, class), in file order
    labels: list[str]


def load(path: Path, channels: Sequence[str] = CHANNELS) -> Dataset:
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        raise SystemExit(f"{path}: no rows")
    missing = [c for c in (*channels, "subject", "label", "label_name") if c not in rows[0]]
    if missing:
        raise SystemExit(f"{path}: missing column(s) {missing}")
    codes = sorted({int(r["label"]) for r in rows})
    names = {int(r["label"]): r["label_name"] for r in rows}
    labels = [names[c] for c in codes]
    power = np.array([[float(r[c]) for c in channels] for r in rows])
    if (power <= 0).any():
        raise SystemExit(f"{path}: non-positive power; log power needs positive values")
    y = np.array([codes.index(int(r["label"])) for r in rows], dtype=np.int64)
    subject = np.array([int(r["subject"]) for r in rows], dtype=np.int64)
    segment = np.zeros(len(rows), dtype=np.int64)
    seen: dict[tuple[int, int], int] = {}
    for i, key in enumerate(zip(subject.tolist(), y.tolist(), strict=True)):
        segment[i] = seen.get(key, 0)
        seen[key] = segment[i] + 1
    return Dataset(np.log(power), y, subject, segment, labels)


@dataclass(frozen=True)
class StudyResult:
    subjects: list[int]
    per_subject: dict[str, list[float]]  # protocol -> accuracy per subject, in `subjects` order
    pooled: dict[str, dict[str, float]]  # protocol -> pooled accuracy and macro-F1


PROTOCOLS: dict[str, str] = {
    "generic": "generic, leave-one-subject-out",
    "generic_z": "generic + own z-scoring (label-free)",
    "halves": "calibrated, halves",
    "pairs": "calibrated, leave-one-segment-pair-out",
}


def per_subject_zscore(x: FloatArray, subject: IntArray) -> FloatArray:
    out = np.empty_like(x)
    for s in np.unique(subject):
        rows = subject == s
        out[rows] = Standardisation.fit(x[rows]).apply(x[rows])
    return out


def run_study(ds: Dataset) -> StudyResult:
    subjects = sorted(int(s) for s in np.unique(ds.subject))
    per_subject: dict[str, list[float]] = {name: [] for name in PROTOCOLS}
    pooled: dict[str, dict[str, float]] = {}

    for name, x in (("generic", ds.x), ("generic_z", per_subject_zscore(ds.x, ds.subject))):
        report = leave_one_group_out(x, ds.y, ds.subject, ds.labels)["float"]
        by_subject = {int(f["group"]): f["accuracy"] for f in report["folds"]}
        per_subject[name] = [by_subject[s] for s in subjects]
        pooled[name] = {"accuracy": report["accuracy"], "macro_f1": report["macro_f1"]}

    # Segments held out together: blocks of 5 (halves) or of 2 (pairs).
    for name, block in (("halves", 5), ("pairs", 2)):
        pooled_cm = np.zeros((len(ds.labels), len(ds.labels)), dtype=np.int64)
        for s in subjects:
            rows = ds.subject == s
            groups = ds.segment[rows] // block
            report = leave_one_group_out(ds.x[rows], ds.y[rows], groups, ds.labels)["float"]
            per_subject[name].append(report["accuracy"])
            pooled_cm += np.array(report["confusion"], dtype=np.int64)
        pooled[name] = {
            "accuracy": float(np.trace(pooled_cm) / pooled_cm.sum()),
            "macro_f1": macro_f1(pooled_cm),
        }
    return StudyResult(subjects, per_subject, pooled)


def render(result: StudyResult, ds: Dataset, data: Path, command: str) -> str:
    names = list(PROTOCOLS)
    acc = {n: np.array(result.per_subject[n]) for n in names}
    gain = acc["halves"] - acc["generic"]
    lines = [
        "# Cross-subject study: generic vs personally calibrated EMG models",
        "",
        f"Generated by `{command}`. Do not edit by hand.",
        "",
        f"**Data.** `{data.name}` (sha256 `{sha256_file(data)}`): Kołodziej et al. 2024, "
        f"{len(result.subjects)} subjects x {len(ds.labels)} posed classes ({', '.join(ds.labels)}) "
        f"x {int(ds.segment.max()) + 1} quarter-second segments; features: log average power of "
        f"{', '.join(CHANNELS)} (the closest sites to our corrugator, zygomaticus and depressor "
        "electrodes). Chance is "
        f"{100 / len(ds.labels):.1f}%.",
        "",
        "**Model.** `edge.calibration.fit`: standardisation fitted on each fold's training rows, then "
        "class-balanced L2 softmax regression (C = 1), the code `emotion-edge calibrate` runs.",
        "",
        "**Protocols.**",
        "",
        "- *generic*: leave-one-subject-out (train on the other 15 subjects).",
        "- *generic + own z-scoring*: the same, after standardising each subject's features with its own "
        "mean and deviation over all its rows (labels unused; optimistic, since it sees the test rows).",
        "- *calibrated, halves*: within one subject, train on segments 1-5 of each class, test on 6-10, "
        "and the reverse (5 training rows per class).",
        "- *calibrated, pairs*: within one subject, hold out two consecutive segments of each class at a "
        "time, 5 folds (8 training rows per class).",
        "",
        "Per-subject accuracy (%):",
        "",
        "| subject | " + " | ".join(PROTOCOLS[n] for n in names) + " | calibrated (halves) - generic |",
        "|---|" + "---|" * (len(names) + 1),
    ]
    for i, s in enumerate(result.subjects):
        cells = [f"{100 * acc[n][i]:.1f}" for n in names]
        lines.append(f"| S{s:02d} | " + " | ".join(cells) + f" | {100 * gain[i]:+.1f} |")
    lines.append(
        "| **mean ± sd** | "
        + " | ".join(f"**{100 * acc[n].mean():.1f}** ± {100 * acc[n].std():.1f}" for n in names)
        + f" | **{100 * gain.mean():+.1f}** ± {100 * gain.std():.1f} |"
    )
    lines.append(
        "| pooled macro-F1 | "
        + " | ".join(f"{100 * result.pooled[n]['macro_f1']:.1f}" for n in names)
        + " | |"
    )
    better = int((gain > 0).sum())
    gap = acc["pairs"].mean() - acc["generic"].mean()
    recovered = (acc["generic_z"].mean() - acc["generic"].mean()) / gap if gap > 0 else float("nan")
    lines += [
        "",
        "## Reading",
        "",
        f"- A generic model scores {100 * acc['generic'].mean():.1f}% on a new person; the same classifier "
        f"fitted on half of that person's own segments scores {100 * acc['halves'].mean():.1f}% on the other "
        f"half, and {100 * acc['pairs'].mean():.1f}% with 8 training segments per class. "
        f"Calibration (halves) beats the generic model for {better} of {len(result.subjects)} subjects.",
        f"- Standardising each person's features without labels gives {100 * acc['generic_z'].mean():.1f}%, "
        f"{100 * recovered:.0f}% of the way from generic to calibrated (pairs): a per-person amplitude scale "
        "explains part of the difference between people; the rest is in how each person's expressions "
        "differ, which only labelled data of that person captures.",
        "- The 10 segments of a class come from the same subject and session; the data set does not say "
        "whether they are consecutive slices of one held expression or separate repetitions. If they are "
        "slices, held-out segments are close neighbours of training ones and the calibrated numbers are "
        "optimistic for a real session with separate repetitions; the halves split, which holds out a "
        "whole block of 5, is the more conservative of the two.",
        "- Features are average power only (no raw signal in this data set), so these numbers say how much "
        "calibration is worth with this feature set, not what the TD-feature EMG model reaches.",
        "",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.cross_subject",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="all_subjects.csv")
    parser.add_argument("--out", type=Path, help="write the Markdown report here (default: print it)")
    args = parser.parse_args(argv)
    if not args.data.is_file():
        print(f"{args.data}: not found", file=sys.stderr)
        return 66
    ds = load(args.data)
    result = run_study(ds)
    command = "python -m training.cross_subject" + (f" --out {args.out}" if args.out else "")
    text = render(result, ds, args.data, command)
    if args.out:
        args.out.write_text(text)
        print(f"wrote {args.out}")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
