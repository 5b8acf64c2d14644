"""training.face end to end on a small slice: killed mid-run, resumed, exported to a full-int8 model."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from edge.face.classifier import FER2013_LABELS, FaceClassifier
from edge.model_card import load_card
from tests.conftest import REPO, shared_file
from training.face import lr_at

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
    train += ["--epochs", str(EPOCHS), "--limit", "256", "--width", "4", "--batch", "32"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
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

    export = [sys.executable, "-m", "training.face", "export", "--data", str(data), "--work", str(work)]
    export += ["--out", str(out), "--limit", "256"]
    done = subprocess.run(export, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    card = load_card(out / "face.tflite")
    assert card.labels == list(FER2013_LABELS) and card.model_sha256 == summary["sha256"]
    assert card.input_quantization.dtype == "int8" and card.output_quantization.dtype == "int8"
    assert card.metrics["epochs_trained"] == len(epochs)
    assert "| int8 (`face.tflite`) |" in (out / "REPORT.md").read_text()
    probs = FaceClassifier(out / "face.tflite").predict_proba(np.zeros((2, 48, 48), np.uint8))
    assert probs.shape == (2, 7) and np.allclose(probs.sum(axis=1), 1.0, atol=0.05)
