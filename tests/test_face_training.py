"""training.face end to end on a small slice: killed mid-run, resumed exactly, exported full-int8."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from edge.face.classifier import FER2013_LABELS, FaceClassifier
from edge.model_card import load_card
from tests.conftest import REPO, shared_file
from training.face import _start_log, build_model, inference_model, load_fer, lr_at, main

TRAIN_ENV = {
    **os.environ,
    "TF_CPP_MIN_LOG_LEVEL": "3",
    "CUDA_VISIBLE_DEVICES": "",
    # Same inputs, same bits: lets the resumed run be compared with an uninterrupted one.
    "TF_DETERMINISTIC_OPS": "1",
}

EPOCHS = 8


def logged(work: Path, column: str = "epoch") -> list[float]:
    log = work / "log.csv"
    if not log.exists():
        return []
    with log.open() as fh:
        return [float(row[column]) for row in csv.DictReader(fh)]


def logged_epochs(work: Path) -> list[int]:
    return [int(e) for e in logged(work)]


def test_training_resumes_after_a_kill_and_exports_full_int8(tmp_path: Path) -> None:
    data = shared_file("fer2013/fer2013.npz")
    work, out = tmp_path / "work", tmp_path / "model"
    train = [sys.executable, "-m", "training.face", "train", "--data", str(data), "--work", str(work)]
    train += ["--epochs", str(EPOCHS), "--limit", "256", "--width", "4", "--batch", "32", "--xla", "off"]
    env = TRAIN_ENV
    first = subprocess.Popen(train, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while not logged_epochs(work) and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    first.kill()  # SIGKILL: no chance to clean up, like a power cut
    _, stderr = first.communicate(timeout=30)
    before = logged_epochs(work)
    assert before and before[-1] < EPOCHS - 1, f"not killed mid-run: {before} {stderr.decode()[-2000:]}"

    second = subprocess.run(train, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-2000:]
    epochs = logged_epochs(work)
    assert epochs[-1] == EPOCHS - 1
    assert epochs.count(0) == 1 and epochs == sorted(epochs), f"restarted instead of resuming: {epochs}"
    # The schedule continued where it stopped: each epoch's learning rate is the one-cycle value at
    # that epoch's last step (256 images / batch 32 = 8 steps, 3 warm-up epochs, then cosine).
    expected = [float(lr_at((e + 1) * 8, 0.03, 3 * 8, EPOCHS * 8)) for e in range(EPOCHS)]
    np.testing.assert_allclose(logged(work, "lr"), expected, atol=2e-6)

    # ... and took the same path as a run that was never interrupted: weights, optimiser, EMA and
    # dropout RNG all end the same.
    straight = tmp_path / "straight"
    uninterrupted = [str(straight) if arg == str(work) else arg for arg in train]
    once = subprocess.run(uninterrupted, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert once.returncode == 0, once.stderr[-2000:]
    with np.load(work / "state.npz") as resumed, np.load(straight / "state.npz") as reference:
        assert sorted(resumed.files) == sorted(reference.files)
        assert any(k.startswith("r_") for k in resumed.files), "the dropout RNG is checkpointed"
        for key in reference.files:
            np.testing.assert_allclose(resumed[key], reference[key], rtol=1e-5, atol=1e-6, err_msg=key)
    assert logged(work, "train_loss") == logged(straight, "train_loss")

    export = [sys.executable, "-m", "training.face", "export", "--data", str(data), "--work", str(work)]
    export += ["--out", str(out), "--limit", "256"]
    done = subprocess.run(export, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    card = load_card(out / "face.tflite")
    assert card.labels == list(FER2013_LABELS) and card.model_sha256 == summary["sha256"]
    assert card.input_quantization.dtype == "int8" and card.output_quantization.dtype == "int8"
    assert card.metrics["epochs_trained"] == EPOCHS
    assert card.training["export_command"].startswith("python -m training.face export --data ")
    assert "| int8 (`face.tflite`) |" in (out / "REPORT.md").read_text()
    probs = FaceClassifier(out / "face.tflite").predict_proba(np.zeros((2, 48, 48), np.uint8))
    assert probs.shape == (2, 7) and np.allclose(probs.sum(axis=1), 1.0, atol=0.05)


def test_export_with_limit_refuses_to_overwrite_the_shipped_model(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="--out"):
        main(["export", "--data", str(tmp_path / "x.npz"), "--work", str(tmp_path), "--limit", "10"])


def test_a_resumed_run_drops_the_log_rows_it_will_redo(tmp_path: Path) -> None:
    log = tmp_path / "log.csv"
    _start_log(log, 0)
    header = log.read_text()
    rows = [f"{e},0.03,1.0,0.5,0.5,0.5,10,0\n" for e in range(4)]
    log.write_text(header + "".join(rows))
    _start_log(log, 4)  # the state says 4 epochs are done: nothing to drop
    assert log.read_text() == header + "".join(rows)
    _start_log(log, 2)  # killed after logging epochs 2 and 3 but before their checkpoint
    assert log.read_text() == header + "".join(rows[:2])


def test_flip_tta_averages_the_face_and_its_mirror_in_graph(tmp_path: Path) -> None:
    core = build_model(4, 0.4, input_size=None)
    weights = core.get_weights()
    best = tmp_path / "best.npz"
    np.savez(best, **{f"w_{i:03d}": w for i, w in enumerate(weights)}, epoch=0, acc=0.5, mode="centre_crop")
    model, mode = inference_model(best, {"width": 4, "dropout": 0.4, "crop": 44}, flip_tta=True)
    assert mode == "centre_crop+flip"
    faces = np.random.default_rng(0).random((3, 48, 48, 1)).astype(np.float32)
    crops = faces[:, 2:46, 2:46]
    expected = (core.predict(crops, verbose=0) + core.predict(crops[:, :, ::-1], verbose=0)) / 2
    np.testing.assert_allclose(model.predict(faces, verbose=0), expected, rtol=1e-5, atol=1e-6)


def test_no_training_image_is_also_a_public_test_image() -> None:
    d = load_fer(shared_file("fer2013/fer2013.npz"))
    train = {x.tobytes() for x in d["x_train"]}
    assert not any(x.tobytes() in train for x in d["x_val"])
    assert len(d["x_val"]) >= 3580 and len(d["x_train"]) >= 27000
