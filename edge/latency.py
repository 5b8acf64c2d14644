"""A bounded record of recent latencies, for stats."""

from __future__ import annotations

import statistics
from collections import deque


class RecentLatencies:
    """The last ``keep`` measurements in milliseconds; old ones fall off, nothing grows."""

    def __init__(self, keep: int = 1000) -> None:
        self._ms: deque[float] = deque(maxlen=keep)

    def add(self, ms: float) -> None:
        self._ms.append(ms)

    def summary(self) -> dict[str, float | None]:
        if not self._ms:
            return {"p50": None, "max": None}
        return {"p50": round(statistics.median(self._ms), 3), "max": round(max(self._ms), 3)}
