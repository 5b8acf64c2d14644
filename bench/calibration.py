"""Training time of a calibration session: from the recorded session to an installed model.

    python -m bench.calibration [--runs 7] [--minutes 3] [--csv ../shared/data/emg/emg_train.csv]

A session's recording is built the way a real one is (:func:`edge.calibration.install.write_recording`
on the session's takes): the default 7 labels x 3 interleaved repetitions, with as many seconds per
repetition as ``--minutes`` of recorded EMG at 1 kHz need (3 minutes: 8.6 s each; the default
session keeps 5.5 s of each 6 s repetition, 1.9 minutes). Each label's repetitions are cut from
consecutive stretches of its segment of the source recording (wrapping around when the segment is
shorter); "neutral" is a quiet rest signal. Then, as the daemon does after a session (in a
thread there), each run times:

* ``fit``: :func:`edge.calibration.offline.calibrate_recording`: features, leave-one-repetition-out
  validation with the int8 model of every fold, the final fit, export and load-back;
* ``install``: :meth:`edge.calibration.store.PersonalModelStore.install`: the validation gate,
  the atomic copy into the state directory and the activation.

Wall time (median and p99 over the runs) and the process's CPU time for the same span. Budget:
10 s on this machine for a 3-minute session (issue 11).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from edge.calibration.install import write_recording
from edge.calibration.offline import calibrate_recording
from edge.calibration.plan import build_plan
from edge.calibration.store import PersonalModelStore
from edge.config.calibration import CalibrationConfig

REPO = Path(__file__).resolve().parent.parent
BUDGET_S = 10.0
FS = 1000


def session_recording(source: Path, minutes: float, seed: int = 0) -> tuple[np.ndarray, list[str], list[int]]:
    data = np.loadtxt(source, delimiter=",", skiprows=1, usecols=[1, 2, 3])
    with source.open() as fh:
        fh.readline()
        labels = np.array([line.rstrip("\n").split(",")[4] for line in fh if line.strip()])
    plan = build_plan(CalibrationConfig(seed=seed))
    per_rep = int(minutes * 60 * FS / len(plan))
    rng = np.random.default_rng(seed)
    rest = np.percentile(data, 5, axis=0)
    pos: dict[str, int] = {}
    parts, labs, reps = [], [], []
    for step in plan:
        if step.label == "neutral":
            rows = rest + rng.normal(0, 3, (per_rep, 3))
        else:
            seg = data[labels == step.label]
            start = pos.get(step.label, 0)
            rows = seg[(start + np.arange(per_rep)) % len(seg)]
            pos[step.label] = (start + per_rep) % len(seg)
        parts.append(np.round(rows))
        labs += [step.label] * per_rep
        reps += [step.rep] * per_rep
    return np.concatenate(parts), labs, reps


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--minutes", type=float, default=3.0, help="minutes of recorded EMG in the session")
    ap.add_argument("--csv", type=Path, default=REPO.parent / "shared" / "data" / "emg" / "emg_train.csv")
    args = ap.parse_args(argv)

    samples, labels, reps = session_recording(args.csv, args.minutes)
    walls: dict[str, list[float]] = {"fit": [], "install": [], "total": []}
    cpus: list[float] = []
    accuracy = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for run in range(args.runs):
            state = Path(tmp) / f"state{run}"
            store = PersonalModelStore(state)
            model_id = store.new_id()
            csv = store.recording_path(model_id)
            write_recording(csv, samples, labels, reps)
            out = state / "scratch"
            c0, t0 = time.process_time(), time.perf_counter()
            result = calibrate_recording(csv, out, sample_rate_hz=FS)
            t1 = time.perf_counter()
            installed = store.install(result, model_id)
            t2, c2 = time.perf_counter(), time.process_time()
            assert installed.activated, installed.reasons
            accuracy = result.report["accuracy"]
            walls["fit"].append(t1 - t0)
            walls["install"].append(t2 - t1)
            walls["total"].append(t2 - t0)
            cpus.append(c2 - c0)
    n_rows = len(samples)
    print(
        f"session: {len(set(labels))} labels x 3 repetitions, {n_rows} samples "
        f"({n_rows / FS / 60:.2f} min of EMG at {FS} Hz); {args.runs} runs on {os.cpu_count()} CPUs; "
        f"leave-one-repetition-out accuracy {accuracy:.3f}"
    )
    print(f"{'span':10s} {'median s':>9s} {'p99 s':>7s} {'max s':>7s}")
    for name, values in walls.items():
        p99 = float(np.percentile(values, 99))
        print(f"{name:10s} {statistics.median(values):9.2f} {p99:7.2f} {max(values):7.2f}")
    cpu_p99 = float(np.percentile(cpus, 99))
    print(f"{'cpu total':10s} {statistics.median(cpus):9.2f} {cpu_p99:7.2f} {max(cpus):7.2f}")
    slowest = max(walls["total"])
    verdict = "within" if slowest <= BUDGET_S else "OVER"
    print(f"budget {BUDGET_S:.0f} s for a 3-minute session: slowest run {slowest:.2f} s, {verdict}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
