"""Whole-daemon benchmarks against a real mosquitto, on this machine.

    python -m bench.daemon [--seconds 60] [--startup-runs 10]
    python -m bench.daemon --emg-only --rate 4000 --seconds 30 --repeats 5 --baseline-rev HEAD

* latency: the last sample of a window is written to a pseudo-terminal -> the event it triggers
  arrives at an MQTT subscriber (p50, p99). Peer in the same run: the bare broker round trip
  (publish -> subscriber) on the same mosquitto, i.e. the floor any MQTT daemon pays.
* CPU (user + system seconds of the daemon process / wall seconds) and peak RSS of the daemon
  while streaming 3 channels at --rate lines/s (1 kHz by default).
* start-up: process start -> READY=1 on $NOTIFY_SOCKET.
* replay: `emotion-edge replay --speed max` throughput, as a multiple of real time.

--emg-only measures just the first item, --repeats times (medians reported). --baseline-rev REV
runs, alternately with the working tree in the same conditions, a daemon whose serial reader
(the files in BASELINE_FILES) comes from git revision REV and everything else from the working
tree: a before/after of the reader alone.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
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
# The EMG serial reader: what --baseline-rev takes from the older revision.
BASELINE_FILES = (
    "edge/sources/serial_emg.py",
    "edge/sources/line_protocol.py",
    "edge/sources/chunk.py",
    "edge/queues.py",
)


def baseline_tree(tmp: Path, rev: str) -> Path:
    """A copy of the working tree's ``edge`` package with BASELINE_FILES as they were at ``rev``."""
    root = tmp / f"baseline-{rev.replace('/', '_')}"
    shutil.copytree(REPO / "edge", root / "edge", ignore=shutil.ignore_patterns("__pycache__"))
    (root / "edge" / "models").symlink_to(REPO / "models")  # edge.models maps to models/ in a checkout
    for name in BASELINE_FILES:
        text = subprocess.run(
            ["git", "show", f"{rev}:{name}"], cwd=REPO, capture_output=True, check=True
        ).stdout
        (root / name).write_bytes(text)
    # The daemon must import this copy, not the checkout (the editable install maps edge there).
    probe = subprocess.run(
        [sys.executable, "-c", "import edge.sources.serial_emg as m, edge.paths as p; print(m.__file__)"],
        cwd=REPO,
        env={**os.environ, **edge_from(root)},
        capture_output=True,
        text=True,
        check=True,
    )
    assert Path(probe.stdout.strip()) == root / BASELINE_FILES[0], probe.stdout
    return root


def edge_from(tree: Path | None) -> dict[str, str]:
    """Environment for a daemon that imports ``edge`` from ``tree`` (None: this checkout).

    The daemon runs ``python -m edge.cli`` in the checkout, which puts the checkout first on
    sys.path; PYTHONSAFEPATH leaves it out, so PYTHONPATH decides.
    """
    if tree is None:
        return {}
    return {"PYTHONSAFEPATH": "1", "PYTHONPATH": str(tree)}


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
        self.batch = 5  # lines per write: every 5 ms at 1 kHz, every 1.25 ms at 4 kHz

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
    tmp: Path,
    csv: Path,
    seconds: float,
    camera: str = "",
    label: str = "",
    rate: float = 1000.0,
    edge_tree: Path | None = None,
) -> tuple[list[dict[str, Any]], dict[str, float]]:
    tmp = Path(tempfile.mkdtemp(prefix=f"{(label or 'emg').strip().replace(' ', '_')}-", dir=tmp))
    broker = Mosquitto(tmp / "broker").start()
    sub = Subscriber(broker.port, [f"{BASE}/event", "bench/ping"])
    master, slave = os.openpty()
    import tty

    tty.setraw(slave)
    link = tmp / "ttyEMG"
    link.symlink_to(os.ttyname(slave))
    emg = (
        f'[emg]\nsource = "serial"\nsample_rate_hz = {rate:g}\n\n'
        f'[emg.serial]\nport = "{link}"\nvalue_max = 1023\n'
    )
    config = daemon_config(tmp, broker.port, emg=emg + camera, stats_interval_s=5)
    daemon = Daemon(config, tmp, env=edge_from(edge_tree))
    rows = []
    try:
        deadline = time.monotonic() + 20
        while "EMG serial connected" not in daemon.log and time.monotonic() < deadline:
            time.sleep(0.05)
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
            "cpu_seconds": cpu1 - cpu0,
            "wall_seconds": t1 - t0,
            "rate_hz": rate,
            "latency_p50_ms": rows[0]["median_us"] / 1000,
            "latency_p99_ms": rows[0]["p99_us"] / 1000,
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


def bench_emg_only(
    tmp: Path, csv: Path, seconds: float, rate: float, repeats: int, baseline_rev: str | None
) -> dict[str, Any]:
    """The EMG-only latency/CPU run, ``repeats`` times per variant, the variants alternating."""
    variants: list[tuple[str, Path | None]] = [("working tree", None)]
    if baseline_rev:
        variants.insert(0, (f"serial reader at {baseline_rev}", baseline_tree(tmp, baseline_rev)))
    runs: dict[str, list[dict[str, float]]] = {name: [] for name, _ in variants}
    for i in range(repeats):
        for name, tree in variants if i % 2 == 0 else variants[::-1]:
            _, res = bench_latency_cpu_memory(tmp, csv, seconds, rate=rate, edge_tree=tree)
            runs[name].append(res)
            print(
                f"run {i + 1}/{repeats} {name:28s} CPU {res['cpu_percent_of_one_core']:5.2f}% "
                f"({res['cpu_seconds']:.2f} s CPU in {res['wall_seconds']:.1f} s); "
                f"latency p50 {res['latency_p50_ms']:.1f} ms, p99 {res['latency_p99_ms']:.1f} ms; "
                f"{res['events']:.0f} events",
                flush=True,
            )
    summary = {}
    for name, results in runs.items():

        def med(key: str, results: list[dict[str, float]] = results) -> float:
            return statistics.median(r[key] for r in results)

        cpu = [r["cpu_percent_of_one_core"] for r in results]
        summary[name] = {
            "cpu_percent_median": med("cpu_percent_of_one_core"),
            "cpu_percent_min": min(cpu),
            "cpu_percent_max": max(cpu),
            "cpu_seconds_median": med("cpu_seconds"),
            "latency_p50_ms_median": med("latency_p50_ms"),
            "latency_p99_ms_median": med("latency_p99_ms"),
            "latency_p99_ms_max": max(r["latency_p99_ms"] for r in results),
            "peak_rss_mb_median": med("peak_rss_mb"),
            "runs": results,
        }
    return {"rate_hz": rate, "seconds": seconds, "repeats": repeats, "variants": summary}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data", type=Path, default=REPO.parent / "shared" / "data" / "emg" / "emg_train.csv"
    )
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--rate", type=float, default=1000.0, help="EMG lines per second (3 channels)")
    parser.add_argument("--startup-runs", type=int, default=10)
    parser.add_argument("--json", type=Path, help="also write results here")
    parser.add_argument(
        "--camera-yunet",
        type=Path,
        default=REPO.parent / "shared" / "data" / "models" / "face_detection_yunet_2023mar.onnx",
        help="also run EMG + a 15 fps camera (video file) with this YuNet model",
    )
    parser.add_argument("--emg-only", action="store_true", help="only the EMG latency/CPU run")
    parser.add_argument("--repeats", type=int, default=1, help="with --emg-only: runs per variant")
    parser.add_argument(
        "--baseline-rev",
        help="with --emg-only: also run the serial reader from this git revision, alternating",
    )
    args = parser.parse_args()
    if (args.repeats != 1 or args.baseline_rev) and not args.emg_only:
        parser.error("--repeats and --baseline-rev go with --emg-only")
    khz = f"{args.rate / 1000:g} kHz"
    if args.emg_only:
        with tempfile.TemporaryDirectory() as d:
            result = bench_emg_only(
                Path(d), args.data, args.seconds, args.rate, args.repeats, args.baseline_rev
            )
        print()
        print(f"EMG only, {khz} x 3 channels on a pty, {args.seconds:g} s per run, {args.repeats} runs each:")
        for name, v in result["variants"].items():
            print(
                f"  {name:28s} CPU median {v['cpu_percent_median']:.2f}% of one core "
                f"(min {v['cpu_percent_min']:.2f}, max {v['cpu_percent_max']:.2f}; "
                f"{v['cpu_seconds_median']:.2f} s CPU per run); "
                f"latency p50 {v['latency_p50_ms_median']:.1f} ms, "
                f"p99 {v['latency_p99_ms_median']:.1f} ms (worst run {v['latency_p99_ms_max']:.1f} ms)"
            )
        if args.json:
            args.json.write_text(json.dumps(result, indent=2))
        return
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        rows, resources = bench_latency_cpu_memory(tmp, args.data, args.seconds, rate=args.rate)
        camera_resources = None
        if args.camera_yunet.is_file():
            video = face_video(tmp, args.seconds + 10)
            camera = (
                f'\n[camera]\nsource = "file"\npath = "{video}"\nfps = 15\n\n'
                f'[face]\ndetector_model = "{args.camera_yunet}"\n'
            )
            cam_rows, camera_resources = bench_latency_cpu_memory(
                tmp, args.data, args.seconds, camera, label=" +camera 15 fps", rate=args.rate
            )
            rows += cam_rows[:1]
        startup = bench_startup(tmp, args.data, args.startup_runs)
        replay = bench_replay(tmp, args.data)
    print(f"latency ({resources['events']} events over {args.seconds:.0f} s of {khz} x 3 channels on a pty)")
    print_table(rows)
    print()
    print_table([startup])
    print()
    print(f"CPU while streaming {khz} x 3: {resources['cpu_percent_of_one_core']:.1f}% of one core")
    print(f"peak RSS (VmHWM): {resources['peak_rss_mb']:.1f} MB")
    if camera_resources is not None:
        print(
            f"EMG {khz} + camera 15 fps (640x480 MJPG file, YuNet + int8 CNN): "
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
