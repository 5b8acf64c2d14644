"""Per-frame face latency: emotion-edge's face pipeline against the `fer` package, same frames, same run.

    OMP_NUM_THREADS=1 python bench/face_frame.py [--face-model PATH] [--repeats 20] [--json PATH]

Frames: 640x480 BGR, one real face each (../shared/data/faces), scaled so the face is about 200 px wide
and cropped around it (grey letterbox where the photo does not cover the frame). They are written to a
temporary .npz that both sides read.

* ours, in this process: ``FacePipeline(make_detector(FaceConfig(...)), FaceClassifier(model, 1),
  policy="largest").process(frame)``, once with YuNet and once with the Haar fallback.
* the peer, in a subprocess of a separate venv (never a project dependency; create it with
  bench/fer_peer/setup.sh): ``FER(mtcnn=False).detect_emotions(frame)``, see bench/fer_peer/fer_worker.py.
* whole process, each side in a fresh process: start -> first result on one frame, and peak RSS.

Everything is single-threaded: OMP_NUM_THREADS=1, cv2.setNumThreads(1), interpreters with 1 thread.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ["OMP_NUM_THREADS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `python bench/face_frame.py` works too

import cv2
import numpy as np
from numpy.typing import NDArray

from bench.stats import print_table, summarize, time_each
from edge.config.face import FaceConfig
from edge.face.classifier import FaceClassifier, FacePipeline
from edge.face.detect import make_detector
from edge.paths import SHIPPED_FACE_MODEL, shipped_model

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared" / "data"
WORKER = REPO / "bench" / "fer_peer" / "fer_worker.py"
SETUP = REPO / "bench" / "fer_peer" / "setup.sh"
DEFAULT_FER_VENV = Path.home() / ".cache" / "emotion-edge" / "bench-venv-fer"
FRAME_W, FRAME_H = 640, 480
FACE_PX = 200
# Face centre (x, y) and width in the original photo's pixels, measured once with YuNet 2023mar on the
# full-resolution photo. Only used to frame the shot; neither side sees these numbers.
PHOTOS = {
    "skimage_astronaut.png": (223, 119, 89),
    "matplotlib_grace_hopper.jpg": (267, 226, 170),
    "facerec_obama.jpg": (489, 254, 231),
    "facerec_biden2.jpg": (631, 461, 439),
}

OURS_ONCE = """
import json, sys
import cv2, numpy as np
cv2.setNumThreads(1)
from pathlib import Path
from edge.config.face import FaceConfig
from edge.face.classifier import FaceClassifier, FacePipeline
from edge.face.detect import make_detector
npz, model, yunet = sys.argv[1:4]
frame = np.load(npz)["frames"][0]
detector = make_detector(FaceConfig(detector_model=Path(yunet)))
pipe = FacePipeline(detector, FaceClassifier(model, num_threads=1))
res = pipe.process(frame)
print(json.dumps({"faces_found": [len(res)]}), flush=True)
"""


def make_frame(photo: NDArray[np.uint8], cx: float, cy: float, face_w: float) -> NDArray[np.uint8]:
    """Scale so the face is FACE_PX wide, then cut a FRAME_W x FRAME_H window centred on it (clamped)."""
    zoom = FACE_PX / face_w
    interp = cv2.INTER_AREA if zoom < 1 else cv2.INTER_LINEAR
    img = cv2.resize(photo, None, fx=zoom, fy=zoom, interpolation=interp)
    h, w = img.shape[:2]

    def origin(centre: float, size: int, frame: int) -> int:
        if size <= frame:
            return (size - frame) // 2  # letterbox: the photo is centred
        return min(max(0, round(centre * zoom - frame / 2)), size - frame)

    ox, oy = origin(cx, w, FRAME_W), origin(cy, h, FRAME_H)
    canvas = np.full((FRAME_H, FRAME_W, 3), 114, np.uint8)
    sx0, sy0 = max(0, ox), max(0, oy)
    sx1, sy1 = min(w, ox + FRAME_W), min(h, oy + FRAME_H)
    canvas[sy0 - oy : sy1 - oy, sx0 - ox : sx1 - ox] = img[sy0:sy1, sx0:sx1]
    return canvas


def build_frames(faces_dir: Path) -> tuple[NDArray[np.uint8], list[str]]:
    frames, names = [], []
    for name, (cx, cy, face_w) in PHOTOS.items():
        photo = cv2.imread(str(faces_dir / name), cv2.IMREAD_COLOR)
        if photo is None:
            raise SystemExit(f"cannot read {faces_dir / name}")
        # IMREAD_COLOR gives 8-bit BGR: asarray only narrows the stubs' MatLike type, it does not copy.
        frames.append(make_frame(np.asarray(photo, dtype=np.uint8), cx, cy, face_w))
        names.append(name)
    return np.stack(frames), names


def bench_ours(
    detector_model: Path | None,
    classifier: FaceClassifier,
    frames: NDArray[np.uint8],
    repeats: int,
    warmup: int,
) -> tuple[list[int], list[int], list[str | None]]:
    pipe = FacePipeline(
        make_detector(FaceConfig(detector_model=detector_model)), classifier, policy="largest"
    )
    items = list(frames)
    for i in range(warmup):
        pipe.process(items[i % len(items)])
    found, top = [], []
    for frame in items:
        res = pipe.process(frame)
        found.append(len(res))
        top.append(pipe.labels[int(np.argmax(res[0].probs))] if res else None)
    return time_each(pipe.process, items, repeats, warmup=0), found, top


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", TF_CPP_MIN_LOG_LEVEL="3", PYTHONWARNINGS="ignore")
    return env


def run_fer(python: Path, npz: Path, repeats: int, warmup: int) -> dict[str, Any] | None:
    cmd = [str(python), str(WORKER), str(npz), "--repeats", str(repeats), "--warmup", str(warmup)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=child_env(), cwd=REPO)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        print(f"fer worker failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}", file=sys.stderr)
        return None
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def probe_process(cmd: list[str]) -> dict[str, float]:
    """Fresh process: seconds from spawn to its first result line, and its peak RSS (wait4's rusage)."""
    with tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, env=child_env(), cwd=REPO, text=True)
        assert proc.stdout is not None
        line = proc.stdout.readline()
        first = time.perf_counter() - t0
        proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0 or not line.startswith("{"):
            err.seek(0)
            raise RuntimeError(f"{cmd[0]} exited {proc.returncode}: {err.read().decode()[-2000:]}")
    # Linux reports ru_maxrss in KiB.
    return {"first_result_s": first, "peak_rss_mib": usage.ru_maxrss / 1024, **json.loads(line)}


def whole_process(cmd: list[str], runs: int) -> dict[str, float]:
    probes = [probe_process(cmd) for _ in range(runs)]
    return {
        "runs": runs,
        "first_result_s_median": statistics.median(p["first_result_s"] for p in probes),
        "first_result_s_min": min(p["first_result_s"] for p in probes),
        "peak_rss_mib_median": statistics.median(p["peak_rss_mib"] for p in probes),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--face-model", default=str(shipped_model(SHIPPED_FACE_MODEL)))
    parser.add_argument("--yunet", default=str(SHARED / "models" / "face_detection_yunet_2023mar.onnx"))
    parser.add_argument("--faces-dir", default=str(SHARED / "faces"))
    parser.add_argument("--repeats", type=int, default=20, help="timed passes over all frames")
    parser.add_argument("--warmup", type=int, default=5, help="untimed calls before timing (frames cycled)")
    parser.add_argument(
        "--fer-venv",
        default=os.environ.get("BENCH_FER_VENV", str(DEFAULT_FER_VENV)),
        help="the bench-only venv with `fer` (default $BENCH_FER_VENV, else %(default)s)",
    )
    parser.add_argument("--startup-runs", type=int, default=3, help="fresh processes per side (0: skip)")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()

    face_model = Path(args.face_model)
    if not face_model.is_file():
        parser.error(
            f"no face model at {face_model}: pass --face-model PATH (a carded int8 face.tflite from "
            "`python -m training.face export`)"
        )
    yunet = Path(args.yunet)
    fer_python = Path(args.fer_venv) / "bin" / "python"

    cv2.setNumThreads(1)
    frames, names = build_frames(Path(args.faces_dir))
    print(f"{len(frames)} frames {FRAME_W}x{FRAME_H} ({', '.join(names)}), face ~{FACE_PX} px wide")
    print(f"{args.repeats} repeats, {args.warmup} warm-up calls, 1 thread everywhere")

    out: dict[str, Any] = {
        "frames": names,
        "repeats": args.repeats,
        "rows": [],
        "faces_found": {},
        "top_emotion": {},
    }
    rows = []
    with tempfile.TemporaryDirectory(prefix="face_frame_") as tmp:
        npz = Path(tmp) / "frames.npz"
        np.savez(npz, frames=frames)

        classifier = FaceClassifier(face_model, num_threads=1)
        detectors: list[tuple[str, Path | None]] = [("Haar", None)]
        if yunet.is_file():
            detectors.insert(0, ("YuNet", yunet))
        else:
            print(f"(no YuNet model at {yunet}: YuNet row skipped)")
        for label, det_model in detectors:
            name = f"emotion-edge {label} + int8 CNN"
            ns, found, top = bench_ours(det_model, classifier, frames, args.repeats, args.warmup)
            rows.append(summarize(name, ns))
            out["faces_found"][name], out["top_emotion"][name] = found, top

        fer_name = None
        if fer_python.is_file():
            fer = run_fer(fer_python, npz, args.repeats, args.warmup)
            if fer is not None:
                fer_name = fer["name"]
                rows.append(summarize(fer_name, fer["ns"]))
                out["faces_found"][fer_name], out["top_emotion"][fer_name] = (
                    fer["faces_found"],
                    fer["top_emotion"],
                )
                out["fer_tensorflow"] = fer.get("tensorflow")
        else:
            print(
                f"\n(no fer peer: {fer_python} not found. Create the bench-only venv with\n"
                f"    bash {SETUP.relative_to(REPO)}\n"
                f" or point --fer-venv / $BENCH_FER_VENV at one. Reporting our rows only.)"
            )

        print()
        print_table(rows)
        out["rows"] = rows
        if fer_name is not None:
            fer_median = rows[-1]["median_us"]
            out["speedup_vs_fer"] = {r["name"]: fer_median / r["median_us"] for r in rows[:-1]}
            print()
            for r in rows[:-1]:
                print(f"speed-up of {r['name']!r} over fer (median): {fer_median / r['median_us']:.1f}x")
        print()
        for name, found in out["faces_found"].items():
            print(f"{name:48s} faces/frame {found}  top emotion {out['top_emotion'][name]}")

        if args.startup_runs > 0 and yunet.is_file():
            print(
                "\nwhole process (fresh process: start -> first result on one frame, peak RSS; "
                f"{args.startup_runs} runs each):"
            )
            ours_cmd = [sys.executable, "-c", OURS_ONCE, str(npz), str(face_model), str(yunet)]
            probes = {"emotion-edge YuNet + int8 CNN": ours_cmd}
            if fer_name is not None:
                probes[fer_name] = [str(fer_python), str(WORKER), str(npz), "--once"]
            out["whole_process"] = {}
            for name, cmd in probes.items():
                wp = whole_process(cmd, args.startup_runs)
                out["whole_process"][name] = wp
                print(
                    f"{name:48s} first result {wp['first_result_s_median']:6.2f} s (median; min "
                    f"{wp['first_result_s_min']:.2f})  peak RSS {wp['peak_rss_mib_median']:6.0f} MiB"
                )

    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
