"""Parse the serial line protocol: ``v1,v2,v3\\n`` or ``n,v1,v2,v3\\n`` (n: a sample counter).

Bad input never raises: every rejected line is counted by reason and skipped, so a noisy
cable or a rebooting microcontroller shows up in stats instead of crashing the daemon.

Numbers are parsed strictly, not with Python's ``int()``/``float()`` (which also take ``1_0``,
``+1``, ``0x10`` in float form, or a value with spaces inside it): a counter is ASCII digits
only; a value is an optional ``-``, ASCII digits, an optional fraction and exponent
(``12``, ``-3``, ``1.5``, ``1e2``), or ``nan``/``inf`` (rejected as out of range). Spaces and
tabs around a field and a trailing ``\\r`` are ignored.

The parser works a whole read at a time. A block of complete lines that all have the board's
plain shape (``n,v1,v2,v3`` or ``v1,v2,v3`` with integer fields, the reference sketch's
output) is validated by one regular expression and converted by numpy in one call; any other
block is parsed line by line. Both paths give the same samples and the same counts (the tests
compare them); only the cost differs.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

# A line longer than this is garbage (a stuck line or binary noise); the real lines are ~20 bytes.
MAX_LINE_BYTES = 256
COUNTER_MODULUS = 1 << 32  # the reference sketch sends a wrapping uint32
NO_COUNTER = -1  # in ParsedBatch.counters: the line carried no counter

# Around a field (str.strip() would also take \r, \v, \f and \x1c-\x1f inside a line).
_FIELD_BLANKS = " \t"
_COUNTER = re.compile(r"[0-9]+")
_VALUE = re.compile(r"-?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?")
_NOT_FINITE = re.compile(r"-?(?:nan|inf|infinity)", re.IGNORECASE)

# The fast path: integer fields only, short enough to be exact as float64 and never too long.
_FAST_COUNTER = rb"[0-9]{1,10}"
_FAST_VALUE = rb"-?[0-9]{1,9}"
_FAST_VALUE_CHARS = 11  # ",-123456789"


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


@dataclass(frozen=True)
class ParsedBatch:
    """The accepted lines of one :meth:`LineParser.feed_batch`, in order, as arrays.

    None stands for an all-default column, the common case that needs no array work: no line
    had a counter, or no line has a gap before it.
    """

    values: NDArray[np.float64]  # (n, n_channels)
    counters: NDArray[np.int64] | None  # (n,) the board's counter, NO_COUNTER where a line had none
    gaps: NDArray[np.int64] | None  # (n,) samples missing before each row (ParsedLine.gap_before)

    def __len__(self) -> int:
        return len(self.values)

    def lines(self) -> list[ParsedLine]:
        n = len(self)
        counters = [NO_COUNTER] * n if self.counters is None else self.counters.tolist()
        gaps = [0] * n if self.gaps is None else self.gaps.tolist()
        return [
            ParsedLine(tuple(v), g, None if c == NO_COUNTER else c)
            for v, g, c in zip(self.values.tolist(), gaps, counters, strict=True)
        ]


class LineParser:
    """Incremental parser: feed raw bytes, get validated samples.

    ``vectorised=False`` parses every line on its own (the reference the fast path is tested
    against).
    """

    def __init__(self, n_channels: int, value_min: float, value_max: float, vectorised: bool = True) -> None:
        self.n_channels = n_channels
        self.value_min = value_min
        self.value_max = value_max
        self.stats = ParseStats()
        # Lines that went through the one-call path, and those parsed one by one (not stats:
        # a board that sends decimals or spaces is valid, just slower to parse).
        self.fast_lines = 0
        self.slow_lines = 0
        self._pending = b""
        self._last_counter: int | None = None
        # The first line after (re)connecting is usually cut in half: drop it quietly-but-counted.
        self._synced = False
        # Dropping the rest of an over-long line (already counted) up to its newline.
        self._discarding = False
        self._fast: list[tuple[re.Pattern[bytes], bool]] = []
        if vectorised and _FAST_VALUE_CHARS * (n_channels + 1) + 1 <= MAX_LINE_BYTES:
            values = _FAST_VALUE + rb"(?:," + _FAST_VALUE + rb"){%d}" % (n_channels - 1)
            self._fast = [
                (re.compile(rb"(?:" + _FAST_COUNTER + rb"," + values + rb"\r?\n)+"), True),
                (re.compile(rb"(?:" + values + rb"\r?\n)+"), False),
            ]

    def resync(self) -> None:
        """Forget partial input and counter history, e.g. after the port was reopened."""
        self._pending = b""
        self._last_counter = None
        self._synced = False
        self._discarding = False

    def feed(self, data: bytes) -> list[ParsedLine]:
        """:meth:`feed_batch`, one :class:`ParsedLine` per accepted line."""
        return self.feed_batch(data).lines()

    def feed_batch(self, data: bytes) -> ParsedBatch:
        """Parse the complete lines in the buffered input plus ``data``.

        The outcome (samples and counters) does not depend on how the byte stream is cut into
        chunks: an over-long line is counted once, whether it overflows the buffer or arrives
        whole, and the rest of it up to its newline is dropped rather than parsed as a line.
        """
        buf = self._pending + data
        end = buf.rfind(b"\n") + 1  # complete lines: buf[:end]; 0 if none
        pos = 0
        # The rest of an over-long line, and the (probably cut) first line after (re)connecting.
        while pos < end and (self._discarding or not self._synced):
            nl = buf.index(b"\n", pos)
            raw = buf[pos:nl]
            pos = nl + 1
            if self._discarding:
                self._discarding = False
            elif len(raw) > MAX_LINE_BYTES:
                self._reject("too_long")
                self._synced = True
            else:
                self._synced = True
                if raw.strip():
                    self._reject("partial")
        batch = self._parse_block(buf[pos:end])
        tail = buf[end:]
        if self._discarding:
            tail = b""
        elif len(tail) > MAX_LINE_BYTES:
            self._reject("too_long")
            self._synced = True
            self._discarding = True
            tail = b""
        self._pending = tail
        return batch

    def _reject(self, reason: str, count: int = 1) -> None:
        if count:  # no zero entries: they would show up as rejected_* = 0
            self.stats.rejected[reason] += count

    def _parse_block(self, block: bytes) -> ParsedBatch:
        """Complete lines, each ending in ``\\n`` (or nothing)."""
        parsed = self._parse_fast(block) if block else None
        if parsed is None:
            parsed = self._parse_lines(block)
        values, counters = parsed
        self.stats.lines_ok += len(values)
        return ParsedBatch(values, counters, self._gaps(counters))

    # Every numpy call costs microseconds, more so on a cold cache 20 ms after the last read:
    # the common case (every line fine, no gap) is settled with a handful of them.

    def _parse_fast(self, block: bytes) -> tuple[NDArray[np.float64], NDArray[np.int64] | None] | None:
        with_counter = next((c for pattern, c in self._fast if pattern.fullmatch(block) is not None), None)
        if with_counter is None:
            return None
        n_lines = block.count(b"\n")
        width = self.n_channels + with_counter
        # The pattern allows digits, '-', ',' and '\r' only right before '\n': no other bytes.
        flat = block.replace(b"\r", b"").replace(b"\n", b",")
        numbers = np.fromstring(flat, dtype=np.int64, sep=",")
        if numbers.size != n_lines * width:  # cannot happen after the match; never trust it blindly
            return None
        self.fast_lines += n_lines
        table = numbers.reshape(n_lines, width)
        values = table[:, with_counter:].astype(np.float64)
        counters = table[:, 0] if with_counter else None
        # The common case, every line in range, checked on a plain list (cheaper than reductions).
        in_values = numbers.tolist()
        counters_ok = True
        if with_counter:
            counters_ok = max(in_values[::width]) < COUNTER_MODULUS
            del in_values[::width]
        if counters_ok and self.value_min <= min(in_values) and max(in_values) <= self.value_max:
            return values, counters
        ok = np.ones(n_lines, dtype=bool)
        if counters is not None:
            ok &= counters < COUNTER_MODULUS
            self._reject("bad_counter", n_lines - int(ok.sum()))
        in_range = ((values >= self.value_min) & (values <= self.value_max)).all(axis=1)
        self._reject("out_of_range", int((ok & ~in_range).sum()))
        ok &= in_range
        return values[ok], None if counters is None else counters[ok]

    def _parse_lines(self, block: bytes) -> tuple[NDArray[np.float64], NDArray[np.int64] | None]:
        rows: list[tuple[float, ...]] = []
        counters: list[int] = []
        for raw in block.split(b"\n")[:-1]:
            self.slow_lines += 1
            if len(raw) > MAX_LINE_BYTES:
                self._reject("too_long")
                continue
            parsed = self._parse_line(raw)
            if parsed is not None:
                rows.append(parsed[0])
                counters.append(parsed[1])
        values = np.array(rows, dtype=np.float64).reshape(len(rows), self.n_channels)
        if all(c == NO_COUNTER for c in counters):
            return values, None
        return values, np.array(counters, dtype=np.int64)

    def _parse_line(self, raw: bytes) -> tuple[tuple[float, ...], int] | None:
        try:
            text = raw.decode("ascii").strip()
        except UnicodeDecodeError:
            self._reject("not_ascii")
            return None
        if not text:
            self._reject("empty")
            return None
        fields = [f.strip(_FIELD_BLANKS) for f in text.split(",")]
        if len(fields) not in (self.n_channels, self.n_channels + 1):
            self._reject("field_count")
            return None
        counter = NO_COUNTER
        if len(fields) == self.n_channels + 1:
            # Plain decimal digits within uint32: int() alone would also take "-1", "+1" and "1_0".
            head = fields[0]
            if _COUNTER.fullmatch(head) is None or int(head) >= COUNTER_MODULUS:
                self._reject("bad_counter")
                return None
            counter = int(head)
            fields = fields[1:]
        values = []
        for f in fields:
            if _VALUE.fullmatch(f) is not None:
                values.append(float(f))
            elif _NOT_FINITE.fullmatch(f) is not None:
                values.append(float("nan"))  # a number, but never a sample: out of range below
            else:
                self._reject("not_a_number")
                return None
        # NaN compares false both ways, and an overflowing exponent is inf: both out of range.
        if not all(self.value_min <= v <= self.value_max for v in values):
            self._reject("out_of_range")
            return None
        return tuple(values), counter

    def _gaps(self, counters: NDArray[np.int64] | None) -> NDArray[np.int64] | None:
        """Samples missing before each accepted line, from the counters of those that have one;
        None when there are none.

        A repeated or backwards counter means the board restarted: the sample itself is fine,
        but windows must not join the two runs, so it gets a gap of 1 (and counts as a reset).
        """
        if counters is None or not len(counters):
            return None
        # The common case: each counter one more than the one before (no wrap, none missing).
        listed = counters.tolist()
        first = listed[0]
        last = self._last_counter
        if (
            first != NO_COUNTER
            and (last is None or first == last + 1)
            and listed == list(range(first, first + len(listed)))
        ):
            self._last_counter = listed[-1]
            return None
        gaps = np.zeros(len(counters), dtype=np.int64)
        has = np.flatnonzero(counters != NO_COUNTER)
        if not len(has):
            return gaps
        c = counters[has]
        prev = np.empty_like(c)
        prev[1:] = c[:-1]
        prev[0] = c[0] - 1 if self._last_counter is None else self._last_counter
        step = (c - prev) % COUNTER_MODULUS
        reset = (step == 0) | (step > COUNTER_MODULUS // 2)
        jump = ~reset & (step > 1)
        gaps[has] = np.where(reset, 1, step - 1)
        self.stats.counter_resets += int(reset.sum())
        self.stats.counter_jumps += int(jump.sum())
        self.stats.samples_lost += int((step - 1)[jump].sum())
        self._last_counter = int(c[-1])
        return gaps
