"""The `fer` side of bench/face_frame.py: run ONLY with the bench venv's python (bench/fer_peer/setup.sh).

    $BENCH_FER_VENV/bin/python bench/fer_peer/fer_worker.py frames.npz [--repeats 20] [--warmup 5]
    $BENCH_FER_VENV/bin/python bench/fer_peer/fer_worker.py frames.npz --once

Reads ``frames`` (N x H x W x 3 uint8 BGR) from the .npz, runs ``FER(mtcnn=False).detect_emotions(frame)``
on each, and prints one JSON line on stdout. Everything is single-threaded: OMP, TensorFlow's intra/inter-op
pools, OpenCV (fer's Haar cascade) and the TFLite interpreter fer builds for its default quantized model
(``tf.lite.Interpreter`` is created by fer without ``num_threads``, so the worker makes 1 the default).

``--once`` is the whole-process probe: import, construct, classify the first frame, print, exit.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from typing import Any

os.environ["OMP_NUM_THREADS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
warnings.filterwarnings("ignore")  # tf.lite.Interpreter's deprecation banner

import cv2  # noqa: E402  (bench venv only)
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402  (bench venv only)

tf.config.threading.set_intra_op_parallelism_threads(1)
tf.config.threading.set_inter_op_parallelism_threads(1)
cv2.setNumThreads(1)

_Interpreter: type[Any] = tf.lite.Interpreter


# tensorflow is untyped here (ignore_missing_imports), so its Interpreter is Any to mypy.
class _OneThreadInterpreter(_Interpreter):  # type: ignore[misc]
    def __init__(self, *args: object, **kwargs: object) -> None:
        if kwargs.get("num_threads") is None:
            kwargs["num_threads"] = 1
        super().__init__(*args, **kwargs)


tf.lite.Interpreter = _OneThreadInterpreter

# fer/__init__.py does not re-export FER in 25.x, and importing the submodule keeps fer.classes (pandas,
# tqdm, moviepy: video only) out of the process.
from fer import __version__ as FER_VERSION  # noqa: E402  (bench venv only)
from fer.fer import FER  # noqa: E402  (bench venv only)


def summarize_result(faces: list[dict[str, Any]]) -> tuple[int, str | None]:
    """Faces found, and the top emotion of the largest face (None when no face)."""
    if not faces:
        return 0, None
    largest = max(faces, key=lambda f: int(f["box"][2]) * int(f["box"][3]))
    emotions = largest["emotions"]
    return len(faces), max(emotions, key=emotions.get)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("npz")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--once", action="store_true", help="one frame, for start-up time and peak RSS")
    args = parser.parse_args()

    frames = np.load(args.npz)["frames"]
    name = f"fer {FER_VERSION} FER(mtcnn=False)"
    detector = FER(mtcnn=False)

    if args.once:
        found, top = summarize_result(detector.detect_emotions(frames[0]))
        print(json.dumps({"name": name, "faces_found": [found], "top_emotion": [top]}), flush=True)
        return

    for i in range(args.warmup):
        detector.detect_emotions(frames[i % len(frames)])
    faces_found, top_emotion = [], []
    for frame in frames:
        found, top = summarize_result(detector.detect_emotions(frame))
        faces_found.append(found)
        top_emotion.append(top)
    ns = []
    for _ in range(args.repeats):
        for frame in frames:
            t0 = time.perf_counter_ns()
            detector.detect_emotions(frame)
            ns.append(time.perf_counter_ns() - t0)
    out = {
        "name": name,
        "ns": ns,
        "faces_found": faces_found,
        "top_emotion": top_emotion,
        "tensorflow": tf.__version__,
        "python": sys.version.split()[0],
    }
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
