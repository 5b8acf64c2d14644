"""edge.sources.camera: file and folder sources on real photos, backoff, pause, and latest-wins hand-off."""

from __future__ import annotations

import asyncio
import itertools
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import cv2
import numpy as np
import pytest
from numpy.typing import NDArray

from edge.config.camera import CameraConfig, redact_url
from edge.queues import LatestSlot
from edge.sources.camera import (
    CameraError,
    Frame,
    ImageFolderCamera,
    OpenCvCamera,
    Picamera2Camera,
    ThreadedCamera,
    VideoFileCamera,
    make_camera,
)
from tests.conftest import shared_file

# Three photos of distinct sizes, so a frame's shape tells which one it is; names fix the order.
PHOTOS = {
    "01_cat.png": ("skimage_chelsea_cat_noface.png", (300, 451, 3)),
    "02_hopper.jpg": ("matplotlib_grace_hopper.jpg", (600, 512, 3)),
    "03_astronaut.png": ("skimage_astronaut.png", (512, 512, 3)),
}
SHAPES = [shape for _, shape in PHOTOS.values()]


class RecordingSlot(LatestSlot[Frame]):
    """Sees every frame put, whether or not a consumer ever takes it."""

    def __init__(self) -> None:
        super().__init__()
        self.frames: list[Frame] = []

    def put(self, item: Frame) -> None:
        self.frames.append(item)
        super().put(item)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    images = tmp_path / "images"
    images.mkdir()
    for name, (source, _) in PHOTOS.items():
        (images / name).symlink_to(shared_file(f"faces/{source}"))
    (images / "notes.txt").write_text("not an image")
    return images


async def wait_until(condition: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        await asyncio.sleep(0.01)
    return condition()


async def stop_and_join(camera: ThreadedCamera, task: asyncio.Task[None], within_s: float = 2.0) -> float:
    t0 = time.monotonic()
    camera.stop()
    await asyncio.wait_for(task, within_s)
    return time.monotonic() - t0


# --- image folder --------------------------------------------------------------------------------------


def test_image_folder_in_order_then_ends(folder: Path) -> None:
    async def scenario() -> None:
        camera = ImageFolderCamera(folder, loop=False, interval_s=0.02)
        slot = RecordingSlot()
        await asyncio.wait_for(camera.run(slot), 10)
        assert [f.image.shape for f in slot.frames] == SHAPES
        assert [f.index for f in slot.frames] == [0, 1, 2]
        assert all(f.image.dtype == np.uint8 for f in slot.frames)
        assert slot.frames[0].t < slot.frames[1].t < slot.frames[2].t
        assert camera.stats.frames_captured == camera.stats.frames_delivered == 3
        assert camera.stats.opens == 1 and not camera.available

    asyncio.run(scenario())


def test_image_folder_loops(folder: Path) -> None:
    async def scenario() -> None:
        camera = ImageFolderCamera(folder, loop=True, interval_s=0.01)
        slot = RecordingSlot()
        task = asyncio.create_task(camera.run(slot))
        assert await wait_until(lambda: len(slot.frames) >= 8, 10)
        assert camera.available
        await stop_and_join(camera, task)
        assert [f.image.shape for f in slot.frames[:8]] == (SHAPES * 3)[:8]

    asyncio.run(scenario())


def test_image_folder_paces_itself(folder: Path) -> None:
    async def scenario() -> None:
        camera = ImageFolderCamera(folder, loop=True, interval_s=0.2)
        task = asyncio.create_task(camera.run(LatestSlot()))
        await asyncio.sleep(1.0)
        await stop_and_join(camera, task)
        # About 5 in 1 s (first at once); never a busy loop.
        assert 3 <= camera.stats.frames_captured <= 7

    asyncio.run(scenario())


def test_empty_folder_is_an_open_failure(tmp_path: Path) -> None:
    async def scenario() -> None:
        camera = ImageFolderCamera(tmp_path, loop=True, reconnect_min_s=0.1, reconnect_max_s=0.2)
        task = asyncio.create_task(camera.run(LatestSlot()))
        assert await wait_until(lambda: camera.stats.open_failures >= 2, 5)
        assert not camera.available
        assert camera.stats.last_error is not None and "no .jpg" in camera.stats.last_error
        await stop_and_join(camera, task)

    asyncio.run(scenario())


def test_unreadable_image_is_skipped(folder: Path) -> None:
    (folder / "02b_broken.jpg").write_bytes(b"not a jpeg")

    async def scenario() -> None:
        camera = ImageFolderCamera(folder, loop=False, interval_s=0.0)
        slot = RecordingSlot()
        await asyncio.wait_for(camera.run(slot), 10)
        assert [f.image.shape for f in slot.frames] == SHAPES
        assert camera.stats.read_failures == 1
        assert camera.stats.last_error is not None and "02b_broken.jpg" in camera.stats.last_error

    asyncio.run(scenario())


# --- video file ----------------------------------------------------------------------------------------


@pytest.fixture
def video(tmp_path: Path) -> Path:
    path = tmp_path / "face.avi"
    photo = cv2.imread(str(shared_file("faces/skimage_astronaut.png")))
    assert photo is not None
    face = cv2.resize(photo, (640, 480))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 30.0, (640, 480))
    assert writer.isOpened()
    for i in range(30):
        frame = face.copy()
        cv2.putText(frame, str(i), (20, 60), cv2.FONT_HERSHEY_SIMPLEX, 2, (0, 255, 0), 3)
        writer.write(frame)
    writer.release()
    return path


def test_video_file_delivers_every_frame_then_ends(video: Path) -> None:
    async def scenario() -> None:
        camera = VideoFileCamera(video, loop=False, realtime=False)
        slot = RecordingSlot()
        await asyncio.wait_for(camera.run(slot), 20)
        assert len(slot.frames) == 30
        assert all(f.image.shape == (480, 640, 3) for f in slot.frames)
        assert [f.index for f in slot.frames] == list(range(30))
        assert camera.stats.frames_captured == camera.stats.frames_delivered == 30
        assert not camera.available

    asyncio.run(scenario())


def test_video_file_realtime_with_max_fps(video: Path) -> None:
    async def scenario() -> None:
        # 30 fps file, at most 10 fps wanted: every third frame, at the file's pace (about 1 s in all).
        camera = VideoFileCamera(video, loop=False, realtime=True, max_fps=10)
        slot = RecordingSlot()
        t0 = time.monotonic()
        await asyncio.wait_for(camera.run(slot), 20)
        assert len(slot.frames) == 10
        assert time.monotonic() - t0 >= 0.85
        gaps = np.diff([f.t for f in slot.frames])
        assert gaps.min() > 0.05

    asyncio.run(scenario())


def test_video_file_loops(video: Path) -> None:
    async def scenario() -> None:
        camera = VideoFileCamera(video, loop=True, realtime=False)
        slot = RecordingSlot()
        task = asyncio.create_task(camera.run(slot))
        assert await wait_until(lambda: len(slot.frames) >= 45, 20)
        await stop_and_join(camera, task)
        assert camera.stats.opens == 1  # a rewind is not a reconnect

    asyncio.run(scenario())


def test_missing_video_file_is_unavailable(tmp_path: Path) -> None:
    async def scenario() -> None:
        camera = VideoFileCamera(tmp_path / "absent.avi", reconnect_min_s=0.1, reconnect_max_s=0.2)
        task = asyncio.create_task(camera.run(LatestSlot()))
        assert await wait_until(lambda: camera.stats.open_failures >= 2, 5)
        assert not camera.available and "absent.avi" in (camera.stats.last_error or "")
        await stop_and_join(camera, task)

    asyncio.run(scenario())


# --- latest wins ---------------------------------------------------------------------------------------


def test_slow_consumer_only_sees_newer_frames(video: Path) -> None:
    async def scenario() -> None:
        camera = VideoFileCamera(video, loop=True, realtime=False)
        slot: LatestSlot[Frame] = LatestSlot()
        task = asyncio.create_task(camera.run(slot))
        seen: list[Frame] = []
        for _ in range(10):
            seen.append(await asyncio.wait_for(slot.get(), 5))
            await asyncio.sleep(0.05)  # a consumer much slower than the source
        await stop_and_join(camera, task)
        assert slot.stats.superseded > 0
        indices = [f.index for f in seen]
        assert indices == sorted(set(indices)), indices  # strictly newer every time
        assert indices[-1] - indices[0] > len(seen)  # frames were skipped, not queued
        assert all(b.t > a.t for a, b in itertools.pairwise(seen))

    asyncio.run(scenario())


# --- devices that are not there ------------------------------------------------------------------------


@pytest.mark.parametrize("target", [99, "/dev/video99"], ids=["index", "path"])
def test_missing_opencv_camera_backs_off(target: int | str) -> None:
    async def scenario() -> None:
        camera = OpenCvCamera(target, reconnect_min_s=0.5, reconnect_max_s=5.0)
        task = asyncio.create_task(camera.run(LatestSlot()))
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            assert not camera.available
            await asyncio.sleep(0.05)
        # Attempts at 0, 0.5, 1.5 s (then 3.5 s): a handful, not a busy loop.
        assert 2 <= camera.stats.open_failures <= 6, camera.stats
        assert camera.stats.opens == 0 and camera.stats.frames_captured == 0
        assert "cannot open camera" in (camera.stats.last_error or "")
        assert await stop_and_join(camera, task) < 1.0  # wakes from the backoff sleep at once

    asyncio.run(scenario())


def test_digit_string_means_device_index() -> None:
    assert OpenCvCamera("0").target == 0
    assert OpenCvCamera("rtsp://cam.lan/stream").target == "rtsp://cam.lan/stream"


def test_picamera2_missing_is_unavailable_not_a_crash(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "picamera2", None)  # what an import looks like off a Pi

    async def scenario() -> None:
        camera = Picamera2Camera(640, 480, reconnect_min_s=0.1, reconnect_max_s=0.2)
        task = asyncio.create_task(camera.run(LatestSlot()))
        assert await wait_until(lambda: camera.stats.open_failures >= 2, 5)
        assert not camera.available and not task.done()
        error = camera.stats.last_error or ""
        assert "picamera2 is not installed" in error and "apt install python3-picamera2" in error
        await stop_and_join(camera, task)

    asyncio.run(scenario())


class FakePicamera2:
    """Just enough of picamera2.Picamera2 to drive Picamera2Camera without a Pi."""

    instances: ClassVar[list[FakePicamera2]] = []
    lores_supported = True

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.config: dict[str, Any] = {}
        FakePicamera2.instances.append(self)

    def create_video_configuration(
        self, main: dict[str, Any], lores: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        return {"main": dict(main), "lores": dict(lores) if lores else None}

    def align_configuration(self, config: dict[str, Any]) -> None:
        self.calls.append("align")

    def configure(self, config: dict[str, Any]) -> None:
        if config["lores"] is not None and not self.lores_supported:
            raise RuntimeError("lores stream not supported")
        self.config = config
        self.calls.append("configure")

    def start(self) -> None:
        self.calls.append("start")

    def capture_array(self, stream: str) -> NDArray[np.uint8]:
        time.sleep(0.01)  # the camera paces reads
        self.calls.append(f"capture:{stream}")
        width, height = self.config[stream]["size"]
        if stream == "lores":
            # YUV420 with row padding to a 64-byte stride: Y rows first, then U and V.
            array = np.full((height * 3 // 2, (width + 63) // 64 * 64), 128, np.uint8)
            array[:height, :width] = 77
            return array
        return np.full((height, width, 3), (1, 2, 3), np.uint8)

    def stop(self) -> None:
        self.calls.append("stop")

    def close(self) -> None:
        self.calls.append("close")


@pytest.fixture
def fake_picamera2(monkeypatch: pytest.MonkeyPatch) -> type[FakePicamera2]:
    module = types.ModuleType("picamera2")
    module.Picamera2 = FakePicamera2  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "picamera2", module)
    monkeypatch.setattr(FakePicamera2, "instances", [])
    return FakePicamera2


def test_picamera2_lores_y_plane(fake_picamera2: type[FakePicamera2]) -> None:
    async def scenario() -> None:
        camera = Picamera2Camera(100, 60)
        slot = RecordingSlot()
        task = asyncio.create_task(camera.run(slot))
        assert await wait_until(lambda: len(slot.frames) >= 3, 5)
        assert camera.available
        await stop_and_join(camera, task)
        frame = slot.frames[0].image
        assert frame.shape == (60, 100, 3) and frame.dtype == np.uint8 and (frame == 77).all()
        cam = fake_picamera2.instances[0]
        assert cam.config["lores"] == {"size": (100, 60), "format": "YUV420"}
        assert cam.calls[-2:] == ["stop", "close"]

    asyncio.run(scenario())


def test_picamera2_main_stream_without_lores(
    fake_picamera2: type[FakePicamera2], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fake_picamera2, "lores_supported", False)

    async def scenario() -> None:
        camera = Picamera2Camera(100, 60)
        slot = RecordingSlot()
        task = asyncio.create_task(camera.run(slot))
        assert await wait_until(lambda: len(slot.frames) >= 1, 5)
        await stop_and_join(camera, task)
        assert slot.frames[0].image.shape == (60, 100, 3)
        assert (slot.frames[0].image[0, 0] == (1, 2, 3)).all()
        assert "capture:main" in fake_picamera2.instances[0].calls

    asyncio.run(scenario())


def test_picamera2_pause_releases_the_camera(fake_picamera2: type[FakePicamera2]) -> None:
    async def scenario() -> None:
        camera = Picamera2Camera(100, 60)
        task = asyncio.create_task(camera.run(LatestSlot()))
        assert await wait_until(lambda: camera.stats.frames_captured >= 2, 5)
        camera.pause()
        assert await wait_until(lambda: not camera.stats.connected, 2)
        first = fake_picamera2.instances[0]
        assert first.calls[-2:] == ["stop", "close"]
        captured = camera.stats.frames_captured
        await asyncio.sleep(0.3)
        assert camera.stats.frames_captured == captured and len(fake_picamera2.instances) == 1
        camera.resume()
        assert await wait_until(lambda: camera.stats.frames_captured > captured, 5)
        assert len(fake_picamera2.instances) == 2  # a fresh open, as after a reboot
        await stop_and_join(camera, task)

    asyncio.run(scenario())


# --- privacy pause -------------------------------------------------------------------------------------


def test_pause_stops_capture_and_resume_restarts(folder: Path) -> None:
    async def scenario() -> None:
        camera = ImageFolderCamera(folder, loop=True, interval_s=0.02)
        slot = RecordingSlot()
        task = asyncio.create_task(camera.run(slot))
        assert await wait_until(lambda: camera.stats.frames_captured >= 3, 5)

        camera.pause()
        assert not camera.available
        # At most one frame already being read finishes; it is captured but never delivered.
        assert await wait_until(lambda: not camera.stats.connected, 2)
        captured, delivered, opens = (
            camera.stats.frames_captured,
            len(slot.frames),
            camera.stats.opens,
        )
        await asyncio.sleep(0.6)
        assert camera.stats.frames_captured == captured
        assert len(slot.frames) == delivered == camera.stats.frames_delivered
        assert camera.stats.opens == opens and camera.stats.open_failures == 0
        assert camera.paused and not camera.available

        camera.resume()
        assert await wait_until(lambda: camera.stats.frames_captured > captured + 2, 5)
        assert camera.available and camera.stats.opens == opens + 1
        await stop_and_join(camera, task)

    asyncio.run(scenario())


def test_stop_while_paused(folder: Path) -> None:
    async def scenario() -> None:
        camera = ImageFolderCamera(folder, loop=True, interval_s=0.02)
        camera.pause()
        task = asyncio.create_task(camera.run(LatestSlot()))
        await asyncio.sleep(0.2)
        assert camera.stats.opens == 0 and camera.stats.frames_captured == 0
        assert await stop_and_join(camera, task) < 1.0

    asyncio.run(scenario())


# --- from the config -----------------------------------------------------------------------------------


def test_make_camera(tmp_path: Path) -> None:
    assert make_camera(CameraConfig()) is None
    assert make_camera(CameraConfig(source="off", path="0")) is None

    usb = make_camera(CameraConfig(source="opencv", path="2", width=320, height=240))
    assert isinstance(usb, OpenCvCamera) and (usb.target, usb.width, usb.height) == (2, 320, 240)

    folder = make_camera(CameraConfig(source="images", path=str(tmp_path), fps=4, loop=True))
    assert isinstance(folder, ImageFolderCamera) and folder.interval_s == 0.25 and folder.loop

    video = make_camera(
        CameraConfig(source="file", path="v.avi", fps=5, reconnect_min_s=1, reconnect_max_s=2)
    )
    assert isinstance(video, VideoFileCamera) and video.max_fps == 5 and video.realtime
    assert (video.reconnect_min_s, video.reconnect_max_s) == (1, 2)

    assert isinstance(make_camera(CameraConfig(source="picamera2")), Picamera2Camera)


@pytest.mark.parametrize(
    ("target", "shown"),
    [
        ("rtsp://admin:hunter2@10.0.0.5:554/live", "rtsp://***@10.0.0.5:554/live"),
        ("http://token@cam.local/x.mjpg", "http://***@cam.local/x.mjpg"),
        ("rtsp://10.0.0.5/live", "rtsp://10.0.0.5/live"),
        ("/dev/video2", "/dev/video2"),
        (0, 0),
    ],
)
def test_stream_credentials_are_redacted(target: int | str, shown: int | str) -> None:
    assert redact_url(target) == shown
    if isinstance(target, str) and target.startswith("rtsp://admin"):
        assert CameraConfig(source="opencv", path=target).display_path == shown
        camera = OpenCvCamera("rtsp://admin:hunter2@127.0.0.1:9/live")
        with pytest.raises(CameraError) as err:
            camera._open()
        assert "hunter2" not in str(err.value) and "***@127.0.0.1:9" in str(err.value)
