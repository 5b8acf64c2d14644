"""The ``[decision]`` section: how per-window predictions become emotion episodes."""

from __future__ import annotations

from typing import Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from edge.config.checks import require_not_above


class DecisionConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, validate_default=True)

    ema_alpha: float = Field(
        default=0.3,
        gt=0,
        le=1,
        description="Weight of the newest window in the smoothed probabilities (1: no smoothing).",
    )
    enter_threshold: float = Field(
        default=0.6, ge=0, le=1, description="Smoothed probability at which an episode may start."
    )
    exit_threshold: float = Field(
        default=0.45,
        ge=0,
        le=1,
        description="Smoothed probability below which an episode loses support; at most enter_threshold "
        "(hysteresis).",
    )
    min_consecutive: int = Field(
        default=3, ge=1, description="Windows in a row above enter_threshold before an episode starts."
    )
    end_after_s: float = Field(
        default=5.0, gt=0, description="An episode ends after this many seconds without support."
    )
    update_min_interval_s: float = Field(
        default=2.0, ge=0, description="Minimum seconds between updates published for a running episode."
    )
    staleness_s: float = Field(
        default=3.0, gt=0, description="Predictions older than this many seconds are ignored."
    )

    @model_validator(mode="after")
    def _hysteresis(self) -> Self:
        # With exit above enter, a probability between the two would start and end an episode on every window.
        require_not_above("exit_threshold", self.exit_threshold, "enter_threshold", self.enter_threshold)
        return self
