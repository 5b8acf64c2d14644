"""The ``[emg]`` section: where EMG samples come from and how they are windowed."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from edge.config.checks import require_not_above


class EmgSerialConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, validate_default=True)

    port: str = Field(default="/dev/ttyACM0", min_length=1, description="Serial device of the EMG board.")
    baudrate: int = Field(
        default=230400,
        gt=0,
        description="Serial line speed in baud; 1 kHz x 3 channels needs at least 230400.",
    )
    value_min: float = Field(default=0.0, description="Lowest raw sample value the board sends (ADC zero).")
    value_max: float = Field(
        default=4095.0, description="Highest raw sample value the board sends (ADC full scale)."
    )
    reconnect_min_s: float = Field(
        default=0.2,
        gt=0,
        description="First delay before reopening a lost serial port (doubles per failure).",
    )
    reconnect_max_s: float = Field(
        default=1.0, gt=0, description="Upper bound of the reopen delay (keeps resume within ~1 s of replug)."
    )

    @model_validator(mode="after")
    def _ranges(self) -> Self:
        # The range normalises raw ADC counts; an empty or inverted range would divide by zero or
        # flip the signal.
        if self.value_min >= self.value_max:
            raise PydanticCustomError(
                "cross_field",
                "must be less than value_max ({max})",
                {"field": "value_min", "max": self.value_max},
            )
        require_not_above("reconnect_min_s", self.reconnect_min_s, "reconnect_max_s", self.reconnect_max_s)
        return self


class EmgReplayConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, validate_default=True)

    path: Path | None = Field(
        default=None, description="Recording to replay; required when source is 'replay'."
    )
    speed: float | Literal["max"] = Field(
        default=1.0,
        description='Replay speed relative to real time (> 0), or "max" to replay as fast as possible.',
    )
    loop: bool = Field(default=False, description="Start over at the end of the recording.")
    source_layout: bool = Field(
        default=False,
        description="The file is the source project's emg_data.csv: EMG1,EMG2,EMG3 only, 6 x 5000 rows "
        "in the order happy, angry, surprise, fear, sad, disgust.",
    )

    @field_validator("speed", mode="wrap")
    @classmethod
    def _speed(cls, value: object, handler: ValidatorFunctionWrapHandler) -> float | str:
        # Without this, a bad value yields one error per union member (speed.float, speed.literal['max']).
        # TOML `speed = true` would otherwise pass as 1.0.
        if isinstance(value, bool):
            raise ValueError('must be a number > 0 or "max"')
        try:
            result: float | str = handler(value)
        except ValidationError:
            raise ValueError('must be a number > 0 or "max"') from None
        if not isinstance(result, str) and result <= 0:
            raise ValueError('must be a number > 0 or "max"')
        return result


class EmgConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, validate_default=True)

    source: Literal["serial", "replay", "off"] = Field(
        default="serial",
        description="'serial': the EMG board; 'replay': a recorded file (see [emg.replay]); 'off': no EMG.",
    )
    sample_rate_hz: float = Field(default=1000.0, gt=0, description="EMG sample rate in Hz.")
    hop: int | None = Field(
        default=None,
        ge=1,
        description="Samples between classifier windows. Unset: the model's window length.",
    )
    queue_size: int = Field(
        default=64, ge=1, description="Sample blocks buffered between the reader and the classifier."
    )
    weight: float = Field(
        default=1.0, ge=0, description="Weight of the EMG modality when fused with the others (0: ignored)."
    )
    serial: EmgSerialConfig = Field(default_factory=EmgSerialConfig, description="Serial EMG board.")
    replay: EmgReplayConfig = Field(default_factory=EmgReplayConfig, description="Replay of a recording.")

    @model_validator(mode="after")
    def _replay_needs_path(self) -> Self:
        if self.source == "replay" and self.replay.path is None:
            raise PydanticCustomError(
                "cross_field", "required when source is 'replay'", {"field": "replay.path"}
            )
        return self
