"""The sidecar ``<name>.meta.json``: the seq reservation, the generation and a copy of the settings.

It outlives the database file (deleted, or moved aside as damaged), so a new file continues seq
above every seq handed out, keeps the generation and gets the settings back.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge.atomic import atomic_write

log = logging.getLogger("edge.outbox")  # the package's one logger (see recovery.py)

# Seqs are reserved in the sidecar this many at a time: one small atomic write per block.
SEQ_RESERVE = 10_000


@dataclass
class Meta:
    generation: int
    reserved_seq: int
    settings: dict[str, dict[str, Any]]


def read(meta_path: Path) -> Meta | None:
    """The sidecar's content; None when it is missing or unreadable (that is logged)."""
    try:
        data = json.loads(meta_path.read_text())
        generation, reserved = int(data["generation"]), int(data["reserved_seq"])
        settings = data.get("settings", {})
        if not isinstance(settings, dict) or not all(isinstance(v, dict) for v in settings.values()):
            raise ValueError("settings is not a table of tables")
        return Meta(generation, reserved, {str(k): v for k, v in settings.items()})
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.error("outbox sidecar %s is unreadable (%s): ignoring it", meta_path, exc)
        return None


def write(meta_path: Path, generation: int, reserved: int, settings: dict[str, dict[str, Any]]) -> None:
    """Atomically replace the sidecar (write, fsync, rename, fsync the directory); raises OSError."""
    body = json.dumps(
        {"generation": generation, "reserved_seq": reserved, "settings": settings},
        separators=(",", ":"),
    )
    atomic_write(meta_path, body.encode("utf-8"))
