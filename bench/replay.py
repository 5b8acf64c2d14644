"""Replay memory and loader speed: the streaming reader against the row-by-row one it replaced.

    python -m bench.replay [--repeats 5] [--baseline-rev a1807a0]

* loader: CPU time to parse the recording (median and p99 of --repeats runs), this tree's
  ``load_recording`` (numpy's C reader, in blocks) against the csv-module version from git
  revision --baseline-rev, on the same file in the same run;
* replay: peak RSS (VmHWM) of ``emotion-edge replay --speed max`` to a real mosquitto for
  recordings of 24k, 240k and 10^6 samples (the shared recording tiled, sample numbers kept
  continuous), for both trees. The baseline tree is the whole checkout at that revision.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np

from edge.recording import load_recording
from tests.conftest import REPO, SHARED_DATA
from tests.harness import Mosquitto, daemon_config, replay_emg

LENGTHS = (24_000, 240_000, 1_000_000)


def tiled_recording(source: Path, rows: int, out: Path) -> Path:
    rec = load_recording(source)
    assert rec.labels is not None
    reps = -(-rows // len(rec.signal))
    signal = np.tile(rec.signal, (reps, 1))[:rows]
    labels = np.tile(rec.labels, reps)[:rows]
    with out.open("w") as fh:
        fh.write("sample,EMG1,EMG2,EMG3,label\n")
        for i, (row, label) in enumerate(zip(signal, labels, strict=True)):
            fh.write(f"{i},{row[0]:.1f},{row[1]:.1f},{row[2]:.1f},{label}\n")
    return out


def baseline_tree(rev: str, dst: Path) -> Path:
    dst.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", rev], cwd=REPO, capture_output=True, check=True).stdout
    subprocess.run(["tar", "x", "-C", str(dst)], input=archive, check=True)
    return dst


def baseline_loader(tree: Path) -> types.ModuleType:
    module = types.ModuleType("baseline_recording")
    sys.modules[module.__name__] = module  # dataclasses look their module up
    exec(compile((tree / "edge" / "recording.py").read_text(), "baseline_recording", "exec"), module.__dict__)
    return module


def cpu_seconds(fn: object, path: Path, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t0 = time.process_time()
        fn(path)  # type: ignore[operator]
        out.append(time.process_time() - t0)
    return out


def replay_peak_rss_mb(tree: Path, recording: Path, work: Path, port: int) -> tuple[float, float]:
    """Peak RSS of the replay process (MB) and its wall time (s)."""
    config = daemon_config(work, port, emg=replay_emg(recording))
    # VmHWM, not ru_maxrss: the kernel carries ru_maxrss over from the forking parent.
    script = (
        "import re, sys; from edge.cli import main; code = main(sys.argv[1:]); "
        "hwm = re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1); "
        "print('VmHWM_kB', hwm, file=sys.stderr); raise SystemExit(code)"
    )
    t0 = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", script, "replay", str(recording), "--config", str(config)],
        cwd=tree,
        env={"PYTHONPATH": str(tree), "TF_CPP_MIN_LOG_LEVEL": "3", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=1800,
    )
    wall = time.monotonic() - t0
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    kb = int(done.stderr.rsplit("VmHWM_kB", 1)[1].split()[0])
    return kb / 1024, wall


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.replay", description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--baseline-rev", default="a1807a0", help="the tree before the streaming reader")
    args = parser.parse_args()
    source = SHARED_DATA / "emg" / "emg_train.csv"
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        old_tree = baseline_tree(args.baseline_rev, (work / "baseline").resolve())
        old = baseline_loader(old_tree)
        files = {n: tiled_recording(source, n, work / f"rec{n}.csv") for n in LENGTHS}

        print(f"loader CPU seconds (median / p99 over {args.repeats} runs)")
        for n, path in files.items():
            new_t = cpu_seconds(load_recording, path, args.repeats)
            old_t = cpu_seconds(old.load_recording, path, args.repeats)
            new_m, old_m = float(np.median(new_t)), float(np.median(old_t))
            print(
                f"  {n:>9,d} samples: numpy blocks {new_m:7.3f} / {np.percentile(new_t, 99):7.3f} s   "
                f"csv rows {old_m:7.3f} / {np.percentile(old_t, 99):7.3f} s   -> {old_m / new_m:4.1f}x faster"
            )

        broker = Mosquitto(work / "broker").start()
        try:
            print("replay --speed max: peak RSS (MB), wall (s)")
            for n, path in files.items():
                (work / f"new{n}").mkdir()
                (work / f"old{n}").mkdir()
                new_rss, new_wall = replay_peak_rss_mb(REPO, path, work / f"new{n}", broker.port)
                old_rss, old_wall = replay_peak_rss_mb(old_tree, path, work / f"old{n}", broker.port)
                print(
                    f"  {n:>9,d} samples: streaming {new_rss:6.1f} MB {new_wall:6.1f} s   "
                    f"baseline {old_rss:6.1f} MB {old_wall:6.1f} s"
                )
        finally:
            broker.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
