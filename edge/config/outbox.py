"""The ``[outbox]`` section: the on-disk queue that keeps events while the broker is unreachable."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


class OutboxConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, validate_default=True)

    path: Path = Field(
        default=Path("/var/lib/emotion-edge/outbox.sqlite3"), description="SQLite file of the outbox."
    )
    max_events: int = Field(
        default=100000, ge=1, description="Oldest events are dropped beyond this many (bounds disk use)."
    )
    max_age_s: float = Field(
        default=7 * 24 * 3600.0, gt=0, description="Events older than this many seconds are dropped."
    )
