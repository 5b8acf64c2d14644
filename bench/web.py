"""What the live page costs the daemon, measured against the same daemon with the page disabled.

    python -m bench.web [--seconds 20] [--repeats 3]

Three conditions, run side by side (three daemons at once, sampled over the same seconds) so drift on
this machine hits all of them alike, --repeats times:
  A. [web] disabled;  B. [web] enabled, no page open;  C. [web] enabled, one viewer on the WebSocket.
Each run is the real daemon replaying the EMG recording at real time (1 kHz x 3 channels, looped) with
the camera on a folder of face photos framed at 640x480 (bench.face_frame), at 10 fps. The viewer is an
aiohttp WebSocket client in this process that reads every message, as the page does (the browser's own
CPU is not the daemon's).
Each daemon's CPU (user + system, from /proc) is sampled once a second: per run the median and p99 of
those 1-second shares and the CPU seconds over the run; across runs the median. Extra = B - A, C - A.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

from bench.daemon import proc_cpu_s
from tests.harness import Daemon, Mosquitto, daemon_config, free_port, replay_emg

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared" / "data"
CONDITIONS = ("A: web disabled", "B: web enabled, no viewer", "C: web enabled, 1 viewer")


class Viewer(threading.Thread):
    """Reads the live WebSocket like the page does, counting frames."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.frames = 0
        self.messages = 0
        self.stop_event = threading.Event()

    def run(self) -> None:
        asyncio.run(self._read())

    async def _read(self) -> None:
        import aiohttp

        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(self.url, origin=self.url.replace("ws://", "http://").rsplit("/", 1)[0]) as ws,
        ):
            while not self.stop_event.is_set():
                try:
                    msg = await ws.receive(timeout=0.5)
                except TimeoutError:
                    continue
                if msg.type == aiohttp.WSMsgType.BINARY:
                    self.frames += 1
                elif msg.type != aiohttp.WSMsgType.TEXT:
                    break
                self.messages += 1


class Running:
    """One daemon of a condition, with its broker and (condition C) its viewer."""

    def __init__(self, tmp: Path, condition: int) -> None:
        self.condition = condition
        work = Path(tempfile.mkdtemp(prefix=f"web{condition}-", dir=tmp))
        photos = work / "photos"
        photos.mkdir()
        # A camera's frames: the face photos framed at 640x480, as bench.daemon's video does.
        import cv2

        from bench.face_frame import build_frames

        images, names = build_frames(SHARED / "faces")
        for frame, name in zip(images, names, strict=True):
            cv2.imwrite(str(photos / f"{Path(name).stem}.png"), frame)
        yunet = SHARED / "models" / "face_detection_yunet_2023mar.onnx"
        self.port = free_port()
        sections = (
            replay_emg(SHARED / "emg" / "emg_train.csv", speed=1, loop=True)
            + f'\n[camera]\nsource = "images"\npath = "{photos}"\nfps = 10\nloop = true\n'
            + f'\n[face]\ndetector_model = "{yunet}"\n'
            + (f"\n[web]\nenabled = true\nport = {self.port}\n" if condition > 0 else "")
        )
        self.broker = Mosquitto(work / "broker").start()
        self.daemon = Daemon(daemon_config(work, self.broker.port, emg=sections, stats_interval_s=5), work)
        self.viewer: Viewer | None = None

    def wait_ready(self) -> None:
        deadline = time.monotonic() + 60
        while "running as" not in self.daemon.log:
            assert self.daemon.proc.poll() is None and time.monotonic() < deadline, self.daemon.log[-2000:]
            time.sleep(0.1)
        if self.condition == 2:
            urllib.request.urlopen(f"http://127.0.0.1:{self.port}/", timeout=5).read()
            self.viewer = Viewer(f"ws://127.0.0.1:{self.port}/ws")
            self.viewer.start()

    def stop(self) -> None:
        if self.viewer is not None:
            self.viewer.stop_event.set()
            self.viewer.join(5)
        self.daemon.stop()
        self.broker.stop()


def run_together(tmp: Path, seconds: float, warmup: float) -> list[dict[str, Any]]:
    """The three conditions side by side, sampled over the same seconds: the machine's drift (other
    processes, thermal state) hits all three alike."""
    running = [Running(tmp, condition) for condition in range(3)]
    try:
        for r in running:
            r.wait_ready()
        time.sleep(warmup)
        pids = [r.daemon.proc.pid for r in running]
        frames0 = [r.viewer.frames if r.viewer else 0 for r in running]
        start = [proc_cpu_s(pid) for pid in pids]
        t_start = time.monotonic()
        prev, t_prev = list(start), t_start
        shares: list[list[float]] = [[] for _ in running]
        while time.monotonic() - t_start < seconds:
            time.sleep(1.0)
            now, t = [proc_cpu_s(pid) for pid in pids], time.monotonic()
            for i in range(len(running)):
                shares[i].append(100 * (now[i] - prev[i]) / (t - t_prev))
            prev, t_prev = now, t
        wall = t_prev - t_start
        frames = [(r.viewer.frames - f0) if r.viewer else 0 for r, f0 in zip(running, frames0, strict=True)]
    finally:
        for r in running:
            r.stop()
    return [
        {
            "condition": i,
            "cpu_percent": 100 * (prev[i] - start[i]) / wall,
            "cpu_seconds": prev[i] - start[i],
            "wall_seconds": wall,
            "median_1s": float(np.median(shares[i])),
            "p99_1s": float(np.percentile(shares[i], 99)),
            "viewer_fps": frames[i] / wall,
        }
        for i in range(len(running))
    ]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=20.0, help="measured seconds per run")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds after start-up before measuring")
    parser.add_argument("--repeats", type=int, default=3, help="runs per condition, interleaved")
    args = parser.parse_args()
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-web-") as tmp:
        for r in range(args.repeats):
            for res in run_together(Path(tmp), args.seconds, args.warmup):
                runs.append(res)
                condition = res["condition"]
                print(
                    f"run {r + 1} {CONDITIONS[condition]:28s} cpu {res['cpu_percent']:6.2f}% of one core "
                    f"({res['cpu_seconds']:.2f} s in {res['wall_seconds']:.1f} s), 1-s median "
                    f"{res['median_1s']:.2f}% p99 {res['p99_1s']:.2f}%, viewer {res['viewer_fps']:.2f} fps",
                    flush=True,
                )
    print()
    header = ("cpu % (median of runs)", "1-s median", "1-s p99", "cpu s", "fps")
    print(
        f"{'condition':30s} {header[0]:>24s} {header[1]:>11s} {header[2]:>8s} {header[3]:>7s} {header[4]:>5s}"
    )
    medians = []
    for condition, name in enumerate(CONDITIONS):
        rows = [r for r in runs if r["condition"] == condition]

        def med(key: str, rows: list[dict[str, Any]] = rows) -> float:
            return float(statistics.median(r[key] for r in rows))

        medians.append(med("cpu_percent"))
        print(
            f"{name:30s} {med('cpu_percent'):24.2f} {med('median_1s'):11.2f} {med('p99_1s'):8.2f} "
            f"{med('cpu_seconds'):7.2f} {med('viewer_fps'):5.2f}"
        )
    print()
    print(f"extra, web enabled without viewer: {medians[1] - medians[0]:+.2f}% of one core (budget 0.5%)")
    print(f"extra, one viewer:                 {medians[2] - medians[0]:+.2f}% of one core (budget 5%)")


if __name__ == "__main__":
    main()
