"""The shipped EMG model, its card, the runtime loader and the export pipeline."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edge import interpreter
from edge.emg.classifier import EmgClassifier
from edge.model_card import CardError, card_path_for, load_card
from edge.recording import labelled_windows, load_recording
from tests.conftest import REPO, SHIPPED_EMG


def _copy_model(tmp_path: Path) -> Path:
    dst = tmp_path / "emg.tflite"
    shutil.copy(SHIPPED_EMG, dst)
    shutil.copy(card_path_for(SHIPPED_EMG), card_path_for(dst))
    return dst


def test_shipped_card_describes_the_model() -> None:
    card = load_card(SHIPPED_EMG)
    assert card.labels == ["happy", "angry", "surprise", "fear", "sad", "disgust"]
    assert card.channels == ["corrugator", "zygomaticus", "depressor"]
    # A prediction every 100 samples; the look-back is the forward protocol's choice (100-300).
    assert card.hop == 100 and card.window in (100, 200, 300) and card.sample_rate_hz is None
    assert card.input_quantization.dtype == "int8" and card.output_quantization.dtype == "int8"
    assert card.training_data[0].sha256 == "1913bf8fa33d498597af889dc1766ad54a43c8f38ccafc18fbf5f4ad8f139f9a"
    metrics = card.metrics
    assert "forward" in metrics["protocol"]
    int8 = metrics["float_vs_int8"]
    assert abs(int8["float_accuracy"] - int8["int8_accuracy"]) <= 0.01
    baselines = [m for m in metrics["all_models"].values() if m["role"] == "source baseline"]
    assert int8["int8_accuracy"] > max(b["accuracy_mean"] for b in baselines)


def test_shipped_look_back_holds_up_as_each_segment_drifts(emg_csv: Path) -> None:
    """The shape of the independent check, inside our own data: train on the first 3,000 samples
    of each segment and predict every 100 samples over its last 1,000 (sad drifts towards disgust).
    The shipped look-back must stay >= 95% there, and beat the 100-sample window it replaced."""
    from sklearn.linear_model import LogisticRegression

    from training.emg import ForwardProtocol, _td_spec, forward_splits

    card = load_card(SHIPPED_EMG)
    recording = load_recording(emg_csv)
    proto = ForwardProtocol(n_folds=1, test_windows=10, gap_windows=0)
    accuracy = {}
    for window in (100, card.window):
        (split,) = forward_splits(recording, card.labels, proto, window)
        spec = _td_spec(proto, window=window).fitted(split.x_train)
        model = LogisticRegression(C=1.0, max_iter=5000).fit(spec.transform(split.x_train), split.y_train)
        accuracy[window] = float((model.predict(spec.transform(split.x_test)) == split.y_test).mean())
    assert accuracy[card.window] >= 0.95, accuracy
    assert accuracy[card.window] > accuracy[100], accuracy


def test_corrupt_model_is_refused(tmp_path: Path) -> None:
    model = _copy_model(tmp_path)
    data = bytearray(model.read_bytes())
    data[-1] ^= 0xFF
    model.write_bytes(bytes(data))
    with pytest.raises(CardError, match="sha256"):
        EmgClassifier(model)


def test_missing_or_mismatched_card_is_refused(tmp_path: Path) -> None:
    model = _copy_model(tmp_path)
    card = json.loads(card_path_for(model).read_text())
    card["model_file"] = "other.tflite"
    card_path_for(model).write_text(json.dumps(card))
    with pytest.raises(CardError, match="describes"):
        EmgClassifier(model)
    card_path_for(model).unlink()
    with pytest.raises(CardError, match="card not found"):
        EmgClassifier(model)


def test_card_with_wrong_quantisation_is_refused(tmp_path: Path) -> None:
    model = _copy_model(tmp_path)
    card = json.loads(card_path_for(model).read_text())
    card["input_quantization"]["zero_point"] += 1
    card_path_for(model).write_text(json.dumps(card))
    with pytest.raises(CardError, match="quantisation"):
        EmgClassifier(model)


def test_loader_prefers_litert_then_falls_back(monkeypatch: pytest.MonkeyPatch) -> None:
    _, module = interpreter.interpreter_class()
    assert module == "ai_edge_litert.interpreter"
    # A None entry in sys.modules makes the import fail, as on a machine without the package.
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)
    monkeypatch.setitem(sys.modules, "tflite_runtime.interpreter", None)
    _, module = interpreter.interpreter_class()
    assert module == "tensorflow.lite"
    monkeypatch.setitem(sys.modules, "tensorflow.lite", None)
    with pytest.raises(interpreter.NoInterpreterError, match="ai-edge-litert"):
        interpreter.interpreter_class()


def test_runtime_equals_training_side_int8(emg_csv: Path) -> None:
    """LiteRT in the daemon and TensorFlow's interpreter in training give identical int8 outputs."""
    from training.export import tf_int8_predict

    clf = EmgClassifier(SHIPPED_EMG)
    windows, _, _ = labelled_windows(load_recording(emg_csv), clf.window, 50)
    runtime_q = clf.model.predict_quantized(clf.spec.transform(windows))
    training_q = tf_int8_predict(SHIPPED_EMG.read_bytes(), clf.spec.transform(windows))
    assert runtime_q.dtype == np.int8
    np.testing.assert_array_equal(runtime_q, training_q)
    probs = clf.predict_proba(windows[:5])
    assert probs.shape == (5, 6)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=0.03)


def test_training_pipeline_exports_a_loadable_carded_model(emg_csv: Path, tmp_path: Path) -> None:
    out = tmp_path / "emg"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    subprocess.run(
        [
            sys.executable,
            "-m",
            "training.emg",
            "train",
            "--data",
            str(emg_csv),
            "--out",
            str(out),
            "--c-array",
            "--quick",
        ],
        cwd=REPO,
        check=True,
        env=env,
        capture_output=True,
        timeout=600,
    )
    for name in [
        "emg.tflite",
        "emg.card.json",
        "REPORT.md",
        "confusion.png",
        "emg_model_data.cc",
        "emg_model_data.h",
    ]:
        assert (out / name).is_file(), name
    clf = EmgClassifier(out / "emg.tflite")
    card = clf.model.card
    int8 = card.metrics["float_vs_int8"]
    assert abs(int8["float_accuracy"] - int8["int8_accuracy"]) <= 0.01
    assert card.metrics["forward_cv"]["accuracy_mean"] >= 0.9
    cc = (out / "emg_model_data.cc").read_text()
    assert f"emg_model_data_len = {(out / 'emg.tflite').stat().st_size};" in cc
    # Same seed, same data: the export is reproducible byte for byte.
    assert (out / "emg.tflite").read_bytes() == SHIPPED_EMG.read_bytes()


def test_source_layout_reader(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    path = tmp_path / "emg_data.csv"
    rows = rng.integers(100, 1000, size=(30000, 3))
    path.write_text("EMG1,EMG2,EMG3\n" + "\n".join(",".join(map(str, r)) for r in rows) + "\n")
    rec = load_recording(path, source_layout=True)
    assert rec.labels is not None
    assert rec.labels[0] == "happy" and rec.labels[5000] == "angry" and rec.labels[-1] == "disgust"
    windows, labels, _ = labelled_windows(rec, 100, 100)
    assert len(windows) == 300 and list(labels).count("fear") == 50
