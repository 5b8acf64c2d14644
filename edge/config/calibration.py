"""The ``[calibration]`` section: the guided personal-calibration session."""

from __future__ import annotations

from typing import Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from edge.config.checks import cross_field
from edge.emotions import EMOTIONS

# The relaxed face first: it is the easiest to hold, so the wearer starts with something simple.
DEFAULT_LABELS = ["neutral", *(e for e in EMOTIONS if e != "neutral")]


class CalibrationConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, validate_default=True)

    labels: list[str] = Field(
        default_factory=lambda: list(DEFAULT_LABELS),
        min_length=2,
        description="What the wearer is asked to show, one repetition of each per round (2 or more, each "
        "once), from neutral, happy, angry, surprise, fear, sad and disgust: the emotions fusion, the "
        "Home Assistant sensor and its device triggers know. 'neutral' is the relaxed face.",
    )
    repetitions: int = Field(
        default=3,
        ge=2,
        le=20,
        description="Rounds: each label is recorded this many times, in a new shuffled order each round, "
        "so that validation can hold out whole repetitions (at least 2).",
    )
    repetition_s: float = Field(
        default=6.0, gt=0, le=60, description="Seconds the wearer holds each expression."
    )
    reaction_s: float = Field(
        default=0.5,
        ge=0,
        description="Seconds at the start of each repetition that are not recorded: the wearer is still "
        "reacting to the prompt.",
    )
    rest_s: float = Field(default=3.0, ge=0, le=60, description="Seconds of rest after each repetition.")
    countdown_s: float = Field(
        default=3.0, ge=0, le=30, description="Seconds of countdown shown before each repetition."
    )
    max_retries: int = Field(
        default=3,
        ge=0,
        description="How often a repetition with a bad signal (flat, saturated, disconnected or mains-"
        "dominated channel, or no samples) is repeated before the session gives up.",
    )
    seed: int | None = Field(
        default=None, description="Seed of the shuffled order; unset: a new order every session."
    )

    @field_validator("labels")
    @classmethod
    def _labels(cls, value: list[str]) -> list[str]:
        for label in value:
            if label not in EMOTIONS:
                # A personal model's labels become the fused state, whose names Home Assistant's
                # enum sensor and device triggers declare in advance.
                raise ValueError(f"{label!r} is not one of {', '.join(DEFAULT_LABELS)}")
        if len(set(value)) != len(value):
            raise ValueError("each label may appear only once")
        return value

    @model_validator(mode="after")
    def _reaction_inside_repetition(self) -> Self:
        if self.reaction_s >= self.repetition_s:
            raise cross_field(
                "reaction_s", "must be shorter than repetition_s ({rep})", rep=self.repetition_s
            )
        return self
