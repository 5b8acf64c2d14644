"""The whole configuration file: top-level keys and one table per section."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from edge.config.calibration import CalibrationConfig
from edge.config.camera import CameraConfig
from edge.config.decision import DecisionConfig
from edge.config.emg import EmgConfig
from edge.config.face import FaceConfig
from edge.config.models import ModelsConfig
from edge.config.mqtt import MqttConfig
from edge.config.outbox import OutboxConfig
from edge.config.web import WebConfig


class LoggingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, validate_default=True)

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", description="Log level: DEBUG, INFO, WARNING or ERROR."
    )

    @field_validator("level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        # Environment overrides are typically typed in lower case.
        return value.upper() if isinstance(value, str) else value


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, validate_default=True)

    device_id: str = Field(
        default="emotion_edge",
        pattern=r"^[A-Za-z0-9_-]{1,64}$",
        description="Name of this device: 1-64 letters, digits, '_' or '-'. It becomes an MQTT topic level "
        "and part of Home Assistant unique ids, where '/', '+', '#' and spaces would break.",
    )
    device_name: str | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        description="Name Home Assistant shows for the device. Unset: device_id in words (living_room_pi -> "
        "'Living room pi'). Entity ids do not depend on it.",
    )
    mqtt: MqttConfig = Field(default_factory=MqttConfig, description="MQTT broker and topics.")
    emg: EmgConfig = Field(default_factory=EmgConfig, description="EMG input.")
    models: ModelsConfig = Field(default_factory=ModelsConfig, description="Classifier models.")
    decision: DecisionConfig = Field(
        default_factory=DecisionConfig, description="Turning predictions into emotion episodes."
    )
    outbox: OutboxConfig = Field(
        default_factory=OutboxConfig,
        description="Persistent queue of events not yet acknowledged by the broker.",
    )
    camera: CameraConfig = Field(default_factory=CameraConfig, description="Camera input.")
    face: FaceConfig = Field(default_factory=FaceConfig, description="Face detection in camera frames.")
    logging: LoggingConfig = Field(default_factory=LoggingConfig, description="Logging.")
    calibration: CalibrationConfig = Field(
        default_factory=CalibrationConfig, description="Guided personal calibration of the EMG model."
    )

    @property
    def display_name(self) -> str:
        """``device_name``, or ``device_id`` in words: what Home Assistant shows for the device."""
        words = " ".join(self.device_id.replace("_", " ").replace("-", " ").split())
        return self.device_name or words.capitalize() or self.device_id

    web: WebConfig = Field(default_factory=WebConfig, description="The live page (off by default).")
