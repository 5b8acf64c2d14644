"""Finding faces in a camera frame (YuNet, or OpenCV's Haar cascade as a fallback) and cropping them.

Detection runs on a copy of the frame downscaled so its longer side is at most ``detect_max_side``: the
cost scales with pixels, and a face close enough to read an expression from survives the downscale. Boxes
are always reported in the original frame's pixels.

A detector keeps per-instance OpenCV state and is not thread-safe: use one per thread.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import cv2
import numpy as np
from numpy.typing import NDArray

from edge.config.face import FaceConfig
from edge.models_fetch import YUNET_SHA256, sha256_of

log = logging.getLogger(__name__)

HAAR_CASCADE = "haarcascade_frontalface_default.xml"
# YuNet keeps at most this many candidates before NMS; a frame never holds more faces than that.
_YUNET_TOP_K = 5000
# Default detection sizes. YuNet's finest anchors see faces of about 10 px, so 256 (a 640x480 frame shrunk
# 2.5x) still finds faces of ~25 px and keeps YuNet near 4 ms on one core; Haar's smallest window is 24 px
# and gives false positives on textures when shrunk further.
YUNET_DETECT_MAX_SIDE = 256
HAAR_DETECT_MAX_SIDE = 320


@dataclass(frozen=True)
class FaceBox:
    """A face in original-frame pixels, clipped to the frame."""

    x: int
    y: int
    w: int
    h: int
    score: float

    @property
    def area(self) -> int:
        return self.w * self.h


class FaceDetector(Protocol):
    def detect(self, bgr: NDArray[np.uint8]) -> list[FaceBox]:
        """Faces in a BGR (HxWx3) frame, largest first."""
        ...


class _Downscaler:
    """Shrinks frames for detection and maps boxes back; shared by both detectors."""

    def __init__(self, detect_max_side: int, min_face_px: int) -> None:
        if detect_max_side < 1:
            raise ValueError("detect_max_side must be at least 1")
        self.detect_max_side = detect_max_side
        self.min_face_px = min_face_px

    def scale_for(self, height: int, width: int) -> float:
        return min(1.0, self.detect_max_side / max(height, width))

    def shrink(self, image: NDArray[np.uint8], scale: float) -> NDArray[np.uint8]:
        if scale >= 1.0:
            return image
        height, width = image.shape[:2]
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        # Plain bilinear sampling aliases fine detail into noise the detector reacts to, and INTER_AREA is
        # about 10x slower at ratios that are not whole numbers. So: halve with INTER_AREA (its fast
        # path) while at least 2x too big, then one bilinear step, which is alias-free below 2x.
        while image.shape[1] >= 2 * size[0] and image.shape[0] >= 2 * size[1]:
            half = (image.shape[1] // 2, image.shape[0] // 2)
            image = _u8(cv2.resize(image, half, interpolation=cv2.INTER_AREA))
        if (image.shape[1], image.shape[0]) == size:
            return image
        return _u8(cv2.resize(image, size, interpolation=cv2.INTER_LINEAR))

    def to_frame(
        self, rows: list[tuple[float, float, float, float, float]], scale: float, height: int, width: int
    ) -> list[FaceBox]:
        boxes = []
        for x, y, w, h, score in rows:
            x0 = max(0, math.floor(x / scale))
            y0 = max(0, math.floor(y / scale))
            x1 = min(width, math.ceil((x + w) / scale))
            y1 = min(height, math.ceil((y + h) / scale))
            if x1 - x0 < self.min_face_px or y1 - y0 < self.min_face_px:
                continue
            boxes.append(FaceBox(x0, y0, x1 - x0, y1 - y0, float(score)))
        boxes.sort(key=lambda b: b.area, reverse=True)
        return boxes


def _u8(image: object) -> NDArray[np.uint8]:
    # OpenCV's stubs type every result as a generic Mat; the arrays are uint8 already, so this copies nothing.
    return np.asarray(image, dtype=np.uint8)


def _as_bgr(image: NDArray[np.uint8]) -> NDArray[np.uint8]:
    if image.ndim == 2:
        return _u8(cv2.cvtColor(image, cv2.COLOR_GRAY2BGR))
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected a BGR image (HxWx3) or a grayscale one (HxW), got shape {image.shape}")
    return image


class YuNetDetector:
    """OpenCV's ``FaceDetectorYN`` with a YuNet ONNX model."""

    def __init__(
        self,
        model_path: Path,
        detect_max_side: int = YUNET_DETECT_MAX_SIDE,
        score_threshold: float = 0.6,
        nms_threshold: float = 0.3,
        min_face_px: int = 24,
    ) -> None:
        self._scaler = _Downscaler(detect_max_side, min_face_px)
        self._input_size: tuple[int, int] | None = None
        try:
            # The input size given here is replaced by setInputSize before the first detection.
            self._net = cv2.FaceDetectorYN.create(
                str(model_path), "", (320, 320), score_threshold, nms_threshold, _YUNET_TOP_K
            )
        except cv2.error as exc:
            message = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
            raise ValueError(f"cannot load the YuNet model {model_path}: {message}") from None

    def detect(self, bgr: NDArray[np.uint8]) -> list[FaceBox]:
        bgr = _as_bgr(bgr)
        height, width = bgr.shape[:2]
        if height == 0 or width == 0:
            return []
        scale = self._scaler.scale_for(height, width)
        small = self._scaler.shrink(bgr, scale)
        size = (small.shape[1], small.shape[0])
        if size != self._input_size:
            # Re-planning the network is costly, so only when the frame size actually changes.
            self._net.setInputSize(size)
            self._input_size = size
        _, faces = self._net.detect(small)
        if faces is None:
            return []
        # Each row: x, y, w, h, 5 landmarks (10 values), score.
        rows = [(float(f[0]), float(f[1]), float(f[2]), float(f[3]), float(f[-1])) for f in faces]
        return self._scaler.to_frame(rows, scale, height, width)


class HaarDetector:
    """OpenCV's frontal-face Haar cascade: no model file needed, but misses turned and partly hidden faces.

    The cascade's smallest window is 24x24 pixels of the downscaled frame, so with the default 320 px a face
    must span about 24 * (longer frame side / 320) original pixels, whatever min_face_px says.
    """

    def __init__(self, detect_max_side: int = HAAR_DETECT_MAX_SIDE, min_face_px: int = 24) -> None:
        self._scaler = _Downscaler(detect_max_side, min_face_px)
        if not hasattr(cv2, "CascadeClassifier"):
            raise ValueError(
                "this OpenCV has no Haar cascades (they were removed in OpenCV 5): set [face] detector_model "
                "to a YuNet model (`emotion-edge models fetch`) or install opencv-python-headless<5"
            )
        from cv2 import data as cv2_data  # only the 4.x wheels ship the cascade files here

        path = Path(cv2_data.haarcascades) / HAAR_CASCADE
        self._cascade = cv2.CascadeClassifier(str(path))
        if self._cascade.empty():
            raise ValueError(f"cannot load the Haar cascade {path}")

    def detect(self, bgr: NDArray[np.uint8]) -> list[FaceBox]:
        height, width = bgr.shape[:2]
        if height == 0 or width == 0:
            return []
        scale = self._scaler.scale_for(height, width)
        small = self._scaler.shrink(bgr, scale)
        gray = small if small.ndim == 2 else cv2.cvtColor(_as_bgr(small), cv2.COLOR_BGR2GRAY)
        min_side = max(1, round(self._scaler.min_face_px * scale))
        found = self._cascade.detectMultiScale(
            gray, scaleFactor=1.1, minNeighbors=5, minSize=(min_side, min_side)
        )
        rows = [(float(x), float(y), float(w), float(h), 1.0) for x, y, w, h in found]
        return self._scaler.to_frame(rows, scale, height, width)


class DetectorError(ValueError):
    """The configured face detector cannot be used: a config problem, reported against ``key``."""

    key = "face.detector_model"

    def __str__(self) -> str:
        return f"{self.key}: {self.args[0]}"


def make_detector(cfg: FaceConfig) -> FaceDetector:
    """YuNet when ``cfg.detector_model`` is set, else the Haar cascade; DetectorError when it cannot load."""
    try:
        if cfg.detector_model is None:
            return HaarDetector(cfg.detect_max_side or HAAR_DETECT_MAX_SIDE, cfg.min_face_px)
        path = cfg.detector_model.expanduser()
        if not path.is_file():
            raise DetectorError(f"{path} does not exist; download it with `emotion-edge models fetch`")
        digest = sha256_of(path)
        if digest != YUNET_SHA256:
            # Other YuNet releases (2022mar, int8) work too; only say so, since a wrong file fails to load.
            log.warning(
                "face.detector_model %s is not the known YuNet 2023mar model (sha256 %s); using it anyway",
                path,
                digest,
            )
        return YuNetDetector(
            path,
            cfg.detect_max_side or YUNET_DETECT_MAX_SIDE,
            cfg.score_threshold,
            cfg.nms_threshold,
            cfg.min_face_px,
        )
    except DetectorError:
        raise
    except ValueError as exc:  # an unreadable model file, or an OpenCV without Haar cascades
        raise DetectorError(str(exc)) from None


def select(boxes: list[FaceBox], policy: Literal["largest", "all"]) -> list[FaceBox]:
    """The faces to classify: the largest one alone, or all of them."""
    if policy == "all" or not boxes:
        return list(boxes)
    return [max(boxes, key=lambda b: b.area)]


def crop_face(bgr: NDArray[np.uint8], box: FaceBox, size: int = 48, margin: float = 0.1) -> NDArray[np.uint8]:
    """A ``size`` x ``size`` grayscale crop centred on ``box``, as the face classifier expects.

    The square's side is ``max(w, h) * (1 + margin)``: FER2013 faces are tightly framed, so a wide margin
    would shrink the face relative to what the classifier was trained on. Where the square leaves the frame
    the border pixels are repeated, which keeps the face centred instead of shifting it.
    """
    if size < 1:
        raise ValueError("size must be at least 1")
    height, width = bgr.shape[:2]
    side = max(1, round(max(box.w, box.h) * (1 + margin)))
    x0 = round(box.x + box.w / 2 - side / 2)
    y0 = round(box.y + box.h / 2 - side / 2)
    x1, y1 = x0 + side, y0 + side
    cx0, cy0, cx1, cy1 = max(0, x0), max(0, y0), min(width, x1), min(height, y1)
    if cx0 >= cx1 or cy0 >= cy1:
        raise ValueError(f"{box} lies outside the {width}x{height} frame")
    # Only the crop is converted to gray: much cheaper than converting the whole frame.
    region = bgr[cy0:cy1, cx0:cx1]
    gray = region if region.ndim == 2 else _u8(cv2.cvtColor(_as_bgr(region), cv2.COLOR_BGR2GRAY))
    if (cx0, cy0, cx1, cy1) != (x0, y0, x1, y1):
        gray = _u8(
            cv2.copyMakeBorder(gray, cy0 - y0, y1 - cy1, cx0 - x0, x1 - cx1, borderType=cv2.BORDER_REPLICATE)
        )
    return _u8(cv2.resize(gray, (size, size), interpolation=cv2.INTER_AREA))
