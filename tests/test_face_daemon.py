"""The face path end to end: video and photo sources, the shipped int8 model, fusion and privacy."""

from __future__ import annotations

import json
import shutil
import signal
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import cv2
import numpy as np
import pytest
from numpy.typing import NDArray

from edge.config.face import FaceConfig
from edge.face.classifier import FER2013_LABELS, FaceClassifier, FacePipeline
from edge.face.detect import make_detector
from tests.conftest import REPO, shared_file
from tests.harness import Daemon, Mosquitto, Subscriber, daemon_config, replay_emg, wait_until

BASE = "emotion_edge/test_pi"
SHIPPED_FACE = REPO / "models" / "face" / "face.tflite"
FPS = 10


@pytest.fixture(scope="module")
def yunet() -> Path:
    return shared_file("models/face_detection_yunet_2023mar.onnx")


@pytest.fixture(scope="module")
def pipeline(yunet: Path) -> FacePipeline:
    return FacePipeline(make_detector(FaceConfig(detector_model=yunet)), FaceClassifier(SHIPPED_FACE))


def paste(face48: np.ndarray, side: int = 200) -> np.ndarray:
    """A FER2013 face, enlarged, on a plain 640x480 background (a webcam-sized frame)."""
    frame = np.full((480, 640, 3), 110, dtype=np.uint8)
    face = cv2.resize(face48, (side, side), interpolation=cv2.INTER_CUBIC)
    y, x = (480 - side) // 2, (640 - side) // 2
    frame[y : y + side, x : x + side] = cv2.cvtColor(face, cv2.COLOR_GRAY2BGR)
    return frame


def pick_faces(pipeline: FacePipeline, emotions: list[str], per_emotion: int = 1) -> dict[str, np.ndarray]:
    """PublicTest faces of each emotion that the whole pipeline (detect, crop, classify) gets right.

    The test is about the daemon carrying a correct per-frame result to MQTT episodes, not about
    the model's accuracy (REPORT.md measures that), so it uses faces the pipeline recognises.
    """
    data = np.load(shared_file("fer2013/fer2013.npz"))
    pixels, labels, usage = data["pixels"], data["labels"], data["usage"]
    chosen: dict[str, np.ndarray] = {}
    for emotion in emotions:
        idx = np.flatnonzero((usage == 1) & (labels == FER2013_LABELS.index(emotion)))
        for i in idx[:400]:
            frame = paste(pixels[i])
            results = pipeline.process(frame)
            if len(results) == 1:
                probs = results[0].probs
                top = pipeline.labels[int(np.argmax(probs))]
                if top == emotion and probs.max() >= 0.8:
                    chosen[emotion] = frame
                    break
        assert emotion in chosen, f"no PublicTest {emotion} face recognised by the pipeline"
    return chosen


def read_bgr(path: Path) -> NDArray[np.uint8]:
    """A photo as 8-bit BGR (cv2.imread's default); asarray narrows the stubs' type and does not copy."""
    image = cv2.imread(str(path))
    assert image is not None, f"cannot read {path}"
    return np.asarray(image, dtype=np.uint8)


def write_video(path: Path, segments: list[np.ndarray], seconds_each: float) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), FPS, (640, 480))
    assert writer.isOpened()
    for frame in segments:
        for _ in range(int(seconds_each * FPS)):
            writer.write(frame)
    writer.release()


def camera_toml(source: str, path: Path, yunet: Path, loop: bool = False) -> str:
    return (
        f'[camera]\nsource = "{source}"\npath = "{path}"\nfps = {FPS}\nloop = {"true" if loop else "false"}\n'
        f"reconnect_min_s = 0.2\nreconnect_max_s = 0.5\n\n"
        f'[face]\ndetector_model = "{yunet}"\n'
    )


EMG_OFF = '[emg]\nsource = "off"\n'


def photo_folder(folder: Path, *names: str) -> Path:
    """A folder camera's input: copies of the named photos from ../shared/data/faces."""
    folder.mkdir()
    for name in names:
        shutil.copy(shared_file(f"faces/{name}"), folder / name)
    return folder


class Running(NamedTuple):
    sub: Subscriber
    daemon: Daemon
    config: Path


@contextmanager
def running_daemon(
    tmp_path: Path,
    emg: str,
    *,
    topics: Sequence[str] = (f"{BASE}/#",),
    env: dict[str, str] | None = None,
    **config: Any,
) -> Iterator[Running]:
    """A mosquitto, a subscriber recording ``topics`` and ``emotion-edge run``; all stopped on the way out."""
    broker = Mosquitto(tmp_path / "broker").start()
    sub = Subscriber(broker.port, list(topics))
    config_path = daemon_config(tmp_path, broker.port, emg=emg, **config)
    daemon = Daemon(config_path, tmp_path, env=env)
    try:
        yield Running(sub, daemon, config_path)
    finally:
        daemon.kill()
        sub.close()
        broker.stop()


def test_real_photos_faces_and_emotion(pipeline: FacePipeline) -> None:
    faces = {
        "skimage_astronaut.png": 1,
        "skimage_chelsea_cat_noface.png": 0,
        "facerec_two_people.jpg": 2,
    }
    all_faces = FacePipeline(pipeline.detector, pipeline.classifier, policy="all")
    for name, count in faces.items():
        results = all_faces.process(read_bgr(shared_file(f"faces/{name}")))
        assert len(results) == count, name
    astronaut = pipeline.process(read_bgr(shared_file("faces/skimage_astronaut.png")))
    assert pipeline.labels[int(np.argmax(astronaut[0].probs))] == "happy"


def test_video_through_daemon_follows_face_labels(
    tmp_path: Path, pipeline: FacePipeline, yunet: Path
) -> None:
    sequence = ["happy", "surprise", "happy"]
    faces = pick_faces(pipeline, sorted(set(sequence)))
    video = tmp_path / "faces.avi"
    write_video(video, [faces[e] for e in sequence], seconds_each=3.0)
    emg = EMG_OFF + camera_toml("file", video, yunet)
    with running_daemon(tmp_path, emg, topics=["#"]) as (sub, daemon, _):
        sub.wait_for(f"{BASE}/modality/camera/available", lambda m: b"ON" in m, timeout=30)
        wait_until(
            lambda: [e["emotion"] for e in sub.json_on(f"{BASE}/event") if e["type"] == "new"] == sequence,
            40,
            what="episodes following the video",
        )
        state = json.loads(sub.last(f"{BASE}/state") or b"{}")
        assert daemon.stop() == 0
    events = sub.json_on(f"{BASE}/event")
    assert all(e["modalities"] in (["face"], []) for e in events)
    assert state["faces"] and set(state["faces"][0]) >= {"box", "emotion", "confidence", "probs"}
    assert_no_pixels_left_the_process(sub, daemon.log, tmp_path, inputs={video})
    assert "Traceback" not in daemon.log


def _longest_run(value: object) -> tuple[int, int]:
    """(longest string, longest list) anywhere inside a decoded JSON value."""
    if isinstance(value, str):
        return len(value), 0
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, list):
        inner = [_longest_run(v) for v in value] or [(0, 0)]
        return max(s for s, _ in inner), max([len(value), *(n for _, n in inner)])
    return 0, 0


def assert_no_pixels_left_the_process(sub: Subscriber, log: str, workdir: Path, inputs: set[Path]) -> None:
    """No image topic, no payload that could carry a crop (even a 48x48 one: 2,304 values or ~3 kB of
    base64), no pixel dump in the log, and no image or array file written anywhere under ``workdir``."""
    for _, topic, payload, _ in sub.messages:
        assert not topic.endswith(("image", "frame", "snapshot", "crop")), topic
        text = payload.decode("utf-8")  # binary payloads would fail here
        if text.startswith(("{", "[")):
            longest_string, longest_list = _longest_run(json.loads(text))
            assert longest_string < 512 and longest_list < 64, topic
        else:
            assert len(text) < 512, topic
    assert max((len(line) for line in log.splitlines()), default=0) < 2_000
    image_like = {".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".pgm", ".webp", ".npy", ".npz", ".avi", ".mp4"}
    written = {f for f in workdir.rglob("*") if f.suffix.lower() in image_like} - inputs
    assert not written, f"image-like files written: {sorted(written)}"


def stats_of(sub: Subscriber) -> dict[str, object]:
    stats = sub.json_on(f"{BASE}/stats")
    return stats[-1] if stats else {}


def captured(sub: Subscriber) -> int:
    camera = stats_of(sub).get("camera")
    return int(camera["frames_captured"]) if isinstance(camera, dict) else 0


def test_privacy_switch_stops_capture(tmp_path: Path, yunet: Path) -> None:
    photos = photo_folder(tmp_path / "photos", "skimage_astronaut.png", "facerec_obama.jpg")
    emg = EMG_OFF + camera_toml("images", photos, yunet, loop=True)
    with running_daemon(tmp_path, emg, stats_interval_s=0.2) as (sub, daemon, _):
        wait_until(lambda: captured(sub) >= 5, 30, what="frames being captured")
        sub.client.publish(f"{BASE}/set/privacy", "ON", qos=1)
        sub.wait_for(f"{BASE}/switch/privacy", lambda m: m[-1:] == [b"ON"])
        sub.wait_for(f"{BASE}/modality/camera/available", lambda m: m[-1:] == [b"OFF"])
        time.sleep(0.5)
        frozen = captured(sub)
        time.sleep(2.0)
        assert captured(sub) == frozen, "the camera kept capturing in privacy mode"
        camera = stats_of(sub)["camera"]
        assert isinstance(camera, dict) and camera["connected"] is False, "device released"
        sub.client.publish(f"{BASE}/set/privacy", "OFF", qos=1)
        wait_until(lambda: captured(sub) > frozen + 3, 15, what="capture to resume")
        sub.wait_for(f"{BASE}/modality/camera/available", lambda m: m[-1:] == [b"ON"])
        assert daemon.stop() == 0
    assert_no_pixels_left_the_process(sub, daemon.log, tmp_path, inputs=set(photos.iterdir()))


def test_camera_failure_keeps_emg_running(tmp_path: Path, emg_csv: Path, yunet: Path) -> None:
    photos = photo_folder(tmp_path / "photos", "skimage_astronaut.png")
    emg = replay_emg(emg_csv, speed=8, loop=True) + "\n" + camera_toml("images", photos, yunet, loop=True)
    with running_daemon(tmp_path, emg, stats_interval_s=0.2) as (sub, daemon, _):
        sub.wait_for(f"{BASE}/modality/camera/available", lambda m: m[-1:] == [b"ON"], timeout=30)
        shutil.rmtree(photos)  # the camera goes away mid-run
        sub.wait_for(f"{BASE}/modality/camera/available", lambda m: m[-1:] == [b"OFF"], timeout=15)
        n = len(sub.on(f"{BASE}/event"))
        sub.wait_for(f"{BASE}/event", lambda m: len(m) >= n + 3, timeout=30)
        assert sub.last(f"{BASE}/modality/emg/available") == b"ON"

        # The reopen comes after a backoff (0.5 s): wait for it rather than race the next stats message.
        def reopen_failed() -> bool:
            camera = stats_of(sub).get("camera")
            return isinstance(camera, dict) and camera["open_failures"] >= 1

        wait_until(reopen_failed, 15, what="a failed reopen of the missing folder in the stats")
        photo_folder(photos, "skimage_astronaut.png")
        sub.wait_for(f"{BASE}/modality/camera/available", lambda m: m[-1:] == [b"ON"], timeout=15)
        assert daemon.proc.poll() is None
        daemon.signal(signal.SIGTERM)
        assert daemon.wait() == 0
    assert "Traceback" not in daemon.log


def test_emg_and_face_fuse_in_events_and_state(tmp_path: Path, emg_csv: Path, yunet: Path) -> None:
    photos = photo_folder(tmp_path / "photos", "skimage_astronaut.png")
    # Real-time EMG shares the camera's clock, so both stay fresh and both count.
    emg = replay_emg(emg_csv, speed=1, loop=True) + "\n" + camera_toml("images", photos, yunet, True)
    with running_daemon(tmp_path, emg) as (sub, daemon, _):
        wait_until(
            lambda: any(json.loads(p).get("modalities") == ["emg", "face"] for p in sub.on(f"{BASE}/state")),
            30,
            what="a state fused from both modalities",
        )
        sub.wait_for(
            f"{BASE}/event", lambda m: any(b'"modalities":["emg","face"]' in p for p in m), timeout=30
        )
        assert daemon.stop() == 0
    state = next(s for s in sub.json_on(f"{BASE}/state") if s["modalities"] == ["emg", "face"])
    # The union of labels: EMG has no neutral, the face model does.
    assert "neutral" in state["probs"] and "disgust" in state["probs"]


def test_face_leaving_ends_the_episode_with_the_camera_alone(
    tmp_path: Path, pipeline: FacePipeline, yunet: Path
) -> None:
    # A face for 3 s, then an empty scene for 15 s: frames without a face must advance time, so the face
    # goes stale and the episode ends while the camera is still up (not only when the file runs out).
    joined = tmp_path / "leave.avi"
    face = pick_faces(pipeline, ["happy"])["happy"]
    empty = np.full((480, 640, 3), 110, dtype=np.uint8)
    writer = cv2.VideoWriter(str(joined), cv2.VideoWriter.fourcc(*"MJPG"), FPS, (640, 480))
    for frame in [face] * (3 * FPS) + [empty] * (15 * FPS):
        writer.write(frame)
    writer.release()
    emg = EMG_OFF + camera_toml("file", joined, yunet)
    decision = "staleness_s = 1.0\nend_after_s = 2.0\n"
    with running_daemon(tmp_path, emg, decision=decision) as (sub, daemon, _):
        sub.wait_for(f"{BASE}/event", lambda m: any(b'"new"' in p for p in m), timeout=30)
        sub.wait_for(f"{BASE}/event", lambda m: any(b'"end"' in p for p in m), timeout=12)
        # Still streaming the empty scene: the end came from staleness, not from the source going away.
        assert sub.last(f"{BASE}/modality/camera/available") == b"ON"
        state = json.loads(sub.last(f"{BASE}/state") or b"{}")
        assert state["emotion"] == "uncertain" and state["faces"] == []
        assert daemon.stop() == 0
    events = sub.json_on(f"{BASE}/event")
    assert [(e["type"], e["emotion"]) for e in events] == [("new", "happy"), ("end", "happy")]
    assert events[-1]["modalities"] == ["face"]


def test_bad_face_config_on_reload_keeps_the_running_pipeline(tmp_path: Path, yunet: Path) -> None:
    photos = photo_folder(tmp_path / "photos", "skimage_astronaut.png")
    emg = EMG_OFF + camera_toml("images", photos, yunet, loop=True)
    with running_daemon(tmp_path, emg, stats_interval_s=0.2) as (sub, daemon, config):
        wait_until(lambda: captured(sub) >= 5, 30, what="frames being captured")
        good = config.read_text()
        config.write_text(good.replace(str(yunet), str(tmp_path / "missing.onnx")))
        daemon.signal(signal.SIGHUP)
        wait_until(lambda: "reload rejected" in daemon.log, 15, what="the reload to be rejected")
        assert "face.detector_model" in daemon.log
        before = captured(sub)
        wait_until(lambda: captured(sub) > before + 5, 15, what="capture to go on")
        assert sub.last(f"{BASE}/modality/camera/available") == b"ON"
        assert daemon.stop() == 0
    assert "Traceback" not in daemon.log


def test_missing_detector_model_at_start_exits_78_naming_the_key(tmp_path: Path) -> None:
    emg = EMG_OFF + camera_toml(
        "images", photo_folder(tmp_path / "photos"), tmp_path / "missing.onnx", loop=True
    )
    with running_daemon(tmp_path, emg) as (_, daemon, _):
        assert daemon.wait(30) == 78
    assert "face.detector_model" in daemon.log and "missing.onnx" in daemon.log
    assert "Traceback" not in daemon.log


def ends_with(value: bytes, messages: list[bytes]) -> bool:
    return messages[-1:] == [value]


def test_privacy_toggled_while_the_camera_is_down_keeps_the_watchdog_fed(tmp_path: Path, yunet: Path) -> None:
    # The camera never opens (no such folder). Switching privacy on and off must not leave the camera stage
    # watched while nothing can feed it: systemd would then restart a healthy daemon again and again.
    from tests.test_daemon_faults import NotifySocket

    notify = NotifySocket(tmp_path / "notify.sock")
    emg = EMG_OFF + camera_toml("images", tmp_path / "no-such-folder", yunet, loop=True)
    # WatchdogSec=0.5 s: pings every 0.25 s, a stage may be silent for 2 s.
    env = {"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "500000"}
    with running_daemon(tmp_path, emg, env=env) as (sub, daemon, _):
        notify.wait_for("READY=1")
        sub.wait_for(f"{BASE}/modality/camera/available", lambda m: m[-1:] == [b"OFF"])
        time.sleep(1.0)
        for value in (b"ON", b"OFF"):
            sub.client.publish(f"{BASE}/set/privacy", value, qos=1)
            sub.wait_for(f"{BASE}/switch/privacy", partial(ends_with, value))
        notify.drain()
        notify.messages.clear()
        time.sleep(4.0)  # twice the stage grace
        notify.drain()
        pings = [t for t, m in notify.messages if m == "WATCHDOG=1"]
        now = time.monotonic()
        assert pings and max(pings) > now - 1.0, (
            f"watchdog pings stopped: {[round(now - t, 2) for t in pings]}"
        )
        assert "stalled stage" not in daemon.log
        assert daemon.stop() == 0


def test_a_finite_camera_input_ends_without_stopping_the_daemon(
    tmp_path: Path, emg_csv: Path, yunet: Path
) -> None:
    """A folder (or file) camera without ``loop`` reaches its end: that is the end of its input, not a
    failure to restart until the supervisor gives up and exits 70."""
    photos = photo_folder(tmp_path / "photos", "skimage_astronaut.png")
    # Real time: EMG then shares the camera's clock (a faster replay would be stale next to it).
    emg = replay_emg(emg_csv, speed=1, loop=True) + "\n" + camera_toml("images", photos, yunet, loop=False)
    with running_daemon(tmp_path, emg, stats_interval_s=0.2) as (sub, daemon, _):
        wait_until(lambda: captured(sub) >= 1, 30, what="the folder's frame")
        sub.wait_for(f"{BASE}/modality/camera/available", lambda m: m[-1:] == [b"OFF"], timeout=15)
        time.sleep(12)  # longer than 5 restarts with backoff would take
        assert daemon.proc.poll() is None, daemon.log[-3000:]
        assert "camera-source failed" not in daemon.log
        n = len(sub.on(f"{BASE}/event"))
        sub.wait_for(f"{BASE}/event", lambda m: len(m) >= n + 2, timeout=30)  # EMG goes on
        assert daemon.stop() == 0
