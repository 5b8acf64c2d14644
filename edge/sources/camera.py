"""Camera frames, captured in a thread and handed over through a latest-wins slot.

Every kind of camera runs the same blocking loop in its own thread (:class:`ThreadedCamera`): open, read
frames, put each one into a :class:`LatestSlot` so the consumer always gets the newest frame and never a
backlog of stale ones, and reopen with exponential backoff when opening or reading fails.

:meth:`ThreadedCamera.pause` is the privacy switch: it releases the device (the camera LED goes off) and no
frame is captured until :meth:`ThreadedCamera.resume`.

The consumer caps the inference rate (it takes at most ``fps`` frames a second from the slot); file and
image-folder sources also pace themselves so they do not decode frames nobody will look at.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from edge.config.camera import CameraConfig, redact_url
from edge.queues import LatestSlot

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
# Some containers report no frame rate; pacing at a typical camera rate is better than not pacing at all.
FALLBACK_FILE_FPS = 25.0


@dataclass(frozen=True)
class Frame:
    image: NDArray[np.uint8]  # BGR, HxWx3
    t: float  # time.monotonic() at capture
    index: int  # counts captured frames of this source from 0; gaps are frames the consumer never saw


STREAM_TIMEOUT_MS = 5000


@dataclass
class CameraStats:
    connected: bool = False
    opens: int = 0
    open_failures: int = 0
    read_failures: int = 0
    frames_captured: int = 0
    frames_delivered: int = 0
    last_error: str | None = None


class CameraError(Exception):
    """Opening or reading the camera failed; the capture loop backs off and reopens."""


class ThreadedCamera(ABC):
    """The capture loop shared by all camera kinds; subclasses only open, read and close the device.

    Subclass hooks run in the capture thread only. ``_read`` returns None at the end of a finite source
    (the loop then ends and :meth:`run` returns) and raises :class:`CameraError` when the device fails.
    A stopped camera stays stopped: make a new one to capture again.
    """

    name = "camera"

    def __init__(self, *, reconnect_min_s: float = 0.5, reconnect_max_s: float = 5.0) -> None:
        if not 0 < reconnect_min_s <= reconnect_max_s:
            raise ValueError("need 0 < reconnect_min_s <= reconnect_max_s")
        self.reconnect_min_s = reconnect_min_s
        self.reconnect_max_s = reconnect_max_s
        self.stats = CameraStats()
        # One condition guards both flags, so a sleeping capture thread wakes on stop, pause and resume.
        self._cond = threading.Condition()
        self._stopping = False
        self._paused = False
        self._delivering = False
        self._crash: BaseException | None = None

    # --- control, from any thread ----------------------------------------------------------------------

    @property
    def available(self) -> bool:
        """Open and delivering frames (false while paused, reconnecting, or after a finite source ended)."""
        return self.stats.connected and self._delivering and not self._paused

    @property
    def paused(self) -> bool:
        return self._paused

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()

    def pause(self) -> None:
        """Release the device and capture nothing until :meth:`resume`; takes effect within one frame."""
        with self._cond:
            self._paused = True
            self._cond.notify_all()

    def resume(self) -> None:
        with self._cond:
            self._paused = False
            self._cond.notify_all()

    async def run(self, slot: LatestSlot[Frame]) -> None:
        """Capture into ``slot`` until :meth:`stop` or the end of a finite source.

        Callable again after it raised (the supervisor restarts a crashed capture): each run starts
        from a clean stop flag. Stopping is the caller's cancel of this task plus :meth:`stop`.
        """
        with self._cond:
            self._stopping = False
            self._crash = None
        loop = asyncio.get_running_loop()
        done = asyncio.Event()
        thread = threading.Thread(
            target=self._capture_thread, args=(loop, slot, done), name=f"camera-{self.name}", daemon=True
        )
        thread.start()
        try:
            await done.wait()
        finally:
            self.stop()
            # Joined off the loop: a read in progress finishes first (at most one frame time).
            await asyncio.to_thread(thread.join)
        if self._crash is not None:
            # A bug, not a camera fault (those are retried): the caller decides, as with any failed task.
            raise RuntimeError(f"camera {self.name}: capture thread failed") from self._crash

    # --- the capture thread ----------------------------------------------------------------------------

    def _capture_thread(
        self, loop: asyncio.AbstractEventLoop, slot: LatestSlot[Frame], done: asyncio.Event
    ) -> None:
        try:
            self._capture_forever(loop, slot)
        except BaseException as exc:
            self._crash = exc
        finally:
            # Scheduled after every frame put, so run() returns only once all frames are in the slot.
            # RuntimeError: the loop is already closed, so nobody is waiting.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(done.set)

    def _capture_forever(self, loop: asyncio.AbstractEventLoop, slot: LatestSlot[Frame]) -> None:
        delay = self.reconnect_min_s
        while True:
            with self._cond:
                if self._paused:
                    delay = self.reconnect_min_s  # after a resume, the first attempt comes at once
                # Paused: nothing is opened, attempted or counted until resume() or stop().
                self._cond.wait_for(lambda: self._stopping or not self._paused)
                if self._stopping:
                    return
            try:
                self._open()
            except (CameraError, cv2.error) as exc:
                self.stats.open_failures += 1
                self._note_error(str(exc))
                self._sleep(delay)
                delay = min(delay * 2, self.reconnect_max_s)
                continue
            opened_at = time.monotonic()
            self.stats.opens += 1
            self.stats.connected = True
            log.info("camera %s opened", self.name)
            ended = False
            try:
                ended = self._pump(loop, slot)
            except (CameraError, cv2.error) as exc:
                # cv2.error too: a backend or decoder failing is a device fault, worth a reopen.
                self.stats.read_failures += 1
                self._note_error(str(exc))
            finally:
                self.stats.connected = False
                self._delivering = False
                self._close()
            if ended:
                log.info("camera %s: end of input", self.name)
                return
            if self._halted():
                delay = self.reconnect_min_s  # a resume reopens at once
            elif time.monotonic() - opened_at >= self.reconnect_max_s:
                # It worked for a while (a cable pulled, a stream hiccup): reopen at once.
                delay = self.reconnect_min_s
            else:
                # It failed right after opening: back off rather than reopen in a busy loop.
                self._sleep(delay)
                delay = min(delay * 2, self.reconnect_max_s)

    def _pump(self, loop: asyncio.AbstractEventLoop, slot: LatestSlot[Frame]) -> bool:
        """Deliver frames until halted (False) or the end of the input (True)."""
        interval = self._interval_s()
        due = time.monotonic()
        while not self._halted():
            if interval is not None:
                wait = due - time.monotonic()
                if wait > 0 and not self._sleep(wait):
                    return False
                # Never burst to catch up after a slow read: the frames in between are of no use.
                due = max(due + interval, time.monotonic())
            image = self._read()
            if image is None:
                return True
            captured_at = time.monotonic()
            index = self.stats.frames_captured
            self.stats.frames_captured += 1
            if self._halted():
                return False  # paused during the read: this frame must not reach anyone
            try:
                loop.call_soon_threadsafe(slot.put, Frame(image, captured_at, index))
            except RuntimeError:
                return False  # the event loop is gone
            self.stats.frames_delivered += 1
            if not self._delivering:
                self._delivering = True
                self.stats.last_error = None  # working again; the same error later is a new incident
        return False

    def _halted(self) -> bool:
        return self._stopping or self._paused

    def _sleep(self, seconds: float) -> bool:
        """Wait up to ``seconds``; False when woken early by stop() or pause()."""
        with self._cond:
            return not self._cond.wait_for(self._halted, timeout=seconds)

    def _note_error(self, message: str) -> None:
        if message != self.stats.last_error:
            log.warning("camera %s: %s", self.name, message)
        self.stats.last_error = message

    # --- what each kind of camera provides -------------------------------------------------------------

    def _interval_s(self) -> float | None:
        """Seconds between frames for sources that must pace themselves; None: the device paces reads."""
        return None

    @abstractmethod
    def _open(self) -> None: ...

    @abstractmethod
    def _read(self) -> NDArray[np.uint8] | None: ...

    @abstractmethod
    def _close(self) -> None: ...


class _VideoCaptureCamera(ThreadedCamera):
    """A source read through ``cv2.VideoCapture``: devices, URLs and video files."""

    _cap: Any = None

    def _close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


class OpenCvCamera(_VideoCaptureCamera):
    """A USB camera (``0`` or ``"0"``: /dev/video0) or a stream URL, through ``cv2.VideoCapture``."""

    name = "opencv"

    def __init__(
        self,
        target: int | str,
        width: int = 640,
        height: int = 480,
        *,
        reconnect_min_s: float = 0.5,
        reconnect_max_s: float = 5.0,
    ) -> None:
        super().__init__(reconnect_min_s=reconnect_min_s, reconnect_max_s=reconnect_max_s)
        self.target: int | str = int(target) if isinstance(target, str) and target.isdigit() else target
        # Stream URLs may carry user:password; messages (logs, stats on MQTT) get this form instead.
        self.display = redact_url(self.target)
        self.width = width
        self.height = height
        self._cap: Any = None

    def _open(self) -> None:
        if isinstance(self.target, str):
            # A stream that never answers would otherwise block this thread for FFmpeg's default (30 s),
            # longer than systemd waits for a stop.
            timeouts = [
                cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
                STREAM_TIMEOUT_MS,
                cv2.CAP_PROP_READ_TIMEOUT_MSEC,
                STREAM_TIMEOUT_MS,
            ]
            cap = cv2.VideoCapture(self.target, cv2.CAP_ANY, timeouts)
        else:
            cap = cv2.VideoCapture(self.target)
        if not cap.isOpened():
            cap.release()
            raise CameraError(f"cannot open camera {self.display!r}")
        cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.width)
        cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.height)
        # A driver-side queue of frames would be stale by the time we read them; not every backend obeys.
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        self._cap = cap

    def _read(self) -> NDArray[np.uint8] | None:
        ok, image = self._cap.read()
        if not ok or image is None:
            raise CameraError(f"camera {self.display!r} stopped delivering frames")
        return _bgr(image)


class VideoFileCamera(_VideoCaptureCamera):
    """A video file, presented like a camera.

    ``realtime``: frames come at the file's own frame rate rather than as fast as they decode.
    ``max_fps``: with realtime, decode only every n-th frame so at most this many frames a second are
    converted and handed on (the consumer would drop the rest anyway).
    """

    name = "file"

    def __init__(
        self,
        path: Path,
        loop: bool = False,
        realtime: bool = True,
        *,
        max_fps: float | None = None,
        reconnect_min_s: float = 0.5,
        reconnect_max_s: float = 5.0,
    ) -> None:
        super().__init__(reconnect_min_s=reconnect_min_s, reconnect_max_s=reconnect_max_s)
        if max_fps is not None and not max_fps > 0:
            raise ValueError("max_fps must be > 0")
        self.path = Path(path)
        self.loop = loop
        self.realtime = realtime
        self.max_fps = max_fps
        self._cap: Any = None
        self._step = 1
        self._file_fps = FALLBACK_FILE_FPS
        self._position = 0  # frames consumed from the file in this pass

    def _open(self) -> None:
        cap = cv2.VideoCapture(str(self.path))
        if not cap.isOpened():
            cap.release()
            raise CameraError(f"cannot open video file {self.path}")
        fps = float(cap.get(cv2.CAP_PROP_FPS))
        self._file_fps = fps if math.isfinite(fps) and fps > 0 else FALLBACK_FILE_FPS
        self._step = 1
        if self.realtime and self.max_fps is not None:
            self._step = max(1, math.ceil(self._file_fps / self.max_fps - 1e-9))
        if self._position:
            # Reopened after a pause: go on where it stopped rather than replay the start.
            cap.set(cv2.CAP_PROP_POS_FRAMES, self._position)
        self._cap = cap

    def _interval_s(self) -> float | None:
        return self._step / self._file_fps if self.realtime else None

    def _read(self) -> NDArray[np.uint8] | None:
        image = self._next()
        if image is None and self.loop:
            # Reopening rewinds reliably with every backend; seeking to frame 0 does not.
            self._close()
            self._position = 0
            self._open()
            image = self._next()
            if image is None:
                raise CameraError(f"no frames in {self.path}")
        return image

    def _next(self) -> NDArray[np.uint8] | None:
        # grab() without retrieve() skips the colour conversion of frames that would only be dropped.
        for _ in range(self._step - 1):
            if not self._cap.grab():
                return None
            self._position += 1
        ok, image = self._cap.read()
        if not ok or image is None:
            return None
        self._position += 1
        return _bgr(image)


class ImageFolderCamera(ThreadedCamera):
    """Every .jpg/.jpeg/.png in a folder, in name order, one every ``interval_s`` seconds.

    The folder is listed again at each pass, so images added while it runs are picked up with ``loop``.
    An unreadable image is skipped (and counted as a read failure) rather than ending the pass.
    """

    name = "images"

    def __init__(
        self,
        path: Path,
        loop: bool = False,
        interval_s: float = 0.2,
        *,
        reconnect_min_s: float = 0.5,
        reconnect_max_s: float = 5.0,
    ) -> None:
        super().__init__(reconnect_min_s=reconnect_min_s, reconnect_max_s=reconnect_max_s)
        if not interval_s >= 0:
            raise ValueError("interval_s must be >= 0")
        self.path = Path(path)
        self.loop = loop
        self.interval_s = interval_s
        self._files: list[Path] = []
        self._next_file = 0
        self._read_this_pass = 0

    def _open(self) -> None:
        # After a pause the pass goes on where it stopped (the count of images read so far stays put).
        self._files = self._list()
        self._next_file = min(self._next_file, len(self._files))

    def _list(self) -> list[Path]:
        try:
            files = sorted(
                p for p in self.path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
            )
        except OSError as exc:
            raise CameraError(f"cannot list {self.path}: {exc.strerror or exc}") from None
        if not files:
            raise CameraError(f"no {'/'.join(IMAGE_SUFFIXES)} images in {self.path}")
        return files

    def _interval_s(self) -> float | None:
        return self.interval_s

    def _read(self) -> NDArray[np.uint8] | None:
        while True:
            if self._next_file == len(self._files):
                if not self.loop:
                    return None
                if self._read_this_pass == 0:
                    raise CameraError(f"none of the images in {self.path} could be read")
                self._files = self._list()
                self._next_file = 0
                self._read_this_pass = 0
            path = self._files[self._next_file]
            self._next_file += 1
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if image is not None:
                self._read_this_pass += 1
                return _bgr(image)
            self.stats.read_failures += 1
            self._note_error(f"cannot read image {path}")

    def _close(self) -> None:
        self._files = []


class Picamera2Camera(ThreadedCamera):
    """A Raspberry Pi camera through picamera2 (libcamera).

    picamera2 is not on PyPI in a usable form: it comes with Raspberry Pi OS as the apt package
    ``python3-picamera2``; a virtualenv needs ``--system-site-packages`` to see it. It is imported lazily,
    in the capture thread, so nothing else needs it. Frames come from the ISP's small "lores" stream
    (YUV420; its Y plane is the grayscale image, which is all the face models use), or from the main stream
    when the camera has no lores stream.
    """

    name = "picamera2"

    def __init__(
        self,
        width: int = 640,
        height: int = 480,
        *,
        reconnect_min_s: float = 0.5,
        reconnect_max_s: float = 5.0,
    ) -> None:
        super().__init__(reconnect_min_s=reconnect_min_s, reconnect_max_s=reconnect_max_s)
        self.width = width
        self.height = height
        self._cam: Any = None
        self._stream = "lores"
        self._size = (width, height)

    def _open(self) -> None:
        try:
            from picamera2 import Picamera2
        except ImportError as exc:
            raise CameraError(
                f"picamera2 is not installed ({exc}); on a Raspberry Pi: "
                "`sudo apt install python3-picamera2` and a virtualenv made with --system-site-packages"
            ) from None
        try:
            cam = Picamera2()
        except Exception as exc:  # picamera2 raises bare RuntimeError/IndexError when no camera is attached
            raise CameraError(f"cannot open the Pi camera: {exc or type(exc).__name__}") from None
        try:
            self._configure(cam)
            cam.start()
        except Exception as exc:
            cam.close()
            raise CameraError(f"cannot start the Pi camera: {exc or type(exc).__name__}") from None
        self._cam = cam

    def _configure(self, cam: Any) -> None:
        size = (self.width, self.height)
        try:
            config = cam.create_video_configuration(
                main={"size": size, "format": "RGB888"}, lores={"size": size, "format": "YUV420"}
            )
            cam.align_configuration(config)
            cam.configure(config)
            self._stream = "lores"
            self._size = tuple(config["lores"]["size"])
        except Exception as exc:
            log.info("camera picamera2: no lores stream (%s); using the main stream", exc)
            # libcamera's RGB888 is B, G, R in memory: already OpenCV's BGR order.
            config = cam.create_video_configuration(main={"size": size, "format": "RGB888"})
            cam.align_configuration(config)
            cam.configure(config)
            self._stream = "main"
            self._size = tuple(config["main"]["size"])

    def _read(self) -> NDArray[np.uint8] | None:
        try:
            array = self._cam.capture_array(self._stream)
        except Exception as exc:
            raise CameraError(f"Pi camera capture failed: {exc or type(exc).__name__}") from None
        width, height = self._size
        if self._stream == "lores":
            # YUV420 planes stacked: the first `height` rows (cut to `width`, dropping row padding) are Y.
            y_plane = np.ascontiguousarray(array[:height, :width], dtype=np.uint8)
            return _bgr(cv2.cvtColor(y_plane, cv2.COLOR_GRAY2BGR))
        return _bgr(np.ascontiguousarray(array[:, :, :3]))

    def _close(self) -> None:
        if self._cam is None:
            return
        cam, self._cam = self._cam, None
        # close() even when stop() fails: it is what releases the device. Nothing more can be done about a
        # camera that fails both; the next open reports its state.
        for step in (cam.stop, cam.close):
            try:
                step()
            except Exception as exc:
                log.warning("camera picamera2: %s failed: %s", step.__name__, exc)


def _bgr(image: Any) -> NDArray[np.uint8]:
    frame: NDArray[np.uint8] = np.asarray(image, dtype=np.uint8)
    return frame


def make_camera(cfg: CameraConfig) -> ThreadedCamera | None:
    """The camera ``cfg`` describes, or None when the camera is off."""
    backoff = {"reconnect_min_s": cfg.reconnect_min_s, "reconnect_max_s": cfg.reconnect_max_s}
    if cfg.source == "off":
        return None
    if cfg.source == "picamera2":
        return Picamera2Camera(cfg.width, cfg.height, **backoff)
    # The config model guarantees a path for the remaining sources.
    if cfg.path is None:
        raise ValueError(f"camera.path is required when source is '{cfg.source}'")
    if cfg.source == "opencv":
        return OpenCvCamera(cfg.path, cfg.width, cfg.height, **backoff)
    if cfg.source == "file":
        return VideoFileCamera(Path(cfg.path), cfg.loop, realtime=True, max_fps=cfg.fps, **backoff)
    return ImageFolderCamera(Path(cfg.path), cfg.loop, interval_s=1.0 / cfg.fps, **backoff)
