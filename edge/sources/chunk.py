"""The unit that EMG sources hand to the pipeline."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray


@dataclass(frozen=True)
class SampleChunk:
    """Consecutive samples, ``(n, channels)``.

    ``first_sample`` numbers the first row in the stream's own sample clock, so downstream
    time is derived from samples (deterministic in replay) rather than from arrival time.
    ``discontinuity`` says samples were lost right before this chunk: windows must not span it.
    """

    samples: NDArray[np.float64]
    first_sample: int
    received_at: float  # time.monotonic() when the last row arrived
    discontinuity: bool = False
    # The source's own number for the first row: the board's sample counter, or the
    # recording's ``sample`` column. Events carry it so they can be traced to raw data.
    source_index: int | None = None
