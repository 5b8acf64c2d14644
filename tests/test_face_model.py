"""The shipped face model, its card, the runtime, and `emotion-edge evaluate face`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edge.face.classifier import FER2013_LABELS, FaceClassifier
from edge.model_card import load_card
from tests.conftest import REPO, shared_file
from tests.test_cli_evaluate import run_cli

SHIPPED_FACE = REPO / "models" / "face" / "face.tflite"


@pytest.fixture(scope="module")
def public_test() -> tuple[np.ndarray, np.ndarray]:
    data = np.load(shared_file("fer2013/fer2013.npz"))
    keep = data["usage"] == 1
    return data["pixels"][keep], data["labels"][keep]


def test_shipped_face_card() -> None:
    card = load_card(SHIPPED_FACE)
    assert card.modality == "face"
    assert card.labels == list(FER2013_LABELS)
    assert card.input_quantization.dtype == "int8" and card.output_quantization.dtype == "int8"
    assert SHIPPED_FACE.stat().st_size <= 1.5 * 1024 * 1024
    float_acc, int8_acc = card.metrics["float"]["accuracy"], card.metrics["int8"]["accuracy"]
    assert abs(float_acc - int8_acc) <= 0.01


def test_shipped_face_card_matches_what_evaluate_face_prints() -> None:
    from edge.evaluate import evaluate_face

    card = load_card(SHIPPED_FACE)
    report = evaluate_face(shared_file("fer2013/fer2013.npz"), SHIPPED_FACE, usage=1)
    assert card.metrics["int8"]["n"] == report["n"]
    assert card.metrics["int8"]["accuracy"] == pytest.approx(report["accuracy"], abs=1e-9)
    assert card.metrics["int8"]["macro_f1"] == pytest.approx(report["macro_f1"], abs=1e-9)


def test_runtime_equals_training_side_int8(public_test: tuple[np.ndarray, np.ndarray]) -> None:
    from training.export import tf_int8_predict

    pixels = public_test[0][:64]
    clf = FaceClassifier(SHIPPED_FACE)
    x = pixels.astype(np.float64)[..., None] / 255.0
    runtime = clf.model.predict_quantized(x)
    assert runtime.dtype == np.int8
    np.testing.assert_array_equal(runtime, tf_int8_predict(SHIPPED_FACE.read_bytes(), x))
    np.testing.assert_allclose(clf.predict_proba(pixels).sum(axis=1), 1.0, atol=0.05)


def test_evaluate_face_json_contract(tmp_path: Path, public_test: tuple[np.ndarray, np.ndarray]) -> None:
    pixels, labels = public_test
    npz = tmp_path / "subset.npz"
    np.savez(npz, pixels=pixels[:500], labels=labels[:500])
    proc = run_cli("evaluate", "face", "--data", str(npz), "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert {"accuracy", "macro_f1", "n", "labels", "confusion"} <= report.keys()
    assert report["n"] == 500 and report["labels"] == list(FER2013_LABELS)
    assert np.asarray(report["confusion"]).sum() == 500
    # Far above chance (1/7) even on 500 images: the runtime path is the trained model.
    assert report["accuracy"] > 0.4


def test_evaluate_face_rejects_a_bad_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.npz"
    np.savez(bad, images=np.zeros((2, 48, 48), np.uint8))
    proc = run_cli("evaluate", "face", "--data", str(bad), "--json")
    assert proc.returncode == 65
    assert "pixels" in proc.stderr and "Traceback" not in proc.stderr


def test_evaluate_face_accepts_0_255_in_other_dtypes(
    tmp_path: Path, public_test: tuple[np.ndarray, np.ndarray]
) -> None:
    pixels, labels = public_test[0][:200], public_test[1][:200]
    reports = []
    for name, array in [("u8", pixels), ("f32", pixels.astype(np.float32)), ("i64", pixels.astype(np.int64))]:
        npz = tmp_path / f"{name}.npz"
        np.savez(npz, pixels=array, labels=labels)
        proc = run_cli("evaluate", "face", "--data", str(npz), "--json")
        assert proc.returncode == 0, proc.stderr
        reports.append(json.loads(proc.stdout))
    assert reports[0]["confusion"] == reports[1]["confusion"] == reports[2]["confusion"]


@pytest.mark.parametrize(
    ("arrays", "args", "message"),
    [
        # 0..1 floats would otherwise be scored as near-black images, silently.
        ({"pixels": np.full((3, 48, 48), 0.5, np.float32), "labels": np.zeros(3, np.int64)}, [], "0..255"),
        (
            {"pixels": np.zeros((3, 48, 48), np.uint8), "labels": np.zeros(3, np.int64)},
            ["--usage", "2"],
            "usage",
        ),
        ({"pixels": np.zeros((3, 48, 48), np.uint8), "labels": np.full(3, 7)}, [], "0..6"),
    ],
)
def test_evaluate_face_refuses_unclear_input(
    tmp_path: Path, arrays: dict[str, np.ndarray], args: list[str], message: str
) -> None:
    npz = tmp_path / "x.npz"
    np.savez(npz, **arrays)  # type: ignore[arg-type]
    proc = run_cli("evaluate", "face", "--data", str(npz), "--json", *args)
    assert proc.returncode == 65
    assert message in proc.stderr and "Traceback" not in proc.stderr
