"""``emotion-edge evaluate emg``: the JSON contract, run with the runtime install only."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO

# Make TensorFlow, Keras and scikit-learn unimportable, as on a Pi with the runtime install.
NO_TRAINING_STACK = """
import sys
for name in ("tensorflow", "keras", "sklearn", "matplotlib"):
    sys.modules[name] = None
from edge.cli import main
code = main(sys.argv[1:])
assert "tensorflow" not in {m.split(".")[0] for m in sys.modules if sys.modules[m] is not None}
raise SystemExit(code)
"""


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", NO_TRAINING_STACK, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_evaluate_emg_json_contract(emg_csv: Path) -> None:
    proc = run_cli("evaluate", "emg", "--data", str(emg_csv), "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert {"accuracy", "macro_f1", "n_windows", "labels", "confusion"} <= report.keys()
    # 6 classes x 4000 samples, a 300-sample look-back every 100 samples: 38 windows per class.
    assert (report["window"], report["hop"]) == (300, 100)
    assert report["n_windows"] == 6 * 38
    assert report["labels"] == ["happy", "angry", "surprise", "fear", "sad", "disgust"]
    assert sum(map(sum, report["confusion"])) == 6 * 38
    assert report["runtime"] == "ai_edge_litert.interpreter"


def test_windows_never_span_a_gap_or_label_change(emg_csv: Path, tmp_path: Path) -> None:
    lines = emg_csv.read_text().splitlines()
    header, rows = lines[0], lines[1:]
    # Keep 450 samples of happy, skip 50 (a gap), keep 350 more; then 399 samples of angry.
    kept = rows[0:450] + rows[500:850] + rows[4000:4399]
    path = tmp_path / "gappy.csv"
    path.write_text("\n".join([header, *kept]) + "\n")
    proc = run_cli("evaluate", "emg", "--data", str(path), "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    # 300-sample windows every 100: happy 2 before the gap + 1 after; angry 1 (399 samples).
    assert report["n_windows"] == 4
    assert [sum(r) for r in report["confusion"]][:2] == [3, 1]


@pytest.mark.parametrize(
    ("args", "message", "code"),
    [
        # A file that is not there is EX_NOINPUT (66); one that is there but wrong is EX_DATAERR (65).
        (["--model", "/nonexistent/emg.tflite"], "model file not found", 66),
        (["--data", "/nonexistent.csv"], "cannot read recording", 66),
        (["--data", str(REPO / "README.md")], "missing column(s)", 65),
    ],
)
def test_evaluate_errors_are_clear(emg_csv: Path, args: list[str], message: str, code: int) -> None:
    base = ["evaluate", "emg", "--data", str(emg_csv), "--json"]
    if args[0] == "--data":
        base[3] = args[1]
    else:
        base += args
    proc = run_cli(*base)
    assert proc.returncode == code
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_no_runtime_chatter_on_stderr(emg_csv: Path) -> None:
    # LiteRT's C++ "INFO: Created TensorFlow Lite XNNPACK delegate for CPU." on every start.
    proc = run_cli("evaluate", "emg", "--data", str(emg_csv), "--json")
    assert proc.returncode == 0, proc.stderr
    assert "XNNPACK" not in proc.stderr


def test_interpreter_keeps_other_native_stderr(capfd: pytest.CaptureFixture[str]) -> None:
    """Only the delegate notice goes: anything else native code writes to fd 2 still arrives."""
    import os

    from edge.interpreter import without_delegate_notice

    with without_delegate_notice():
        os.write(2, b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\nERROR: a real problem\n")
    assert capfd.readouterr().err == "ERROR: a real problem\n"


def test_evaluating_on_training_data_says_so(emg_csv: Path, tmp_path: Path) -> None:
    proc = run_cli("evaluate", "emg", "--data", str(emg_csv), "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["training_data"] is True
    assert "training data" in proc.stderr and "warning" in proc.stderr
    # Text output warns as well.
    assert "training data" in run_cli("evaluate", "emg", "--data", str(emg_csv)).stderr
    # Other data, even a part of the training file, is scored without the warning.
    lines = emg_csv.read_text().splitlines()
    other = tmp_path / "other.csv"
    other.write_text("\n".join(lines[:1001] + lines[4001:5001]) + "\n")
    proc = run_cli("evaluate", "emg", "--data", str(other), "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["training_data"] is False
    assert "training data" not in proc.stderr


SHIPPED_FACE = REPO / "models" / "face" / "face.tflite"


def _faces(tmp_path: Path, usage: list[int]) -> Path:
    """A small npz in the project's fer2013 layout: one row per ``usage`` value."""
    rng = np.random.default_rng(0)
    path = tmp_path / "faces.npz"
    np.savez(
        path,
        pixels=rng.integers(0, 256, (len(usage), 48, 48), dtype=np.uint8),
        labels=np.arange(len(usage), dtype=np.uint8) % 7,
        usage=np.array(usage, dtype=np.uint8),
    )
    return path


def _face_model_trained_on(tmp_path: Path, data: Path) -> Path:
    """The shipped face model, with a card that lists ``data`` as its training data."""
    from edge.model_card import sha256_file

    model = tmp_path / "model" / "face.tflite"
    model.parent.mkdir()
    shutil.copyfile(SHIPPED_FACE, model)
    card = json.loads(SHIPPED_FACE.with_name("face.card.json").read_text())
    card["training_data"] = [{"name": data.name, "sha256": sha256_file(data)}]
    model.with_name("face.card.json").write_text(json.dumps(card))
    return model


def test_face_defaults_to_public_test_rows(tmp_path: Path) -> None:
    data = _faces(tmp_path, [0, 0, 0, 1, 1, 0, 0, 0])
    proc = run_cli("evaluate", "face", "--data", str(data), "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert (report["n"], report["usage"]) == (2, 1)
    text = run_cli("evaluate", "face", "--data", str(data))
    assert text.returncode == 0, text.stderr
    assert "PublicTest" in text.stdout and "n=2" in text.stdout
    every = json.loads(run_cli("evaluate", "face", "--data", str(data), "--usage", "all", "--json").stdout)
    assert (every["n"], every["usage"]) == (8, "all")
    training = json.loads(run_cli("evaluate", "face", "--data", str(data), "--usage", "0", "--json").stdout)
    assert (training["n"], training["usage"]) == (6, 0)


def test_face_without_usage_array_scores_every_row(tmp_path: Path) -> None:
    path = tmp_path / "plain.npz"
    np.savez(path, pixels=np.zeros((3, 48, 48), np.uint8), labels=np.zeros(3, np.uint8))
    proc = run_cli("evaluate", "face", "--data", str(path), "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert (report["n"], report["usage"]) == (3, "all")


def test_face_empty_selection_is_an_error(tmp_path: Path) -> None:
    data = _faces(tmp_path, [0, 0, 1])
    proc = run_cli("evaluate", "face", "--data", str(data), "--usage", "2", "--json")
    assert proc.returncode == 65, proc.stderr
    assert proc.stdout == ""
    assert proc.stderr.startswith("emotion-edge: ") and len(proc.stderr.splitlines()) == 1, proc.stderr
    assert "no rows" in proc.stderr


def test_face_training_rows_of_the_training_file_are_flagged(tmp_path: Path) -> None:
    data = _faces(tmp_path, [0, 0, 0, 1, 1])
    model = _face_model_trained_on(tmp_path, data)
    base = ("evaluate", "face", "--data", str(data), "--model", str(model), "--json")
    # The default rows (PublicTest) were not fitted on: no warning.
    proc = run_cli(*base)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["training_data"] is False
    assert "training data" not in proc.stderr
    for usage in ("0", "all"):
        proc = run_cli(*base, "--usage", usage)
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["training_data"] is True
        assert "training data" in proc.stderr
