"""The ``[models]`` section: which TFLite models to run."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


class ModelsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, validate_default=True)

    emg: Path | None = Field(
        strict=False,
        default=None,
        description="EMG .tflite model with its .card.json beside it. Unset: the model shipped with the "
        "package.",
    )
    face: Path | None = Field(
        strict=False,
        default=None,
        description="Face .tflite model with its .card.json beside it. Unset: the shipped one.",
    )
    num_threads: int = Field(
        default=1,
        ge=1,
        description="Interpreter threads per model; more than 1 competes with the serial reader on a Pi.",
    )
