"""The ``[camera]`` section: where frames come from and how often they are handed to face detection."""

from __future__ import annotations

from typing import Literal, Self
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, model_validator

from edge.config.checks import cross_field, require_not_above


def redact_url(target: int | str) -> int | str:
    """``rtsp://user:secret@host/x`` -> ``rtsp://***@host/x``; indices and plain paths unchanged."""
    if not isinstance(target, str):
        return target
    try:
        parts = urlsplit(target)
    except ValueError:
        return target
    if "@" not in parts.netloc:
        return target
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"***@{host}"))


class CameraConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, validate_default=True)

    source: Literal["picamera2", "opencv", "file", "images", "off"] = Field(
        default="off",
        description="'picamera2': a Raspberry Pi camera (needs the apt package python3-picamera2); "
        "'opencv': a USB camera or stream through OpenCV; 'file': a video file; 'images': a folder of "
        ".jpg/.png photos; 'off': no camera.",
    )
    path: str | None = Field(
        default=None,
        min_length=1,
        description='opencv: a device index such as "0" or a stream URL; file: a video file; images: a '
        "folder. Required for those sources, ignored by picamera2.",
    )
    fps: float = Field(
        default=5.0,
        gt=0,
        description="Most frames per second handed to face detection. Frames are captured as fast as the "
        "source gives them, but only the newest is kept.",
    )
    width: int = Field(
        default=640, gt=0, description="Requested capture width in pixels (picamera2: the 'lores' stream)."
    )
    height: int = Field(
        default=480, gt=0, description="Requested capture height in pixels (picamera2: the 'lores' stream)."
    )
    loop: bool = Field(default=False, description="file and images: start over at the end.")
    reconnect_min_s: float = Field(
        default=0.5,
        gt=0,
        description="First delay before reopening a camera that failed (doubles per failure).",
    )
    reconnect_max_s: float = Field(default=5.0, gt=0, description="Upper bound of the reopen delay.")

    @model_validator(mode="after")
    def _checks(self) -> Self:
        if self.source in ("opencv", "file", "images") and self.path is None:
            raise cross_field("path", "required when source is '{source}'", source=self.source)
        require_not_above("reconnect_min_s", self.reconnect_min_s, "reconnect_max_s", self.reconnect_max_s)
        return self

    @property
    def display_path(self) -> str | None:
        """``path`` fit for logs and summaries: a stream URL's user:password replaced by ``***``."""
        return None if self.path is None else str(redact_url(self.path))
