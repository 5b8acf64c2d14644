"""The ``[outbox]`` section: the on-disk queue that keeps events while the broker is unreachable."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


class OutboxConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, validate_default=True)

    path: Path = Field(
        strict=False,
        default=Path("/var/lib/emotion-edge/outbox.sqlite3"),
        description="SQLite file of the outbox.",
    )
    max_events: int = Field(
        default=100000, ge=1, description="Oldest events are dropped beyond this many (bounds disk use)."
    )
    max_age_s: float = Field(
        default=7 * 24 * 3600.0, gt=0, description="Events older than this many seconds are dropped."
    )
    ack_delay_s: float = Field(
        default=0.05,
        ge=0,
        le=10,
        description="PUBACKs arriving within this many seconds are deleted in one transaction; after a "
        "crash the events of at most this window are sent again (QoS 1 allows it).",
    )
    ack_batch_max: int = Field(
        default=1000, ge=1, description="A batch of PUBACKs is written at once when it reaches this size."
    )
    memory_max_events: int = Field(
        default=10000,
        ge=0,
        description="Events kept in memory while the disk refuses writes (full, I/O errors); beyond "
        "this many the oldest are dropped and counted. Written to disk in order once it works again.",
    )
    retry_interval_s: float = Field(
        default=1.0, gt=0, le=3600, description="How often writing is retried while the disk refuses it."
    )
    vacuum_interval_s: float = Field(
        default=60.0,
        gt=0,
        description="How often space freed by acknowledged events is given back to the file system.",
    )
