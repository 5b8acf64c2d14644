"""The daemon as a process reading a fake EMG board on a pty (tests/pty_writer.py), to a real mosquitto.

One run streams the whole recording with every kind of line fault injected mid-segment, a
counter that wraps at 2**32, and the cable pulled for a second in the middle of "fear".
"""

from __future__ import annotations

import asyncio
import csv
import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import serial

from edge.queues import CountingQueue
from edge.sources.chunk import SampleChunk
from edge.sources.serial_emg import SerialEmgSource
from tests.conftest import REPO
from tests.harness import (
    Daemon,
    Mosquitto,
    Subscriber,
    daemon_config,
    event_seqs,
    new_episode_emotions,
    wait_until,
)

SEGMENTS = ["happy", "angry", "surprise", "fear", "sad", "disgust"]


def collapse(emotions: list[str]) -> list[str]:
    """Consecutive repeats merged: an episode split by an unplug is still one segment."""
    return [e for i, e in enumerate(emotions) if i == 0 or emotions[i - 1] != e]


SEGMENT_ROWS = 4000
BASE = "emotion_edge/test_pi"
STATS = f"{BASE}/stats"
EMG_AVAILABLE = f"{BASE}/modality/emg/available"

RATE = 3000  # lines/s: the decision clock follows the sample count, so 3x real time decides the same
JUMP = 7
# Row of each fault: all mid-segment, well away from the boundaries the event order depends on.
FAULTS = {
    "garbage": 1500,  # happy
    "partial": 2500,  # happy
    "field_count": 5500,  # angry
    "not_a_number": 6500,  # angry
    "out_of_range": 9500,  # surprise
    "jump": 10500,  # surprise
}
# A wrong line in the stream -> the reason the daemon must count it under.
FAULT_REASONS = {
    "garbage": "not_ascii",
    "partial": "field_count",  # the cut line glues onto the next one: too many fields
    "field_count": "field_count",
    "not_a_number": "not_a_number",
    "out_of_range": "out_of_range",
}
UNPLUG_AT = 14000  # fear; at most ~900 rows (a pty's buffer) are flushed when the port reopens
UNPLUG_S = 1.0
# Each side of the unplug loses at most a pty buffer's worth (~20 KiB, ~900 lines) of lines.
UNPLUG_LOSS_LIMIT = 2500
COUNTER_START = (1 << 32) - 6000  # the uint32 counter wraps at row 6000, which is no gap and no reset
RESUME_LIMIT_S = 2.0


def adc_full_scale(path: Path) -> int:
    with path.open(newline="") as f:
        top = max(max(float(r["EMG1"]), float(r["EMG2"]), float(r["EMG3"])) for r in csv.DictReader(f))
    return 1023 if top <= 1023 else 4095


def serial_emg_toml(port: Path, value_max: int) -> str:
    return f"""[emg]
source = "serial"
sample_rate_hz = 1000

[emg.serial]
port = "{port}"
baudrate = 230400
value_min = 0
value_max = {value_max}
reconnect_min_s = 0.1
reconnect_max_s = 1.0
"""


class PtyWriter:
    """tests/pty_writer.py as a child process; its stdout lines are collected by a thread."""

    def __init__(self, *args: str) -> None:
        self.lines: list[list[str]] = []
        self._lock = threading.Lock()
        self.proc = subprocess.Popen(
            [sys.executable, str(REPO / "tests" / "pty_writer.py"), *args],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._lock:
                self.lines.append(line.split())

    def said(self, word: str) -> list[str] | None:
        with self._lock:
            return next((w for w in self.lines if w and w[0] == word), None)

    def wait_for(self, word: str, timeout: float) -> list[str]:
        def seen() -> bool:
            if self.said(word) is None and self.proc.poll() is not None:
                raise AssertionError(f"pty writer exited with {self.proc.returncode} before {word}")
            return self.said(word) is not None

        wait_until(seen, timeout, what=f"{word} from the pty writer")
        words = self.said(word)
        assert words is not None
        return words

    def go(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def stats_messages(sub: Subscriber) -> list[tuple[float, dict[str, Any]]]:
    return [(t, json.loads(p)) for t, topic, p, _ in list(sub.messages) if topic == STATS]


def serial_stats(sub: Subscriber) -> dict[str, Any]:
    msgs = stats_messages(sub)
    return dict(msgs[-1][1].get("emg", {}).get("serial", {})) if msgs else {}


def availability(sub: Subscriber) -> list[tuple[float, str]]:
    return [(t, p.decode()) for t, topic, p, _ in list(sub.messages) if topic == EMG_AVAILABLE]


def test_serial_faults_unplug_and_resume(tmp_path: Path, emg_csv: Path) -> None:
    link = tmp_path / "ttyEMG"
    broker = Mosquitto(tmp_path / "broker").start()
    sub = Subscriber(broker.port, [f"{BASE}/#"])
    writer = PtyWriter(
        "--csv", str(emg_csv), "--link", str(link), "--rate", str(RATE),
        "--counter-start", str(COUNTER_START), "--jump", str(JUMP),
        *[a for kind, row in FAULTS.items() for a in ("--fault", f"{kind}@{row}")],
        "--unplug-at", str(UNPLUG_AT), "--unplug-s", str(UNPLUG_S),
        "--linger-s", "60", "--wait-for-go",
    )  # fmt: skip
    daemon: Daemon | None = None
    try:
        writer.wait_for("READY", 10)
        assert link.is_symlink()
        config = daemon_config(
            tmp_path, broker.port, emg=serial_emg_toml(link, adc_full_scale(emg_csv)), stats_interval_s=0.2
        )
        daemon = Daemon(config, tmp_path)
        # The board starts streaming once the daemon has the port open (nothing is flushed on open).
        wait_until(lambda: serial_stats(sub).get("connected") is True, 30, what="the daemon opening the pty")
        writer.go()
        done = writer.wait_for("DONE", len(SEGMENTS) * SEGMENT_ROWS / RATE + UNPLUG_S + 10)
        sent = int(done[2])
        # Every segment, the last one included, turns into an episode.
        wait_until(
            lambda: collapse(new_episode_emotions(sub.json_on(f"{BASE}/event"))) == SEGMENTS,
            20,
            what="an episode per segment",
        )
        # The reader has caught up with the writer: the serial counters stand still.
        wait_until(
            lambda: len({json.dumps(s["emg"]["serial"]) for _, s in stats_messages(sub)[-4:]}) == 1,
            10,
            what="the serial stats to settle",
        )
        assert daemon.proc.poll() is None, "the daemon died while the board misbehaved"
        final = serial_stats(sub)
        assert daemon.stop() == 0
        sub.wait_for(f"{BASE}/availability", lambda m: m[-1] == b"stopped")
    finally:
        if daemon is not None:
            daemon.kill()
        writer.stop()
        sub.close()
        broker.stop()
    assert daemon is not None
    log = daemon.log
    assert "Traceback" not in log, log[-3000:]
    assert log.count("EMG serial connected") == 2, log[-3000:]

    # (a) The events follow the segments in order, faults and unplug notwithstanding.
    events = sub.json_on(f"{BASE}/event")
    seqs = event_seqs(events)
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    emotions = new_episode_emotions(events)
    assert collapse(emotions) == SEGMENTS, emotions
    # The unplug (mid-fear) ends the fear episode at once: no stale emotion while the
    # board is gone; the replug starts a fresh one.
    assert emotions.count("fear") == 2, emotions
    fear_ids = [e["id"] for e in events if e["emotion"] == "fear" and e["type"] == "end"]
    assert len(set(fear_ids)) == 2, events

    # (b) Every injected fault is counted under its reason; the counter jump as lost samples.
    for kind, reason in FAULT_REASONS.items():
        assert final.get(f"rejected_{reason}", 0) >= 1, (kind, final)
    assert final["rejected_field_count"] >= 2, final  # the wrong field count and the glued partial line
    assert final["rejected_partial"] == final["connects"], final  # the first line of each connection
    assert final["lines_rejected"] >= len(FAULT_REASONS) + 1, final
    # 7 skipped counter values, plus the row lost to the glued partial line. The wrap at 2**32
    # and the reconnect (counter history forgotten) add nothing.
    assert final["samples_lost"] >= JUMP, final
    assert final["samples_lost"] == JUMP + 1, final
    assert final["counter_jumps"] == 2, final
    assert final["counter_resets"] == 0, final
    # Lines are lost only around the unplug: those still in the old pty, and those the writer
    # queued in the new one before the daemon reopened it (pyserial flushes input on open).
    lost_to_unplug = sent - final["lines_ok"] - 1 - final["rejected_partial"]
    print(f"\nsent {sent} lines, daemon parsed {final['lines_ok']}; lost to the unplug: {lost_to_unplug}")
    assert 0 <= lost_to_unplug <= UNPLUG_LOSS_LIMIT, (sent, final)

    # (c) The daemon noticed the unplug and was reading again within RESUME_LIMIT_S of the replug.
    assert final["disconnects"] >= 1 and final["connects"] >= 2, final
    assert final["open_failures"] >= 1, final  # it kept trying while the port was gone
    unplug, replug = writer.said("UNPLUG"), writer.said("REPLUG")
    assert unplug is not None and replug is not None, writer.lines
    unplug_t, replug_t = float(unplug[1]), float(replug[1])
    stats = stats_messages(sub)
    before = [s["emg"]["serial"] for t, s in stats if t <= replug_t]
    assert before and before[-1]["connected"] is False and before[-1]["connects"] == 1, before[-1:]
    baseline = before[-1]["lines_ok"]
    resumed_t = next(
        (
            t
            for t, s in stats
            if t > replug_t
            and s["emg"]["serial"]["connects"] >= 2
            and s["emg"]["serial"]["lines_ok"] > baseline
        ),
        None,
    )
    assert resumed_t is not None, "no stats message shows the daemon reading again after the replug"
    resume_delay = resumed_t - replug_t
    print(f"resume delay after REPLUG: {resume_delay:.3f} s (unplugged {replug_t - unplug_t:.3f} s)")
    assert resume_delay <= RESUME_LIMIT_S, resume_delay

    # (d) The retained availability of the EMG modality went OFF while unplugged, ON after.
    avail = availability(sub)
    assert any(p == "ON" and t < unplug_t for t, p in avail), avail
    off_t = next((t for t, p in avail if p == "OFF" and t > unplug_t), None)
    assert off_t is not None and off_t < replug_t, (unplug_t, replug_t, avail)
    on_t = next((t for t, p in avail if p == "ON" and t > off_t), None)
    assert on_t is not None and on_t >= replug_t, (replug_t, avail)
    print(f"emg available OFF {off_t - unplug_t:.3f} s after UNPLUG, ON {on_t - replug_t:.3f} s after REPLUG")
    assert on_t - replug_t <= RESUME_LIMIT_S


class DropsAtOnce:
    """A port that opens and then fails on the first read: a flaky board, or another program
    (ModemManager probing a new ttyACM) holding the port."""

    in_waiting = 0

    def __init__(self, *args: object, **kwargs: object) -> None:
        pass

    def read(self, size: int) -> bytes:
        raise serial.SerialException("device reports readiness to read but returned no data")

    def close(self) -> None:
        pass


def test_port_that_drops_right_after_opening_is_reopened_with_backoff(monkeypatch: Any) -> None:
    monkeypatch.setattr(serial, "Serial", DropsAtOnce)
    source = SerialEmgSource("/dev/ttyFAKE", 230400, 3, 0, 1023, reconnect_min_s=0.05, reconnect_max_s=0.4)

    async def run_for(seconds: float) -> None:
        task = asyncio.create_task(source.run(CountingQueue[SampleChunk](4)))
        await asyncio.sleep(seconds)
        source.stop()
        await asyncio.wait_for(task, 5)

    asyncio.run(run_for(1.0))
    # Opened at about 0, 0.05, 0.15, 0.35 and 0.75 s: a handful of times, not a busy loop.
    assert 3 <= source.stats.connects <= 8, source.stats
    assert source.stats.disconnects == source.stats.connects
    assert source.stats.connected is False
