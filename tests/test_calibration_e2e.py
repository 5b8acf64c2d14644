"""Calibration in the running daemon, end to end, with a simulated wearer on a pty.

tests/calibration_wearer.py plays the EMG board and the person: it follows the daemon's prompts
from the control socket and streams the matching emotion from the earlier part of each segment
of emg_train.csv (rest between repetitions; "neutral" is the rest signal). The session settings
are short (0.8 s repetitions) to keep the wall time modest.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np

from edge.calibration.store import PersonalModelStore
from edge.emg.classifier import EmgClassifier
from tests.conftest import REPO, SHIPPED_EMG
from tests.harness import Daemon, Mosquitto, Subscriber, daemon_config, new_episode_emotions, wait_until
from tests.test_serial_daemon import collapse, serial_emg_toml

BASE = "emotion_edge/test_pi"
EVENTS = f"{BASE}/event"
STATS = f"{BASE}/stats"
SEGMENTS = ["happy", "angry", "surprise", "fear", "sad", "disgust"]
CAL_FRACTION = 0.6
SESSION = """
[calibration]
repetitions = 3
repetition_s = 0.8
reaction_s = 0.2
rest_s = 0.3
countdown_s = 0.4
max_retries = 2
seed = 7
"""
N_STEPS = 7 * 3
SESSION_S = N_STEPS * (0.8 + 0.3 + 0.4)


class Wearer:
    """tests/calibration_wearer.py as a child process; its stdout lines collected by a thread."""

    def __init__(self, *args: str) -> None:
        self.lines: list[list[str]] = []
        self._lock = threading.Lock()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.calibration_wearer", *args],
            cwd=REPO,
            stdout=subprocess.PIPE,
            text=True,
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._lock:
                self.lines.append(line.rstrip("\n").split(" ", 1))

    def said(self, word: str) -> list[str]:
        with self._lock:
            return [w[1] if len(w) > 1 else "" for w in self.lines if w[0] == word]

    def wait_for(self, word: str, timeout: float) -> str:
        def seen() -> bool:
            if not self.said(word) and self.proc.poll() is not None:
                raise AssertionError(f"the wearer exited with {self.proc.returncode} before {word}")
            return bool(self.said(word))

        wait_until(seen, timeout, what=f"{word} from the wearer")
        return self.said(word)[0]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


def start(
    tmp_path: Path, emg_csv: Path, *wearer_args: str
) -> tuple[Mosquitto, Subscriber, Wearer, Daemon, Path]:
    broker, sub, wearer, config, state = start_without_daemon(tmp_path, emg_csv, *wearer_args)
    return broker, sub, wearer, Daemon(config, tmp_path), state


def teardown(broker: Mosquitto, sub: Subscriber, wearer: Wearer, daemon: Daemon | None = None) -> None:
    if daemon is not None:
        daemon.kill()
    wearer.stop()
    sub.close()
    broker.stop()


def start_without_daemon(
    tmp_path: Path, emg_csv: Path, *wearer_args: str
) -> tuple[Mosquitto, Subscriber, Wearer, Path, Path]:
    """The broker, a subscriber, the wearer on its pty and the config file (its state folder)."""
    link = tmp_path / "ttyEMG"
    state = tmp_path / "state"
    state.mkdir()
    broker = Mosquitto(tmp_path / "broker").start()
    sub = Subscriber(broker.port, [f"{BASE}/#"])
    sock = state / "calibration.sock"
    wearer = Wearer(
        "--csv", str(emg_csv), "--link", str(link), "--socket", str(sock),
        "--cal-fraction", str(CAL_FRACTION),
        *(a.replace("{mqtt_port}", str(broker.port)) for a in wearer_args),
    )  # fmt: skip
    wearer.wait_for("READY", 10)
    config = daemon_config(tmp_path, broker.port, emg=serial_emg_toml(link, 1023) + SESSION)
    text = config.read_text().replace(str(tmp_path / "outbox.sqlite3"), str(state / "outbox.sqlite3"))
    config.write_text(text)
    return broker, sub, wearer, config, state


def events_after(sub: Subscriber, t: float) -> list[dict[str, Any]]:
    return [json.loads(p) for tm, topic, p, _ in list(sub.messages) if topic == EVENTS and tm >= t]


def later_part_accuracy(model: Path, csv: Path) -> dict[str, float]:
    """Window accuracy (hop = window) of ``model`` on the later part of every segment: the rows
    the wearer streams after the session."""
    data = np.loadtxt(csv, delimiter=",", skiprows=1, usecols=[1, 2, 3])
    with csv.open() as fh:
        fh.readline()
        labels = np.array([line.rstrip("\n").split(",")[4] for line in fh if line.strip()])
    clf = EmgClassifier(model)
    correct = total = 0
    per: dict[str, float] = {}
    for lab in SEGMENTS:
        seg = data[labels == lab]
        part = seg[int(len(seg) * CAL_FRACTION) :]
        n = len(part) // clf.window
        windows = part[: n * clf.window].reshape(n, clf.window, 3)
        pred = np.array(clf.labels)[clf.predict_proba(windows).argmax(axis=1)]
        per[lab] = float((pred == lab).mean())
        correct += int((pred == lab).sum())
        total += n
    per["all"] = correct / total
    return per


def test_session_trains_activates_and_swaps_in_the_personal_model(tmp_path: Path, emg_csv: Path) -> None:
    broker, sub, wearer, daemon, state = start(tmp_path, emg_csv, "--start", "--test-after")
    try:
        sock = state / "calibration.sock"
        wait_until(sock.exists, 30, what="the control socket")
        assert stat.S_IMODE(os.stat(sock).st_mode) == 0o600
        t_start = float(wearer.said("PHASE")[0].split()[-1])
        result = json.loads(wearer.wait_for("RESULT", SESSION_S + 60))
        assert result["phase"] == "done", result
        t_result = float(wearer.said("PHASE")[-1].split()[-1])
        # Events kept flowing while the session recorded (its data is emotional, the generic model ran).
        during = [e for e in events_after(sub, t_start) if e not in events_after(sub, t_result)]
        assert new_episode_emotions(during), "no episode during the session"
        t_swapped = float(wearer.wait_for("SEGMENT", 10).split()[1])
        wearer.wait_for("TESTED", 30)
        wait_until(
            lambda: collapse(new_episode_emotions(events_after(sub, t_swapped)))[-1:] == ["disgust"],
            10,
            what="the last segment's episode",
        )
        assert daemon.proc.poll() is None
        assert daemon.stop() == 0
    finally:
        teardown(broker, sub, wearer, daemon)
    log = daemon.log
    assert "Traceback" not in log, log[-3000:]
    summary = result["result"]
    assert summary["activated"] is True and summary["labels"][0] in ("neutral", *SEGMENTS)
    assert sorted(summary["labels"]) == sorted(["neutral", *SEGMENTS])
    store = PersonalModelStore(state)
    active = store.active()
    assert active is not None and str(active) == summary["model"]
    # The running daemon classifies with it (not the generic model) from the swap on.
    assert f"EMG model swapped in: {active} (labels " in log, log[-3000:]
    recording = Path(summary["recording"])
    header = recording.read_text().splitlines()[0]
    assert header == "sample,EMG1,EMG2,EMG3,label,rep"

    # After the swap, the events follow the later part's labels.
    emotions = collapse(new_episode_emotions(events_after(sub, t_swapped)))
    emotions = [e for e in emotions if e != "neutral"]
    personal = later_part_accuracy(active, emg_csv)
    generic = later_part_accuracy(SHIPPED_EMG, emg_csv)
    print(
        f"\npersonal model: session LORO accuracy {summary['accuracy']:.3f}, "
        f"trained in {summary['training_s']} s; later part of each segment (window accuracy): "
        f"personal {personal['all']:.3f}, generic {generic['all']:.3f}"
        f"\n  per label personal {personal}\n  per label generic  {generic}"
        f"\n  episodes after the swap: {emotions}"
    )
    assert emotions == SEGMENTS, emotions


def test_bad_repetitions_are_flagged_and_repeated_then_the_session_completes(
    tmp_path: Path, emg_csv: Path
) -> None:
    """The person does the wrong thing: an electrode detached (flat), one pressed so hard that it
    clips (saturated), a lead pulled out (disconnected), the board's cable pulled for a second."""
    faults = {1: ("flat", 0), 4: ("saturated", 1), 7: ("disconnected", 2), 10: ("unplug", 0)}
    args = [a for n, (kind, ch) in faults.items() for a in ("--fault", f"{kind}@{n}:{ch}")]
    broker, sub, wearer, daemon, state = start(tmp_path, emg_csv, "--start", *args)
    try:
        result = json.loads(wearer.wait_for("RESULT", SESSION_S + 90))
        assert daemon.proc.poll() is None
        assert daemon.stop() == 0
    finally:
        teardown(broker, sub, wearer, daemon)
    assert "Traceback" not in daemon.log, daemon.log[-3000:]
    assert result["phase"] == "done", result
    flagged = result["flagged"]
    reasons = [f["reason"] for f in flagged]
    print("\nflagged:", *reasons, sep="\n  ")
    assert len(flagged) == 4, reasons
    assert "check electrode 1 (corrugator): flat" in reasons[0]
    assert "check electrode 2 (zygomaticus): saturated" in reasons[1]
    assert "check electrode 3 (depressor): disconnected" in reasons[2]
    assert "check the board's cable" in reasons[3]
    # Each bad repetition was recorded again: the model has all 3 repetitions of every label.
    assert result["result"]["activated"] is True
    assert result["result"]["repetitions"] == N_STEPS
    assert PersonalModelStore(state).active() is not None


def test_cancel_half_way_changes_nothing_and_events_keep_flowing(tmp_path: Path, emg_csv: Path) -> None:
    broker, sub, wearer, daemon, state = start(
        tmp_path, emg_csv, "--start", "--cancel-after", "8", "--test-after"
    )
    try:
        result = json.loads(wearer.wait_for("RESULT", SESSION_S + 60))
        t_cancelled = float(wearer.said("PHASE")[-1].split()[-1])
        wearer.wait_for("TESTED", 30)
        wait_until(
            lambda: collapse(new_episode_emotions(events_after(sub, t_cancelled)))[-1:] == ["disgust"],
            10,
            what="the last segment's episode",
        )
        assert daemon.stop() == 0
    finally:
        teardown(broker, sub, wearer, daemon)
    log = daemon.log
    assert "Traceback" not in log, log[-3000:]
    assert result["phase"] == "cancelled" and "nothing was changed" in result["message"], result
    store = PersonalModelStore(state)
    assert store.active() is None and store.list_models() == []
    assert not store.recordings_dir.exists() or list(store.recordings_dir.iterdir()) == []
    assert "EMG model swapped in" not in log
    # The generic model goes on: the later part's events follow the labels.
    assert collapse(new_episode_emotions(events_after(sub, t_cancelled))) == SEGMENTS


def test_a_session_that_cannot_tell_the_labels_apart_is_refused_with_reasons(
    tmp_path: Path, emg_csv: Path
) -> None:
    broker, sub, wearer, daemon, state = start(tmp_path, emg_csv, "--start", "--blank-face")
    try:
        result = json.loads(wearer.wait_for("RESULT", SESSION_S + 60))
        assert daemon.stop() == 0
    finally:
        teardown(broker, sub, wearer, daemon)
    assert "Traceback" not in daemon.log, daemon.log[-3000:]
    assert result["phase"] == "refused", result
    summary = result["result"]
    print("\nrefused:", result["message"])
    assert summary["activated"] is False and summary["reasons"], summary
    assert "not activated" in result["message"]
    store = PersonalModelStore(state)
    assert store.active() is None  # the generic model stays
    assert [m.passed for m in store.list_models()] == [False]  # kept, with its verdict, for `models list`
    assert "EMG model swapped in" not in daemon.log
