"""Personal models in the state directory: install, the validation gate and its reasons, activation,
rollback, retention, which model the daemon loads, and ``emotion-edge models``.

The sessions are the looped-thirds + synthetic-neutral sessions of tests/test_calibration_offline.py,
built from the public recording. The "bad electrode" sessions replace one electrode's column with
Gaussian noise (mean 300, sd 40 ADC units: what a lead picks up once off the skin) or a constant
(a flat, shorted input), on every row.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge.calibration.gate import MAX_CONFUSION, MIN_ACCURACY, MIN_RECALL, judge
from edge.calibration.offline import CalibrationResult, calibrate_recording
from edge.calibration.store import KEEP_MODELS, PersonalModelStore, StoreError, UnknownModel
from edge.config import Config
from edge.emg.classifier import EmgClassifier
from edge.paths import SHIPPED_EMG_MODEL, shipped_model
from edge.service import loading
from tests.conftest import REPO
from tests.test_calibration_offline import build_session


def corrupt(src: Path, dst: Path, electrode: int, how: str) -> Path:
    """``src`` with electrode ``electrode`` (1-based) replaced on every row: "noise" or "flat"."""
    rng = np.random.default_rng(1)
    lines = src.read_text().splitlines()
    out = [lines[0]]
    for line in lines[1:]:
        fields = line.split(",")
        fields[electrode] = f"{rng.normal(300, 40):.0f}" if how == "noise" else "512"
        out.append(",".join(fields))
    dst.write_text("\n".join(out) + "\n")
    return dst


@pytest.fixture(scope="module")
def sessions(emg_csv: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("sessions")
    good = build_session(emg_csv, d / "good.csv", rep_column=True)
    return {
        "good": good,
        "noisy1": corrupt(good, d / "noisy1.csv", 1, "noise"),
        "flat3": corrupt(good, d / "flat3.csv", 3, "flat"),
    }


@pytest.fixture(scope="module")
def results(
    sessions: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, CalibrationResult]:
    d = tmp_path_factory.mktemp("fitted")
    return {name: calibrate_recording(csv, d / name) for name, csv in sessions.items()}


def config_for(state: Path, **models: Any) -> Config:
    return Config.model_validate({"outbox": {"path": str(state / "outbox.sqlite3")}, "models": models})


def leftovers(store: PersonalModelStore) -> list[Path]:
    return [p for p in store.root.rglob(".*") if p.name != ".gitkeep"]


# --- the gate -------------------------------------------------------------------------------


def test_good_session_is_installed_and_activated(
    results: dict[str, CalibrationResult], tmp_path: Path
) -> None:
    store = PersonalModelStore(tmp_path)
    installed = store.install(results["good"], "20260101T000000Z")
    assert installed.activated and installed.reasons == [] and installed.warnings == []
    assert installed.report["accuracy"] >= MIN_ACCURACY
    assert store.active() == installed.model
    folder = tmp_path / "calibration" / "models" / "20260101T000000Z"
    assert sorted(p.name for p in folder.iterdir()) == [
        "emg-personal.card.json",
        "emg-personal.tflite",
        "verdict.json",
    ]
    verdict = json.loads((folder / "verdict.json").read_text())
    assert verdict["passed"] and verdict["thresholds"] == {
        "min_accuracy": MIN_ACCURACY,
        "min_recall": MIN_RECALL,
        "max_confusion": MAX_CONFUSION,
    }
    assert EmgClassifier(installed.model).labels == results["good"].report["labels"]
    assert leftovers(store) == []
    assert oct(store.root.stat().st_mode & 0o777) == "0o700"


def test_a_noisy_electrode_is_refused_with_the_pair_and_the_electrode(
    results: dict[str, CalibrationResult], tmp_path: Path
) -> None:
    store = PersonalModelStore(tmp_path)
    good = store.install(results["good"], "20260101T000000Z")
    refused = store.install(results["noisy1"], "20260101T000100Z")
    assert not refused.activated
    # Electrode 1 (corrugator) is what tells disgust from happy in this recording (Fisher ratio 26
    # against about 1 on the other two); without it 42% of disgust is taken for happy.
    first = refused.reasons[0]
    assert first.startswith("disgust is taken for happy in 4"), refused.reasons
    assert "check electrode 1 (corrugator)" in first
    assert any(r.startswith("electrode 1 (corrugator) hardly changes") for r in refused.reasons)
    # Stored, but the good model stays in use.
    assert store.active() == good.model
    (listed,) = [m for m in store.list_models() if m.model_id == "20260101T000100Z"]
    assert not listed.passed and listed.reasons == refused.reasons and not listed.active


def test_a_flat_electrode_that_the_others_make_up_for_passes_with_a_warning(
    results: dict[str, CalibrationResult], tmp_path: Path
) -> None:
    installed = PersonalModelStore(tmp_path).install(results["flat3"])
    assert installed.activated and installed.reasons == []
    assert [w.split(":")[0] for w in installed.warnings] == [
        "electrode 3 (depressor) hardly changes between expressions"
    ]


def test_mutual_confusion_is_called_indistinguishable_and_names_the_weakest_electrode() -> None:
    labels = ["neutral", "sad", "disgust"]
    confusion = [[100, 0, 0], [0, 45, 55], [0, 40, 60]]
    sep = np.ones((3, 3, 3)) * 50.0
    sep[:, 1, 2] = sep[:, 2, 1] = [4.0, 3.0, 0.2]  # electrode 3 separates sad from disgust least
    verdict = judge(labels, confusion, 205 / 300, sep, ["corrugator", "zygomaticus", "depressor"])
    assert not verdict.passed
    assert verdict.reasons == [
        "sad and disgust are indistinguishable (recall sad 45%, disgust 60%): check electrode 3 "
        "(depressor), then record again, making the two expressions clearly different"
    ]


def test_low_accuracy_alone_refuses() -> None:
    labels = ["a", "b", "c", "d"]
    # Errors spread evenly: every recall 55%, no single confusion above 15%, accuracy 55%.
    confusion = [[55 if i == j else 15 for j in range(4)] for i in range(4)]
    verdict = judge(labels, confusion, 0.55, np.ones((3, 4, 4)), ["x", "y", "z"])
    assert not verdict.passed
    assert verdict.reasons == [f"validation accuracy 55% is below the {MIN_ACCURACY:.0%} needed"]


# --- the store ------------------------------------------------------------------------------


def test_keeps_the_newest_three_and_the_active_one(
    results: dict[str, CalibrationResult], tmp_path: Path
) -> None:
    store = PersonalModelStore(tmp_path)
    ids = [f"2026010{d}T000000Z" for d in range(1, 7)]
    store.recording_path(ids[0]).write_text("kept with its model\n")
    store.install(results["good"], ids[0])
    for model_id in ids[1:]:
        store.recording_path(model_id).write_text("x\n")
        store.install(results["noisy1"], model_id)  # refused: ids[0] stays active
    kept = [m.model_id for m in store.list_models()]
    assert kept == [*ids[::-1][:KEEP_MODELS], ids[0]]
    assert sorted(p.stem for p in store.recordings_dir.iterdir()) == sorted(kept)
    assert store.active_id() == ids[0]


def test_activate_and_roll_back_down_to_the_shipped_model(
    results: dict[str, CalibrationResult], tmp_path: Path
) -> None:
    store = PersonalModelStore(tmp_path)
    a = store.install(results["good"], "20260101T000000Z").model_id
    b = store.install(results["good"], "20260102T000000Z").model_id
    c = store.install(results["noisy1"], "20260103T000000Z").model_id
    assert store.active_id() == b
    store.activate(c)  # a refused model can still be chosen explicitly
    assert store.active_id() == c
    assert store.rollback() == b
    assert store.rollback() == a
    assert store.rollback() is None and store.active() is None
    assert store.rollback() is None
    with pytest.raises(UnknownModel, match="no personal model 'nope'"):
        store.activate("nope")
    with pytest.raises(StoreError):
        store.activate("../models")


def test_a_writer_in_another_process_waits_for_the_store_lock(
    results: dict[str, CalibrationResult], tmp_path: Path
) -> None:
    store = PersonalModelStore(tmp_path)
    store.install(results["good"], "20260101T000000Z")
    store.install(results["good"], "20260102T000000Z")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys\nfrom pathlib import Path\nfrom edge.calibration.store import PersonalModelStore\n"
            f"with PersonalModelStore(Path({str(tmp_path)!r}))._locked():\n"
            "    print('locked', flush=True); sys.stdin.readline()",
        ],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdin is not None
    try:
        assert holder.stdout.readline().strip() == "locked"
        worker = threading.Thread(target=store.activate, args=("20260101T000000Z",))
        worker.start()
        worker.join(0.5)
        assert worker.is_alive(), "activate did not wait for the other process's lock"
        assert store.active_id() == "20260102T000000Z"
        holder.stdin.write("\n")
        holder.stdin.flush()
        worker.join(10)
        assert not worker.is_alive() and store.active_id() == "20260101T000000Z"
    finally:
        holder.kill()
        holder.wait(10)


def test_new_ids_sort_by_age_and_never_collide(tmp_path: Path) -> None:
    store = PersonalModelStore(tmp_path)
    first = store.new_id()
    store.recording_path(first).write_text("x\n")
    second = store.new_id()
    assert second != first and second > first


def test_a_failed_install_leaves_nothing_behind(
    results: dict[str, CalibrationResult], tmp_path: Path
) -> None:
    store = PersonalModelStore(tmp_path)
    broken = dict(results["good"].report, card=str(tmp_path / "gone.card.json"))
    result = CalibrationResult(
        broken, *(getattr(results["good"], f) for f in ("model", "quantized", "features", "session"))
    )
    with pytest.raises(FileNotFoundError):
        store.install(result, "20260101T000000Z")
    assert store.list_models() == [] and store.active() is None and leftovers(store) == []


def test_forget_recordings_deletes_only_the_recordings(
    results: dict[str, CalibrationResult], tmp_path: Path
) -> None:
    store = PersonalModelStore(tmp_path)
    store.recording_path("20260101T000000Z").write_text("x\n")
    store.install(results["good"], "20260101T000000Z")
    assert [p.name for p in store.forget_recordings()] == ["20260101T000000Z.csv"]
    assert list(store.recordings_dir.iterdir()) == []
    assert store.active() is not None
    assert store.forget_recordings() == []


def test_calibrate_trains_on_the_kept_recording(sessions: dict[str, Path], tmp_path: Path) -> None:
    store = PersonalModelStore(tmp_path)
    model_id = store.new_id()
    store.recording_path(model_id).write_bytes(sessions["good"].read_bytes())
    installed = store.calibrate(model_id)
    assert installed.activated and installed.model_id == model_id
    assert store.list_models()[0].recording == store.recording_path(model_id)
    assert leftovers(store) == []


# --- which model the daemon runs ------------------------------------------------------------


def test_precedence_config_then_personal_then_shipped(
    results: dict[str, CalibrationResult], tmp_path: Path
) -> None:
    shipped = shipped_model(SHIPPED_EMG_MODEL)
    assert loading.emg_model_path(config_for(tmp_path)) == shipped
    installed = PersonalModelStore(tmp_path).install(results["good"])
    assert loading.emg_model_path(config_for(tmp_path)) == installed.model
    assert loading.emg_classifier(config_for(tmp_path)).labels[0] == "neutral"
    explicit = config_for(tmp_path, emg=str(shipped))
    assert loading.emg_model_path(explicit) == shipped


def test_a_broken_personal_model_falls_back_to_the_shipped_one(
    results: dict[str, CalibrationResult], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    installed = PersonalModelStore(tmp_path).install(results["good"])
    installed.model.write_bytes(installed.model.read_bytes()[:-10])  # truncated on disk
    with caplog.at_level(logging.ERROR, logger="edge.service.loading"):
        classifier = loading.emg_classifier(config_for(tmp_path))
    assert classifier.model.model_path == shipped_model(SHIPPED_EMG_MODEL)
    assert "the active personal EMG model does not load" in caplog.text


def test_a_personal_model_calibrated_at_another_rate_is_used_with_a_warning(
    sessions: dict[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = PersonalModelStore(tmp_path)
    model_id = store.new_id()
    store.recording_path(model_id).write_bytes(sessions["good"].read_bytes())
    installed = store.calibrate(model_id, sample_rate_hz=500.0)
    with caplog.at_level(logging.WARNING, logger="edge.service.loading"):
        classifier = loading.emg_classifier(config_for(tmp_path))  # emg.sample_rate_hz: 1000
    assert classifier.model.model_path == installed.model
    assert "calibrated at 500 Hz, emg.sample_rate_hz is 1000 Hz" in caplog.text


def test_prepare_swaps_in_a_newly_activated_model(
    results: dict[str, CalibrationResult], tmp_path: Path
) -> None:
    config = config_for(tmp_path)
    running = loading.emg_classifier(config)
    unchanged = asyncio.run(loading.prepare(config, config, running))
    assert unchanged.emg_classifier is None and not unchanged.emg_swap and not unchanged.emg_changed
    installed = PersonalModelStore(tmp_path).install(results["good"])
    prepared = asyncio.run(loading.prepare(config, config, running))
    assert prepared.emg_swap and not prepared.emg_changed
    assert prepared.emg_classifier is not None and prepared.emg_classifier.model.model_path == installed.model
    PersonalModelStore(tmp_path).rollback()
    back = asyncio.run(loading.prepare(config, config, prepared.emg_classifier))
    assert back.emg_swap and back.emg_classifier is not None
    assert back.emg_classifier.model.model_path == shipped_model(SHIPPED_EMG_MODEL)


# --- emotion-edge models --------------------------------------------------------------------


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge.cli", *args], cwd=REPO, capture_output=True, text=True, timeout=60
    )


def test_models_cli_lists_activates_and_rolls_back(
    results: dict[str, CalibrationResult], tmp_path: Path
) -> None:
    store = PersonalModelStore(tmp_path)
    store.install(results["good"], "20260101T000000Z")
    store.install(results["noisy1"], "20260102T000000Z")
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'[outbox]\npath = "{tmp_path / "outbox.sqlite3"}"\n')

    listed = cli("models", "list", "--config", str(cfg), "--json")
    assert listed.returncode == 0, listed.stderr
    report = json.loads(listed.stdout)
    assert report["active"] == "20260101T000000Z"
    assert [(m["id"], m["passed"], m["active"]) for m in report["models"]] == [
        ("20260102T000000Z", False, False),
        ("20260101T000000Z", True, True),
    ]
    table = cli("models", "list", "--config", str(cfg))
    assert "* 20260101T000000Z" in table.stdout and "refused" in table.stdout
    assert "disgust is taken for happy" in table.stdout

    act = cli("models", "activate", "20260102T000000Z", "--config", str(cfg))
    assert act.returncode == 0, act.stderr
    assert "failed validation: disgust is taken for happy" in act.stdout
    assert "no daemon is running" in act.stdout
    assert store.active_id() == "20260102T000000Z"
    back = cli("models", "rollback", "--config", str(cfg), "--json")
    assert json.loads(back.stdout)["active"] == "20260101T000000Z"


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["activate", "20990101T000000Z"], os.EX_DATAERR, "no personal model '20990101T000000Z'"),
        (["list", "--config", "MISSING_STATE"], os.EX_NOINPUT, "no state directory"),
        (["list", "--config", "BAD_CONFIG"], 78, "config error: outbox.nope"),
    ],
)
def test_models_cli_user_errors_are_one_line_and_a_sysexits_code(
    results: dict[str, CalibrationResult], tmp_path: Path, args: list[str], code: int, message: str
) -> None:
    PersonalModelStore(tmp_path).install(results["good"], "20260101T000000Z")
    good = tmp_path / "config.toml"
    good.write_text(f'[outbox]\npath = "{tmp_path / "outbox.sqlite3"}"\n')
    (tmp_path / "missing.toml").write_text(f'[outbox]\npath = "{tmp_path / "nowhere" / "o.sqlite3"}"\n')
    (tmp_path / "bad.toml").write_text("[outbox]\nnope = 1\n")
    paths = {"MISSING_STATE": tmp_path / "missing.toml", "BAD_CONFIG": tmp_path / "bad.toml"}
    argv = [str(paths.get(a, a)) for a in args]
    if "--config" not in argv:
        argv += ["--config", str(good)]
    result = cli("models", *argv)
    assert result.returncode == code, result.stderr
    assert result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1 and message in result.stderr


def test_calibrate_forget_deletes_the_kept_recordings_and_says_which(
    results: dict[str, CalibrationResult], tmp_path: Path
) -> None:
    store = PersonalModelStore(tmp_path)
    for model_id in ("20260101T000000Z", "20260102T000000Z"):
        store.recording_path(model_id).write_text("x\n")
        store.install(results["good"], model_id)
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'[outbox]\npath = "{tmp_path / "outbox.sqlite3"}"\n')
    forget = [sys.executable, "-m", "edge.cli", "calibrate", "--forget", "--config", str(cfg)]
    done = subprocess.run(forget, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        f"deleted 2 calibration recording(s) from {store.recordings_dir}:",
        "  20260101T000000Z.csv",
        "  20260102T000000Z.csv",
    ]
    assert list(store.recordings_dir.iterdir()) == [] and len(store.list_models()) == 2
    again = subprocess.run([*forget, "--json"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert json.loads(again.stdout) == {"deleted": []}
    both = subprocess.run(
        [*forget, "--out", str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert both.returncode == os.EX_USAGE and "takes no --from-recording" in both.stderr
