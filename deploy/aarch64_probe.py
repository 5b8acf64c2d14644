"""Helper of deploy/check-aarch64.sh (not part of the package; needs nothing but an installed wheel).

``probe``   run inside a venv holding the emotion-edge wheel: prints JSON with the replay events, the YuNet
            boxes and face-model int8 outputs per photo, and the EMG model's int8 outputs per window.
``compare`` stdlib only: compares probe files with the first one (the x86 reference), prints a table,
            exits 1 on a mismatch.
"""

from __future__ import annotations

import json
import os
import platform
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

BOX_TOL_PX = 2  # YuNet runs in float32: NEON and AVX may round differently
INT8_TOL = 1  # one quantisation step


def _cpuinfo() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError as exc:
        return f"unreadable: {exc}"
    keep = ("CPU part", "Model", "model name", "Hardware")
    return "; ".join(
        sorted({ln.split(":", 1)[1].strip() for ln in lines if ln.split(":")[0].strip() in keep})
    )


def probe_events(data: Path) -> dict[str, object]:
    cli = Path(sys.executable).with_name("emotion-edge")
    env = {**os.environ, "EMOTION_EDGE_EMBEDDED_BROKER": "mosquitto"}
    cmd = [str(cli), "replay", str(data / "emg/emg_train.csv"), "--print-events", "--speed", "max"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
    events = [json.loads(ln) for ln in proc.stdout.splitlines() if ln.startswith("{")]
    keys = ("type", "emotion", "sample", "seq", "confidence", "probs")
    return {
        "rc": proc.returncode,
        "stderr_tail": proc.stderr[-600:],
        "events": [{k: e.get(k) for k in keys} for e in events],
    }


def probe_faces(data: Path) -> dict[str, object]:
    import cv2
    import numpy as np

    from edge.config.face import FaceConfig
    from edge.face.classifier import FaceClassifier as face_classifier
    from edge.face.detect import crop_face, make_detector
    from edge.paths import SHIPPED_FACE_MODEL, shipped_model

    detector = make_detector(FaceConfig(detector_model=data / "models/face_detection_yunet_2023mar.onnx"))
    clf = face_classifier(shipped_model(SHIPPED_FACE_MODEL))

    def int8(gray: np.ndarray) -> list[list[int]]:  # what FaceClassifier.predict_proba dequantises
        x = (np.asarray(gray, dtype=np.float64) - clf.pre.pixel_offset) / clf.pre.pixel_scale
        out: list[list[int]] = clf.model.predict_quantized(x[..., None]).astype(int).tolist()
        return out

    images: dict[str, object] = {}
    for path in sorted(p for p in (data / "faces").iterdir() if p.suffix in (".jpg", ".png")):
        bgr = np.asarray(cv2.imread(str(path), cv2.IMREAD_COLOR), dtype=np.uint8)
        boxes = detector.detect(bgr)
        crops = [crop_face(bgr, b, size=clf.size) for b in boxes]
        # Detection-independent: the whole photo shrunk to the model's input, so the classifier is
        # compared on identical inputs even where the boxes differ by a pixel.
        whole = cv2.resize(
            cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY), (clf.size, clf.size), interpolation=cv2.INTER_AREA
        )
        images[path.name] = {
            "boxes": [[b.x, b.y, b.w, b.h, round(b.score, 4)] for b in boxes],
            "int8": int8(np.stack(crops)) if crops else [],
            "whole_int8": int8(whole[None])[0],
        }
    return {"labels": clf.labels, "images": images}


def probe_emg(data: Path) -> dict[str, object]:
    from edge.classifier import quantize
    from edge.emg.classifier import EmgClassifier
    from edge.paths import SHIPPED_EMG_MODEL, shipped_model
    from edge.recording import labelled_windows, load_recording

    clf = EmgClassifier(shipped_model(SHIPPED_EMG_MODEL))
    windows, _, starts = labelled_windows(
        load_recording(data / "emg/emg_train.csv"), clf.window, clf.window // 2
    )
    features = clf.spec.transform(windows)
    return {
        "starts": starts.tolist(),
        "input_int8": quantize(features, clf.model.card.input_quantization).astype(int).tolist(),
        "int8": clf.model.predict_quantized(features).astype(int).tolist(),
        "output_scale": clf.model.card.output_quantization.scale,
    }


def probe(data: Path, parts: list[str]) -> int:
    """Each part in its own process, so a crash in the runtime (SIGSEGV, SIGILL) is recorded, not fatal."""
    out: dict[str, object] = {"machine": platform.machine(), "python": platform.python_version()}
    out["qemu_cpu"] = os.environ.get("QEMU_CPU", "(default)")
    out["cpuinfo"] = _cpuinfo()
    from importlib.metadata import version

    out["versions"] = {d: version(d) for d in ("ai-edge-litert", "opencv-python-headless", "numpy", "scipy")}
    for part in parts:
        proc = subprocess.run(
            [sys.executable, __file__, "part", str(data), part], capture_output=True, text=True
        )
        if proc.returncode == 0:
            out[part] = json.loads(proc.stdout)
        else:
            out[part] = {"crashed": proc.returncode, "stderr_tail": proc.stderr[-800:]}
            print(f"{part}: exit {proc.returncode}\n{proc.stderr[-2000:]}", file=sys.stderr)
    json.dump(out, sys.stdout)
    print()
    return 0


def _maxdiff(a: Any, b: Any) -> int:
    """Largest |a-b| over nested int lists of the same shape; a shape mismatch counts as 10**6."""
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return 10**6
        return max((_maxdiff(x, y) for x, y in zip(a, b, strict=True)), default=0)
    return abs(int(a) - int(b))


def compare_one(ref: dict, got: dict) -> tuple[dict[str, str], list[str]]:  # type: ignore[type-arg]
    row: dict[str, str] = {}
    bad: list[str] = []
    for part, col in (("events", "events"), ("faces", "faces"), ("emg", "emg win")):
        if isinstance(got.get(part), dict) and "crashed" in got[part]:
            rc = got.pop(part)["crashed"]
            row[col] = f"CRASH({signal.Signals(-rc).name})" if rc < 0 else f"FAILED(rc {rc})"
            bad.append(part)
    if "events" in got:
        e0, e1 = ref["events"]["events"], got["events"]["events"]
        same = [(a["type"], a["emotion"], a["sample"], a["seq"]) for a in e0] == [
            (b["type"], b["emotion"], b["sample"], b["seq"]) for b in e1
        ]
        tol = ref["emg"]["output_scale"] + 1e-4 if "emg" in ref else 0.004
        dp = max(
            (abs(a["probs"][k] - b["probs"][k]) for a, b in zip(e0, e1, strict=False) for k in a["probs"]),
            default=0.0,
        )
        row["events"] = f"{len(e1)} (rc {got['events']['rc']})"
        row["events=ref"] = "yes" if same else "NO"
        row["event dprob"] = f"{dp:.4f}"
        if got["events"]["rc"] != 0 or not same or dp > tol:
            bad.append("events")
    if "faces" in got:
        i0, i1 = ref["faces"]["images"], got["faces"]["images"]
        counts = [len(i1[n]["boxes"]) for n in sorted(i1)]
        same_n = [len(i0[n]["boxes"]) for n in sorted(i0)] == counts and sorted(i0) == sorted(i1)
        dbox = max(
            (_maxdiff([b[:4] for b in i0[n]["boxes"]], [b[:4] for b in i1[n]["boxes"]]) for n in i0),
            default=0,
        )
        dface = max((_maxdiff(i0[n]["int8"], i1[n]["int8"]) for n in i0), default=0) if same_n else 10**6
        dwhole = max(_maxdiff(i0[n]["whole_int8"], i1[n]["whole_int8"]) for n in i0)
        row["faces"] = f"{sum(counts)} ({','.join(map(str, counts))})"
        row["box dpx"], row["face d8"], row["whole d8"] = str(dbox), str(dface), str(dwhole)
        if not same_n or dbox > BOX_TOL_PX or dface > INT8_TOL or dwhole > INT8_TOL:
            bad.append("faces")
    if "emg" in got:
        g, r = got["emg"], ref["emg"]
        row["emg win"] = str(len(g["int8"]))
        row["emg in d8"] = str(_maxdiff(r["input_int8"], g["input_int8"]))
        row["emg d8"] = str(_maxdiff(r["int8"], g["int8"]))
        if int(row["emg d8"]) > INT8_TOL or g["starts"] != r["starts"]:
            bad.append("emg")
    return row, bad


def compare(paths: list[Path]) -> int:
    docs = [(p.stem, json.loads(p.read_text())) for p in paths]
    ref_name, ref = docs[0]
    rows, failed = [], []
    for name, doc in docs:
        row, bad = compare_one(ref, doc)
        v = doc["versions"]
        row = {
            "target": name,
            "machine": doc["machine"],
            "python": doc["python"],
            "QEMU_CPU": doc["qemu_cpu"],
            "litert/cv2/numpy": f"{v['ai-edge-litert']}/{v['opencv-python-headless']}/{v['numpy']}",
            **row,
            "verdict": "ok" if not bad else "MISMATCH " + ",".join(bad),
        }
        rows.append(row)
        if bad:
            failed.append(name)
    cols = list(dict.fromkeys(k for r in rows for k in r))
    width = {c: max(len(c), *(len(r.get(c, "")) for r in rows)) for c in cols}
    print("  ".join(c.ljust(width[c]) for c in cols))
    for r in rows:
        print("  ".join(r.get(c, "-").ljust(width[c]) for c in cols))
    print(
        f"reference: {ref_name}; tolerances: boxes {BOX_TOL_PX} px, int8 {INT8_TOL} step; "
        "d8 = max |int8 difference|, dprob = max |probability difference| over the events"
    )
    return 1 if failed else 0


def main(argv: list[str]) -> int:
    if len(argv) >= 2 and argv[0] == "probe":
        parts = argv[2].split(",") if len(argv) > 2 else ["events", "faces", "emg"]
        return probe(Path(argv[1]), parts)
    if len(argv) == 3 and argv[0] == "part":
        funcs = {"events": probe_events, "faces": probe_faces, "emg": probe_emg}
        json.dump(funcs[argv[2]](Path(argv[1])), sys.stdout)
        return 0
    if len(argv) >= 2 and argv[0] == "compare":
        return compare([Path(a) for a in argv[1:]])
    print(
        "usage: aarch64_probe.py probe DATA_DIR [events,faces,emg] | compare REF.json OTHER.json...",
        file=sys.stderr,
    )
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
