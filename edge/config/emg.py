"""The ``[emg]`` section: where EMG samples come from and how they are windowed."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    ValidationError,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from edge.config.checks import require_not_above

# pyserial's Serial.BAUDRATES from 300 up (the POSIX termios speeds plus Linux's higher ones), and the
# non-standard rates boards commonly use: 14400/28800 (Windows-era), 74880 (ESP8266 boot), 250000 (AVR at
# 16 MHz). A closed set rather than a range: any value reaches the driver, and an absurd one (2**63 - 1)
# killed the reader thread with OverflowError instead of failing check-config.
STANDARD_BAUDRATES = frozenset(
    {
        *(300, 600, 1200, 1800, 2400, 4800, 9600, 19200, 38400, 57600, 115200, 230400, 460800, 500000),
        *(576000, 921600, 1000000, 1152000, 1500000, 2000000, 2500000, 3000000, 3500000, 4000000),
        *(14400, 28800, 74880, 250000),
    }
)
_BAUDRATE_ENUM: list[JsonValue] = [*sorted(STANDARD_BAUDRATES)]


class EmgSerialConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, validate_default=True)

    port: str = Field(default="/dev/ttyACM0", min_length=1, description="Serial device of the EMG board.")
    baudrate: int = Field(
        default=230400,
        description="Serial line speed in baud; 1 kHz x 3 channels needs at least 230400. One of the "
        "standard rates from 300 to 4000000 (pyserial's list, e.g. 9600, 115200, 230400, 460800, 921600, "
        "1000000, 2000000) or a common board rate (14400, 28800, 74880, 250000): a rate the serial driver "
        "cannot set would only fail once the port is opened.",
        json_schema_extra={"enum": _BAUDRATE_ENUM},
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

    @field_validator("baudrate")
    @classmethod
    def _standard_baudrate(cls, value: int) -> int:
        if value not in STANDARD_BAUDRATES:
            raise ValueError(
                "must be a standard baud rate: " + ", ".join(str(rate) for rate in sorted(STANDARD_BAUDRATES))
            )
        return value

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
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, validate_default=True)

    path: Path | None = Field(
        strict=False, default=None, description="Recording to replay; required when source is 'replay'."
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
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, validate_default=True)

    source: Literal["serial", "replay", "off"] = Field(
        default="serial",
        description="'serial': the EMG board; 'replay': a recorded file (see [emg.replay]); 'off': no EMG.",
    )
    sample_rate_hz: float = Field(default=1000.0, gt=0, description="EMG sample rate in Hz.")
    hop: int | None = Field(
        default=None,
        ge=1,
        description="Samples between classifier windows. Unset: the model card's hop (its window if the "
        "card has none).",
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
