"""Parse the serial line protocol: ``v1,v2,v3\\n`` or ``n,v1,v2,v3\\n`` (n: a sample counter).

Bad input never raises: every rejected line is counted by reason and skipped, so a noisy
cable or a rebooting microcontroller shows up in stats instead of crashing the daemon.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

# A line longer than this is garbage (a stuck line or binary noise); the real lines are ~20 bytes.
MAX_LINE_BYTES = 256
COUNTER_MODULUS = 1 << 32  # the reference sketch sends a wrapping uint32


@dataclass
class ParseStats:
    lines_ok: int = 0
    # Samples the counter says never arrived, and how often the counter jumped or restarted.
    samples_lost: int = 0
    counter_jumps: int = 0
    counter_resets: int = 0
    rejected: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, int]:
        return {
            "lines_ok": self.lines_ok,
            "samples_lost": self.samples_lost,
            "counter_jumps": self.counter_jumps,
            "counter_resets": self.counter_resets,
            "lines_rejected": sum(self.rejected.values()),
            **{f"rejected_{k}": v for k, v in sorted(self.rejected.items())},
        }


@dataclass(frozen=True)
class ParsedLine:
    values: tuple[float, ...]
    gap_before: int  # samples missing before this one, from the counter (0 if none or no counter)
    counter: int | None = None  # the board's sample counter, when the line carries one


class LineParser:
    """Incremental parser: feed raw bytes, get validated samples."""

    def __init__(self, n_channels: int, value_min: float, value_max: float) -> None:
        self.n_channels = n_channels
        self.value_min = value_min
        self.value_max = value_max
        self.stats = ParseStats()
        self._pending = b""
        self._last_counter: int | None = None
        # The first line after (re)connecting is usually cut in half: drop it quietly-but-counted.
        self._synced = False
        # Dropping the rest of an over-long line (already counted) up to its newline.
        self._discarding = False

    def resync(self) -> None:
        """Forget partial input and counter history, e.g. after the port was reopened."""
        self._pending = b""
        self._last_counter = None
        self._synced = False
        self._discarding = False

    def feed(self, data: bytes) -> list[ParsedLine]:
        """Parse the complete lines in the buffered input plus ``data``.

        The outcome (samples and counters) does not depend on how the byte stream is cut into
        chunks: an over-long line is counted once, whether it overflows the buffer or arrives
        whole, and the rest of it up to its newline is dropped rather than parsed as a line.
        """
        *lines, tail = (self._pending + data).split(b"\n")
        out = []
        for raw in lines:
            if self._discarding:
                self._discarding = False
                continue
            if len(raw) > MAX_LINE_BYTES:
                self._reject("too_long")
                self._synced = True
                continue
            if not self._synced:
                self._synced = True
                if raw.strip():
                    self._reject("partial")
                continue
            parsed = self._parse(raw)
            if parsed is not None:
                out.append(parsed)
        if self._discarding:
            tail = b""
        elif len(tail) > MAX_LINE_BYTES:
            self._reject("too_long")
            self._synced = True
            self._discarding = True
            tail = b""
        self._pending = tail
        return out

    def _reject(self, reason: str) -> None:
        self.stats.rejected[reason] += 1

    def _parse(self, raw: bytes) -> ParsedLine | None:
        try:
            text = raw.decode("ascii").strip()
        except UnicodeDecodeError:
            self._reject("not_ascii")
            return None
        if not text:
            self._reject("empty")
            return None
        fields = text.split(",")
        if len(fields) not in (self.n_channels, self.n_channels + 1):
            self._reject("field_count")
            return None
        counter: int | None = None
        if len(fields) == self.n_channels + 1:
            # Plain decimal digits within uint32: int() alone would also take "-1", "+1" and "1_0".
            head = fields[0].strip()
            if not head.isdigit() or int(head) >= COUNTER_MODULUS:
                self._reject("bad_counter")
                return None
            counter = int(head)
            fields = fields[1:]
        try:
            values = tuple(float(f) for f in fields)
        except ValueError:
            self._reject("not_a_number")
            return None
        if not all(math.isfinite(v) and self.value_min <= v <= self.value_max for v in values):
            self._reject("out_of_range")
            return None
        gap = 0
        if counter is not None:
            if self._last_counter is not None:
                step = (counter - self._last_counter) % COUNTER_MODULUS
                if step == 0 or step > COUNTER_MODULUS // 2:
                    # A repeated or backwards counter: the microcontroller restarted. The
                    # sample itself is fine, but windows must not join the two runs.
                    self.stats.counter_resets += 1
                    gap = 1
                elif step > 1:
                    gap = step - 1
                    self.stats.samples_lost += gap
                    self.stats.counter_jumps += 1
            self._last_counter = counter
        self.stats.lines_ok += 1
        return ParsedLine(values, gap, counter)
