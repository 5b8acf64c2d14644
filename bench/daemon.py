"""Whole-daemon benchmarks against a real mosquitto, on this machine.

    python -m bench.daemon [--seconds 60] [--startup-runs 10]

* latency: the last sample of a window is written to a pseudo-terminal -> the event it triggers
  arrives at an MQTT subscriber (p50, p99). Peer in the same run: the bare broker round trip
  (publish -> subscriber) on the same mosquitto, i.e. the floor any MQTT daemon pays.
* CPU and peak RSS of the daemon while streaming 3 channels at 1 kHz.
* start-up: process start -> READY=1 on $NOTIFY_SOCKET.
* replay: `emotion-edge replay --speed max` throughput, as a multiple of real time.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.stats import print_table, summarize
from edge.recording import load_recording
from tests.harness import Daemon, Mosquitto, Subscriber, daemon_config

REPO = Path(__file__).resolve().parent.parent
BASE = "emotion_edge/test_pi"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class PtyWriter(threading.Thread):
    """Streams alternating emotion segments as ``n,v1,v2,v3`` at ``rate`` Hz, logging write times."""

    def __init__(self, master: int, signal: np.ndarray, rate: float, seconds: float) -> None:
        super().__init__(daemon=True)
        self.master, self.signal, self.rate, self.seconds = master, signal, rate, seconds
        self.write_times = np.zeros(int(rate * seconds) + 1)
        self.batch = 5

    def run(self) -> None:
        t0 = time.monotonic()
        n_total = len(self.write_times) - 1
        n = 0
        while n < n_total:
            due = t0 + (n + self.batch) / self.rate
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            rows = [
                f"{i},{','.join(str(int(v)) for v in self.signal[i % len(self.signal)])}\n"
                for i in range(n, min(n + self.batch, n_total))
            ]
            os.write(self.master, "".join(rows).encode())
            self.write_times[n : n + len(rows)] = time.monotonic()
            n += len(rows)


def alternating_signal(csv: Path, seconds_per_segment: float, rate: float) -> np.ndarray:
    """Segments of the real recording, cycling through the emotions, so episodes change often."""
    rec = load_recording(csv)
    assert rec.labels is not None
    per = int(seconds_per_segment * rate)
    parts = []
    for label in dict.fromkeys(rec.labels.tolist()):
        seg = rec.signal[rec.labels == label]
        parts.append(seg[:per])
    return np.concatenate(parts)


def face_video(tmp: Path, seconds: float, fps: int = 15) -> Path:
    """An MJPG video cycling through real face photos, 640x480 at ``fps``."""
    import cv2

    from bench.face_frame import build_frames

    frames, _ = build_frames(REPO.parent / "shared" / "data" / "faces")
    path = tmp / "faces.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), fps, (640, 480))
    for i in range(int(seconds * fps)):
        writer.write(frames[(i // (2 * fps)) % len(frames)])  # a new face every 2 s
    writer.release()
    return path


def bench_latency_cpu_memory(
    tmp: Path, csv: Path, seconds: float, camera: str = "", label: str = ""
) -> tuple[list[dict[str, Any]], dict[str, float]]:
    tmp = tmp / (label or "emg")
    tmp.mkdir()
    broker = Mosquitto(tmp / "broker").start()
    sub = Subscriber(broker.port, [f"{BASE}/event", "bench/ping"])
    master, slave = os.openpty()
    import tty

    tty.setraw(slave)
    link = tmp / "ttyEMG"
    link.symlink_to(os.ttyname(slave))
    emg = (
        f'[emg]\nsource = "serial"\nsample_rate_hz = 1000\n\n'
        f'[emg.serial]\nport = "{link}"\nvalue_max = 1023\n'
    )
    config = daemon_config(tmp, broker.port, emg=emg + camera, stats_interval_s=5)
    daemon = Daemon(config, tmp)
    rows = []
    try:
        deadline = time.monotonic() + 20
        while "EMG serial connected" not in daemon.log and time.monotonic() < deadline:
            time.sleep(0.05)
        rate = 1000.0
        writer = PtyWriter(master, alternating_signal(csv, 1.5, rate), rate, seconds)
        cpu0, t0 = proc_cpu_s(daemon.proc.pid), time.monotonic()
        writer.start()
        # The peer: bare broker round trips on the same mosquitto, interleaved with the run.
        pinger = Subscriber(broker.port, [])
        ping_lat = []
        while writer.is_alive():
            sent = time.monotonic()
            pinger.client.publish("bench/ping", json.dumps({"t": sent}), qos=1)
            time.sleep(0.1)
        writer.join()
        time.sleep(1.0)
        cpu1, t1 = proc_cpu_s(daemon.proc.pid), time.monotonic()
        rss = proc_peak_rss_mb(daemon.proc.pid)
        for recv_t, topic, payload, _ in list(sub.messages):
            body = json.loads(payload)
            if topic == "bench/ping":
                ping_lat.append((recv_t - body["t"]) * 1e9)
        lat = []
        for recv_t, topic, payload, _ in list(sub.messages):
            if topic != f"{BASE}/event":
                continue
            ev = json.loads(payload)
            idx = ev.get("sample")
            if idx is None or idx >= len(writer.write_times) or writer.write_times[idx] == 0:
                continue
            lat.append((recv_t - writer.write_times[idx]) * 1e9)
        rows.append(
            summarize(
                f"emotion-edge{label}: last sample on pty -> event at subscriber", [int(v) for v in lat]
            )
        )
        rows.append(
            summarize("peer: bare mosquitto publish -> subscriber (QoS 1)", [int(v) for v in ping_lat])
        )
        resources = {
            "cpu_percent_of_one_core": 100 * (cpu1 - cpu0) / (t1 - t0),
            "peak_rss_mb": rss,
            "stream_seconds": seconds,
            "events": len(lat),
        }
        pinger.close()
    finally:
        daemon.stop()
        sub.close()
        broker.stop()
        os.close(master)
        os.close(slave)
    return rows, resources


def bench_startup(tmp: Path, csv: Path, runs: int) -> dict[str, Any]:
    broker = Mosquitto(tmp / "broker-startup").start()
    times = []
    try:
        for i in range(runs):
            sock_path = tmp / f"notify-{i}.sock"
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            sock.bind(str(sock_path))
            sock.settimeout(30)
            run_dir = tmp / f"startup-{i}"
            run_dir.mkdir()
            config = daemon_config(
                run_dir, broker.port, emg=f'[emg]\nsource = "replay"\n\n[emg.replay]\npath = "{csv}"\n'
            )
            t0 = time.monotonic()
            daemon = Daemon(config, run_dir, env={"NOTIFY_SOCKET": str(sock_path)})
            while True:
                msg = sock.recv(4096).decode()
                if "READY=1" in msg.splitlines():
                    times.append(int((time.monotonic() - t0) * 1e9))
                    break
            daemon.stop()
            sock.close()
    finally:
        broker.stop()
    return summarize("start-up: process start -> READY=1", times)


def long_recording(csv: Path, repeats: int, out: Path) -> int:
    """The recording ``repeats`` times over with a contiguous ``sample`` column."""
    rec = load_recording(csv)
    assert rec.labels is not None
    n = 0
    with out.open("w") as fh:
        fh.write("sample,EMG1,EMG2,EMG3,label\n")
        for _ in range(repeats):
            for row, label in zip(rec.signal, rec.labels, strict=True):
                fh.write(f"{n},{row[0]:g},{row[1]:g},{row[2]:g},{label}\n")
                n += 1
    return n


def bench_replay(tmp: Path, csv: Path, repeats: int = 20) -> dict[str, float]:
    """`emotion-edge replay --speed max`: the daemon's own pipeline timing, plus the whole command."""
    path = tmp / "long.csv"
    n_samples = long_recording(csv, repeats, path)
    t0 = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-m", "edge.cli", "replay", str(path), "--speed", "max", "--print-events"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    wall = time.monotonic() - t0
    assert out.returncode == 0, out.stderr[-2000:]
    events = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    line = next(x for x in out.stderr.splitlines() if "replay finished" in x)
    pipeline_x = float(line.rsplit("=", 1)[1].split("x")[0])
    return {
        "samples": n_samples,
        "command_wall_s": wall,
        "command_x_real_time": n_samples / 1000 / wall,
        "pipeline_x_real_time": pipeline_x,
        "events": len(events),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data", type=Path, default=REPO.parent / "shared" / "data" / "emg" / "emg_train.csv"
    )
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--startup-runs", type=int, default=10)
    parser.add_argument("--json", type=Path, help="also write results here")
    parser.add_argument(
        "--camera-yunet",
        type=Path,
        default=REPO.parent / "shared" / "data" / "models" / "face_detection_yunet_2023mar.onnx",
        help="also run EMG + a 15 fps camera (video file) with this YuNet model",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        rows, resources = bench_latency_cpu_memory(tmp, args.data, args.seconds)
        camera_resources = None
        if args.camera_yunet.is_file():
            video = face_video(tmp, args.seconds + 10)
            camera = (
                f'\n[camera]\nsource = "file"\npath = "{video}"\nfps = 15\n\n'
                f'[face]\ndetector_model = "{args.camera_yunet}"\n'
            )
            cam_rows, camera_resources = bench_latency_cpu_memory(
                tmp, args.data, args.seconds, camera, label=" +camera 15 fps"
            )
            rows += cam_rows[:1]
        startup = bench_startup(tmp, args.data, args.startup_runs)
        replay = bench_replay(tmp, args.data)
    print(f"latency ({resources['events']} events over {args.seconds:.0f} s of 1 kHz x 3 channels on a pty)")
    print_table(rows)
    print()
    print_table([startup])
    print()
    print(f"CPU while streaming 1 kHz x 3: {resources['cpu_percent_of_one_core']:.1f}% of one core")
    print(f"peak RSS (VmHWM): {resources['peak_rss_mb']:.1f} MB")
    if camera_resources is not None:
        print(
            f"EMG 1 kHz + camera 15 fps (640x480 MJPG file, YuNet + int8 CNN): "
            f"CPU {camera_resources['cpu_percent_of_one_core']:.1f}% of one core, "
            f"peak RSS {camera_resources['peak_rss_mb']:.1f} MB"
        )
    print(
        f"replay --speed max, {replay['samples']} samples (1 kHz): "
        f"pipeline {replay['pipeline_x_real_time']:.0f}x real time; "
        f"whole command incl. start-up and CSV parsing {replay['command_wall_s']:.2f} s = "
        f"{replay['command_x_real_time']:.0f}x; {replay['events']} events"
    )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "latency": rows,
                    "resources": resources,
                    "camera_resources": camera_resources,
                    "startup": startup,
                    "replay": replay,
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
