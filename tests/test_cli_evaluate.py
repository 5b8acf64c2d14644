"""``emotion-edge evaluate emg``: the JSON contract, run with the runtime install only."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

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
    # 6 classes x 4000 samples, window 100 = hop: 40 windows per class.
    assert report["n_windows"] == 240
    assert report["labels"] == ["happy", "angry", "surprise", "fear", "sad", "disgust"]
    assert sum(map(sum, report["confusion"])) == 240
    assert report["runtime"] == "ai_edge_litert.interpreter"


def test_windows_never_span_a_gap_or_label_change(emg_csv: Path, tmp_path: Path) -> None:
    lines = emg_csv.read_text().splitlines()
    header, rows = lines[0], lines[1:]
    # Keep 250 samples of happy, skip 50 (a gap), keep 150 more; then 199 samples of angry.
    kept = rows[0:250] + rows[300:450] + rows[4000:4199]
    path = tmp_path / "gappy.csv"
    path.write_text("\n".join([header, *kept]) + "\n")
    proc = run_cli("evaluate", "emg", "--data", str(path), "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    # happy: 2 windows before the gap + 1 after; angry: 1 window (199 samples).
    assert report["n_windows"] == 4
    assert [sum(r) for r in report["confusion"]][:2] == [3, 1]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "/nonexistent/emg.tflite"], "model file not found"),
        (["--data", "/nonexistent.csv"], "cannot read recording"),
    ],
)
def test_evaluate_errors_are_clear(emg_csv: Path, args: list[str], message: str) -> None:
    base = ["evaluate", "emg", "--data", str(emg_csv), "--json"]
    if args[0] == "--data":
        base[3] = args[1]
    else:
        base += args
    proc = run_cli(*base)
    assert proc.returncode == 65
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
