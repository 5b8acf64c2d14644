"""A simulated wearer: plays the EMG board on a pty AND the person doing a calibration session.

    python -m tests.calibration_wearer --csv emg_train.csv --link /tmp/x/ttyEMG \\
        --socket /tmp/x/state/calibration.sock [--start] [--fault flat@2:1] [--cancel-after 5]

It streams ``n,v1,v2,v3`` lines at ``--rate`` lines/s (the board), and follows the daemon's prompts
from the calibration control socket, or with ``--mqtt-port`` from the retained MQTT prompt topic
(the person): while a repetition of label L is being recorded
it streams the next rows of L's *calibration part* (the first ``--cal-fraction`` of each label's
segment in the CSV, wrapping around); at any other time (countdown, rest, no session) it rests.
"neutral" is rest too: the source recording has no neutral face, and a relaxed face is what the
electrodes see between prompts. Rest is a quiet signal: each channel's 5th percentile with a
little Gaussian noise.

The person's mistakes, ``--fault KIND@N:CH`` for the N-th recording (0-based, counting every
recording phase the wearer sees, repeated ones included) on channel CH (0-based):

* ``flat``: the channel holds one value (a detached electrode);
* ``saturated``: the channel sits at the ADC's top for 60% of the samples (clipping);
* ``disconnected``: the channel is pinned at the top rail (a pulled lead);
* ``unplug``: the whole board's cable is pulled for ``--unplug-s`` mid-recording (CH ignored).

``--cancel-after N``: send ``cancel`` when the N-th recording starts. ``--blank-face``: the person
never makes the face asked for (always rests), so no model can tell the labels apart.
After the session ends it prints ``RESULT <json>``; with ``--test-after`` it then streams the
*later part* of each segment in order (``SEGMENT <label> <t>`` before each) and says ``TESTED``.
Then it rests until SIGTERM. Other stdout lines: ``READY``, ``PHASE <phase> <label> <t>``,
``FAULT <kind> <n> <t>``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np

from tests.pty_writer import Pty

FULL_SCALE = 1023.0


def say(*words: object) -> None:
    print(*words, flush=True)


def segments(data: np.ndarray, labels: list[str]) -> dict[str, np.ndarray]:
    out: dict[str, list[np.ndarray]] = {}
    start = 0
    for i in range(1, len(labels) + 1):
        if i == len(labels) or labels[i] != labels[start]:
            out.setdefault(labels[start], []).append(data[start:i])
            start = i
    return {k: np.concatenate(v) for k, v in out.items()}


class Prompts:
    """The daemon's latest snapshot, read from the control socket by a thread."""

    def __init__(self, path: Path, start: bool) -> None:
        deadline = time.monotonic() + 30
        while True:
            try:
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.sock.connect(str(path))
                break
            except OSError:
                self.sock.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        self.snapshot: dict[str, object] = {"phase": "idle"}
        self.lock = threading.Lock()
        self.replies: list[dict[str, object]] = []
        self.sock.sendall(b'{"cmd": "watch"}\n')
        if start:
            self.sock.sendall(b'{"cmd": "start"}\n')
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        with self.sock.makefile("rb") as fh:
            for line in fh:
                msg = json.loads(line)
                with self.lock:
                    if msg.get("type") == "progress":
                        self.snapshot = msg
                    else:
                        self.replies.append(msg)
                        say("REPLY", json.dumps(msg))
                        # Started in the daemon's first moments, before its EMG counts as available:
                        # press Start again, as a person would, for a few seconds.
                        if "no EMG signal" in str(msg.get("error")) and len(self.replies) < 50:
                            threading.Timer(0.2, self.send, ("start",)).start()

    def current(self) -> dict[str, object]:
        with self.lock:
            return self.snapshot

    def send(self, cmd: str) -> None:
        self.sock.sendall(json.dumps({"cmd": cmd}).encode() + b"\n")


class MqttPrompts:
    """The same, from the retained calibration state topic (what a Home Assistant tablet shows);
    start and cancel are the Home Assistant buttons' commands."""

    def __init__(self, port: int, base: str, start: bool) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.base = base
        self.snapshot: dict[str, object] = {"phase": "idle"}
        self.lock = threading.Lock()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"wearer-{os.getpid()}")
        self.client.on_message = self._on_message
        self.start_pending = start
        self.client.connect("127.0.0.1", port)
        self.client.subscribe(f"{base}/calibration/state", qos=1)
        # The button is pressed once the daemon is up and its EMG delivers (as a person would).
        self.client.subscribe(f"{base}/modality/emg/available", qos=1)
        self.client.loop_start()

    def _on_message(self, client: object, userdata: object, msg: Any) -> None:
        if msg.topic.endswith("/modality/emg/available"):
            if msg.payload == b"ON" and self.start_pending:
                self.start_pending = False
                self.send("start")
            return
        with self.lock:
            self.snapshot = json.loads(msg.payload)

    def current(self) -> dict[str, object]:
        with self.lock:
            return self.snapshot

    def send(self, cmd: str) -> None:
        self.client.publish(f"{self.base}/set/calibrate", cmd.upper().encode(), qos=1)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--csv", type=Path, required=True)
    ap.add_argument("--link", type=Path, required=True)
    ap.add_argument("--socket", type=Path, help="follow the prompts on the daemon's control socket")
    ap.add_argument("--mqtt-port", type=int, help="follow them on MQTT (127.0.0.1) instead")
    ap.add_argument("--mqtt-base", default="emotion_edge/test_pi", help="the daemon's base topic")
    ap.add_argument("--rate", type=float, default=1000.0)
    ap.add_argument("--cal-fraction", type=float, default=0.6)
    ap.add_argument("--start", action="store_true", help="start the session over the socket")
    ap.add_argument("--fault", action="append", default=[], metavar="KIND@N:CH")
    ap.add_argument("--unplug-s", type=float, default=1.0)
    ap.add_argument("--cancel-after", type=int, default=None)
    ap.add_argument("--test-after", action="store_true")
    ap.add_argument("--blank-face", action="store_true", help="never make the face asked for: always rest")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    raw = np.loadtxt(args.csv, delimiter=",", skiprows=1, usecols=[1, 2, 3])
    with args.csv.open() as fh:
        fh.readline()
        labels = [line.rstrip("\n").split(",")[4] for line in fh if line.strip()]
    segs = segments(raw, labels)
    cal = {k: v[: int(len(v) * args.cal_fraction)] for k, v in segs.items()}
    later = {k: v[int(len(v) * args.cal_fraction) :] for k, v in segs.items()}
    pos = dict.fromkeys(cal, 0)
    rest_level = np.percentile(raw, 5, axis=0)
    rng = np.random.default_rng(args.seed)
    faults: dict[int, tuple[str, int]] = {}
    for spec in args.fault:
        kind, _, rest = spec.partition("@")
        n, _, ch = rest.partition(":")
        faults[int(n)] = (kind, int(ch or 0))

    def on_term(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, on_term)
    pty = Pty(args.link)
    say("READY", time.monotonic(), args.link, pty.name)
    prompts: Prompts | MqttPrompts | None = None
    if args.mqtt_port is not None:
        prompts = MqttPrompts(args.mqtt_port, args.mqtt_base, args.start)
    counter = 0
    t0 = time.monotonic()
    sent = 0
    recordings = -1  # index of the recording phase in progress
    last_phase: tuple[object, object, object] | None = None
    fault: tuple[str, int] | None = None
    result_said = False
    test_queue: list[tuple[str, np.ndarray]] = [(k, later[k]) for k in later] if args.test_after else []
    test_rows: np.ndarray | None = None
    test_pos = 0
    unplugged_at: float | None = None
    try:
        while True:
            if prompts is None and args.socket is not None and args.socket.exists():
                with contextlib.suppress(OSError):
                    prompts = Prompts(args.socket, args.start)
            snap = prompts.current() if prompts is not None else {"phase": "idle"}
            phase, label = snap.get("phase"), snap.get("label")
            key = (phase, label, snap.get("step"))
            if key != last_phase:
                last_phase = key
                say("PHASE", phase, label, time.monotonic())
                if phase == "record":
                    recordings += 1
                    fault = faults.get(recordings)
                    if fault is not None:
                        say("FAULT", fault[0], recordings, time.monotonic())
                    if args.cancel_after is not None and recordings == args.cancel_after and prompts:
                        prompts.send("cancel")
                else:
                    fault = None
            if phase in ("done", "refused", "failed", "cancelled") and not result_said:
                result_said = True
                say("RESULT", json.dumps(snap))
            if unplugged_at is None and fault is not None and fault[0] == "unplug" and phase == "record":
                args.link.unlink(missing_ok=True)
                pty.close()
                say("UNPLUG", time.monotonic())
                time.sleep(args.unplug_s)
                pty = Pty(args.link)
                say("REPLUG", time.monotonic(), pty.name)
                unplugged_at = time.monotonic()
                t0 = time.monotonic() - sent / args.rate
                fault = None
            due = int((time.monotonic() - t0) * args.rate) - sent
            if due > 0:
                if phase == "record" and isinstance(label, str) and label in cal and not args.blank_face:
                    part = cal[label]
                    idx = (pos[label] + np.arange(due)) % len(part)
                    pos[label] = int((pos[label] + due) % len(part))
                    rows = part[idx].copy()
                elif result_said and (test_queue or test_rows is not None):
                    if test_rows is None:
                        name, test_rows = test_queue.pop(0)
                        test_pos = 0
                        say("SEGMENT", name, time.monotonic())
                    rows = test_rows[test_pos : test_pos + due]
                    test_pos += len(rows)
                    if test_pos >= len(test_rows):
                        test_rows = None
                        if not test_queue:
                            say("TESTED", time.monotonic())
                    if len(rows) < due:
                        rows = np.vstack([rows, rest_level + rng.normal(0, 3, (due - len(rows), 3))])
                else:
                    rows = rest_level + rng.normal(0, 3, (due, 3))
                if fault is not None:
                    kind, ch = fault
                    if kind == "flat":
                        rows[:, ch] = 500.0
                    elif kind == "saturated":
                        rows[rng.random(len(rows)) < 0.6, ch] = FULL_SCALE
                    elif kind == "disconnected":
                        rows[:, ch] = FULL_SCALE
                rows = np.clip(np.round(rows), 0, FULL_SCALE)
                lines = []
                for r in rows:
                    lines.append(b"%d,%d,%d,%d\n" % (counter, r[0], r[1], r[2]))
                    counter = (counter + 1) % (1 << 32)
                pty.write(b"".join(lines))
                sent += due
            time.sleep(0.005)
    finally:
        args.link.unlink(missing_ok=True)
        pty.close()


if __name__ == "__main__":
    sys.exit(main())
