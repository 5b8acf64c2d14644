"""edge.face.detect on real photos: face counts from ../shared/data/faces/PROVENANCE.md, crops, selection."""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
from numpy.typing import NDArray

from edge.config.face import FaceConfig
from edge.face.detect import (
    FaceBox,
    HaarDetector,
    YuNetDetector,
    _Downscaler,
    crop_face,
    make_detector,
    select,
)
from tests.conftest import shared_file

YUNET = "models/face_detection_yunet_2023mar.onnx"

# file -> (YuNet faces, Haar faces), the "YuNet / Haar" column of faces/PROVENANCE.md.
EXPECTED = {
    "skimage_astronaut.png": (1, 1),
    "skimage_camera.png": (1, 0),
    "skimage_chelsea_cat_noface.png": (0, 0),
    "matplotlib_grace_hopper.jpg": (1, 1),
    "facerec_obama.jpg": (1, 1),
    "facerec_biden2.jpg": (1, 1),
    "facerec_biden.jpg": (1, 1),
    "facerec_two_people.jpg": (2, 2),
    "facerec_obama1.jpg": (1, 1),
}
NAMES = sorted(EXPECTED)


def photo(name: str) -> NDArray[np.uint8]:
    image = cv2.imread(str(shared_file(f"faces/{name}")), cv2.IMREAD_COLOR)
    assert image is not None, name
    return np.asarray(image, dtype=np.uint8)


@pytest.fixture(scope="module")
def yunet() -> YuNetDetector:
    return YuNetDetector(shared_file(YUNET))


@pytest.fixture(scope="module")
def haar() -> HaarDetector:
    return HaarDetector()


def test_every_photo_is_covered() -> None:
    folder = shared_file("faces/PROVENANCE.md").parent
    assert sorted(p.name for p in folder.iterdir() if p.suffix in (".jpg", ".png")) == NAMES


def check_boxes(boxes: list[FaceBox], image: NDArray[np.uint8], min_face_px: int = 24) -> None:
    height, width = image.shape[:2]
    for box in boxes:
        assert box.x >= 0 and box.y >= 0 and box.x + box.w <= width and box.y + box.h <= height, box
        assert box.w >= min_face_px and box.h >= min_face_px
    assert [b.area for b in boxes] == sorted((b.area for b in boxes), reverse=True)


@pytest.mark.parametrize("name", NAMES)
def test_yunet_counts(yunet: YuNetDetector, name: str) -> None:
    image = photo(name)
    boxes = yunet.detect(image)
    assert len(boxes) == EXPECTED[name][0], boxes
    check_boxes(boxes, image)
    assert all(0.6 <= b.score <= 1.0 for b in boxes)


@pytest.mark.parametrize("name", NAMES)
def test_haar_counts(haar: HaarDetector, name: str) -> None:
    image = photo(name)
    boxes = haar.detect(image)
    assert len(boxes) == EXPECTED[name][1], boxes
    check_boxes(boxes, image)
    assert all(b.score == 1.0 for b in boxes)


@pytest.mark.parametrize("name", NAMES)
def test_yunet_counts_at_provenance_settings(name: str) -> None:
    # PROVENANCE.md counted at up to 1280 px; boxes must still come back in original-frame pixels.
    detector = YuNetDetector(shared_file(YUNET), detect_max_side=1280)
    image = photo(name)
    boxes = detector.detect(image)
    assert len(boxes) == EXPECTED[name][0]
    check_boxes(boxes, image)


def test_boxes_map_back_to_the_original_frame(yunet: YuNetDetector) -> None:
    image = photo("facerec_obama.jpg")  # 910x1137: downscaled about 3.5x for detection
    small = yunet.detect(image)[0]
    full = YuNetDetector(shared_file(YUNET), detect_max_side=1280).detect(image)[0]
    assert small.w > 150  # original pixels, not the 320 px detection image
    assert abs(small.x - full.x) < 0.1 * full.w and abs(small.y - full.y) < 0.1 * full.h
    assert 0.8 < small.area / full.area < 1.25


def test_input_size_follows_the_frame(yunet: YuNetDetector) -> None:
    # Alternating sizes on one detector: each call must set the new input size.
    for name in ("facerec_two_people.jpg", "skimage_astronaut.png", "facerec_two_people.jpg"):
        assert len(yunet.detect(photo(name))) == EXPECTED[name][0]


def test_grayscale_and_empty_frames(yunet: YuNetDetector, haar: HaarDetector) -> None:
    gray = cv2.cvtColor(photo("skimage_astronaut.png"), cv2.COLOR_BGR2GRAY)
    assert len(yunet.detect(np.asarray(gray, dtype=np.uint8))) == 1
    assert len(haar.detect(np.asarray(gray, dtype=np.uint8))) == 1
    empty = np.zeros((0, 0, 3), np.uint8)
    assert yunet.detect(empty) == [] and haar.detect(empty) == []


@pytest.mark.parametrize("max_side", [64, 100, 200, 256, 320, 639, 640, 2000])
def test_downscale_size_and_fidelity(max_side: int) -> None:
    # The halve-then-bilinear shortcut must give the size asked for and stay close to a full INTER_AREA
    # resize (plain nearest/bilinear sampling of this photo is 4-19 grey levels off at these sizes).
    frame = np.asarray(cv2.resize(photo("skimage_astronaut.png"), (640, 480)), dtype=np.uint8)
    scaler = _Downscaler(max_side, min_face_px=24)
    scale = scaler.scale_for(480, 640)
    small = scaler.shrink(frame, scale)
    expected = (min(480, round(480 * scale)), min(640, round(640 * scale)))
    assert small.shape == (*expected, 3)
    reference = cv2.resize(frame, expected[::-1], interpolation=cv2.INTER_AREA)
    assert np.abs(small.astype(int) - reference).mean() < 4.0


def test_default_detection_sizes() -> None:
    assert make_detector(FaceConfig())._scaler.detect_max_side == 320  # type: ignore[attr-defined]
    yunet = make_detector(FaceConfig(detector_model=shared_file(YUNET)))
    assert yunet._scaler.detect_max_side == 256  # type: ignore[attr-defined]
    chosen = make_detector(FaceConfig(detector_model=shared_file(YUNET), detect_max_side=400))
    assert chosen._scaler.detect_max_side == 400  # type: ignore[attr-defined]


def test_min_face_px_drops_small_faces() -> None:
    image = photo("facerec_two_people.jpg")
    assert YuNetDetector(shared_file(YUNET), min_face_px=10_000).detect(image) == []


def test_policy_largest_and_all(yunet: YuNetDetector) -> None:
    boxes = yunet.detect(photo("facerec_two_people.jpg"))
    assert len(select(boxes, "largest")) == 1
    assert select(boxes, "largest")[0] == max(boxes, key=lambda b: b.area)
    assert len(select(boxes, "all")) == 2
    assert select(list(reversed(boxes)), "largest") == select(boxes, "largest")
    assert select([], "largest") == [] and select([], "all") == []


def test_crop_face_shape_and_content(yunet: YuNetDetector) -> None:
    image = photo("skimage_astronaut.png")
    box = yunet.detect(image)[0]
    crop = crop_face(image, box)
    assert crop.shape == (48, 48) and crop.dtype == np.uint8
    assert crop.std() > 20  # a face, not a flat patch
    assert crop_face(image, box, size=64).shape == (64, 64)


@pytest.mark.parametrize(
    "box",
    [
        FaceBox(0, 0, 40, 60, 1.0),  # top-left corner
        FaceBox(472, 452, 40, 60, 1.0),  # bottom-right corner
        FaceBox(0, 100, 512, 300, 1.0),  # as wide as the frame
        FaceBox(500, 10, 12, 12, 1.0),  # small, at the right edge
    ],
)
def test_crop_face_at_the_frame_edge(box: FaceBox) -> None:
    image = photo("skimage_astronaut.png")  # 512x512
    crop = crop_face(image, box)
    assert crop.shape == (48, 48) and crop.dtype == np.uint8


def test_crop_face_replicates_the_edge() -> None:
    image = np.zeros((100, 100, 3), np.uint8)
    image[:, :50] = 200  # bright left half: the padding left of the frame must repeat it
    crop = crop_face(image, FaceBox(0, 40, 20, 20, 1.0), size=22, margin=1.0)
    assert crop[:, 0].min() > 150


def test_crop_face_outside_the_frame() -> None:
    with pytest.raises(ValueError, match="outside"):
        crop_face(np.zeros((50, 50, 3), np.uint8), FaceBox(500, 500, 10, 10, 1.0))


def test_make_detector_yunet_and_haar() -> None:
    model = shared_file(YUNET)
    assert isinstance(make_detector(FaceConfig(detector_model=model)), YuNetDetector)
    assert isinstance(make_detector(FaceConfig()), HaarDetector)


def test_make_detector_missing_model(tmp_path: Path) -> None:
    with pytest.raises(
        ValueError, match=r"face\.detector_model: .*absent\.onnx does not exist.*models fetch"
    ):
        make_detector(FaceConfig(detector_model=tmp_path / "absent.onnx"))


def test_make_detector_not_a_model(tmp_path: Path) -> None:
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not an onnx file")
    with pytest.raises(ValueError, match="cannot load the YuNet model"):
        make_detector(FaceConfig(detector_model=junk))


def test_make_detector_warns_on_another_yunet(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # As if the known hash were another release's: the model is used anyway, with a warning.
    monkeypatch.setattr("edge.face.detect.YUNET_SHA256", "0" * 64)
    with caplog.at_level(logging.WARNING):
        detector = make_detector(FaceConfig(detector_model=shared_file(YUNET)))
    assert "not the known YuNet 2023mar" in caplog.text
    assert len(detector.detect(photo("facerec_two_people.jpg"))) == 2


def test_known_model_does_not_warn(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        make_detector(FaceConfig(detector_model=shared_file(YUNET)))
    assert "YuNet" not in caplog.text
