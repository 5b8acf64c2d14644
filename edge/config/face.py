"""The ``[face]`` section: face detection in camera frames and the weight of the face modality."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class FaceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, validate_default=True)

    detector_model: Path | None = Field(
        strict=False,
        default=None,
        description="YuNet face detector (.onnx; `emotion-edge models fetch` downloads it). Unset: OpenCV's "
        "Haar cascade, which is less accurate and misses turned or partly hidden faces.",
    )
    policy: Literal["largest", "all"] = Field(
        default="largest",
        description="'largest': classify only the largest face (the person nearest the camera); 'all': "
        "classify every face found.",
    )
    detect_max_side: int | None = Field(
        default=None,
        ge=64,
        description="Frames are downscaled so their longer side is at most this many pixels before "
        "detection (faster; boxes are mapped back to the full frame). Larger finds smaller faces. "
        "Default: 256 for YuNet (it finds faces down to about 10 px there), 320 for the Haar cascade "
        "(its smallest window is 24 px).",
    )
    score_threshold: float = Field(
        default=0.6, ge=0, le=1, description="YuNet: lowest detection score (0-1) accepted as a face."
    )
    nms_threshold: float = Field(
        default=0.3,
        ge=0,
        le=1,
        description="YuNet: overlap (IoU, 0-1) above which two detections count as the same face.",
    )
    min_face_px: int = Field(
        default=24,
        ge=1,
        description="Faces narrower or shorter than this (in full-frame pixels) are ignored: too small to "
        "read an expression from.",
    )
    weight: float = Field(
        default=1.0, ge=0, description="Weight of the face modality when fused with the others (0: ignored)."
    )
