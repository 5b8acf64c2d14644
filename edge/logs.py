"""Rate-limited log lines: a repeated message becomes one line per interval with a count.

A flood of one cause (a command storm, a full outbox during an outage, a broker that keeps
closing the connection) must not flood the journal. :class:`LogLimiter` logs the first ``burst``
occurrences of a key within an interval as usual, then holds the rest back and writes at most one
summary line per interval::

    outbox full (1000 events): dropped the 1 oldest unsent [4211 more like this in the last 60 s]

The summary shows the latest occurrence's text. It is written by the next occurrence after the
interval, or, if the occurrences stop, by a timer when the interval ends, so a count is never lost
while the process runs (:meth:`LogLimiter.flush` writes what is pending at once, e.g. at shutdown).

Thread-safe: one limiter may be used from the event loop, paho's network thread and the outbox
thread at the same time. Keys are whatever the caller chooses (usually the message template, or a
template plus the thing concerned); each limiter keeps at most ``max_keys`` of them (beyond that
the oldest quiet one is forgotten).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

DEFAULT_INTERVAL_S = 60.0


@dataclass
class _Window:
    started: float
    logged: int = 0  # lines written in this window (up to burst)
    held: int = 0  # occurrences held back since then
    level: int = logging.INFO
    msg: str = ""
    args: tuple[Any, ...] = field(default_factory=tuple)
    timer: threading.Timer | None = None


class LogLimiter:
    """At most ``burst`` lines per key and interval, then one summary line per interval."""

    def __init__(
        self,
        logger: logging.Logger,
        interval_s: float = DEFAULT_INTERVAL_S,
        burst: int = 1,
        *,
        max_keys: int = 256,
        clock: Callable[[], float] = time.monotonic,
        timers: bool = True,
    ) -> None:
        if interval_s <= 0 or burst < 1 or max_keys < 1:
            raise ValueError("interval_s must be > 0, burst and max_keys >= 1")
        self.logger = logger
        self.interval_s = interval_s
        self.burst = burst
        self.max_keys = max_keys
        self._clock = clock
        self._timers = timers
        self._lock = threading.Lock()
        self._windows: dict[str, _Window] = {}
        self.suppressed = 0  # lines held back in total (each is counted in some summary)

    def log(self, level: int, key: str, msg: str, *args: Any) -> bool:
        """Log ``msg % args`` unless ``key`` used up its lines for now; True when a line was written.

        The line written may be a summary: this occurrence's text and how many were held back.
        """
        with self._lock:
            line = self._occurrence(self._clock(), level, key, msg, args)
        if line is None:
            return False
        self.logger.log(line[0], line[1], *line[2])
        return True

    def _occurrence(
        self, now: float, level: int, key: str, msg: str, args: tuple[Any, ...]
    ) -> tuple[int, str, tuple[Any, ...]] | None:
        """The line to write for this occurrence, if any (called with the lock held)."""
        win = self._windows.get(key)
        if win is not None and now - win.started >= self.interval_s:
            if win.held:
                # The summary is due and this occurrence writes it (it is one of those counted).
                win.held += 1
                self.suppressed += 1
                line = self._summary(win, now, level, msg, args)
                self._next_window(win, now)
                return line
            # Quiet for a whole interval: start afresh.
            self._cancel(self._windows.pop(key))
            win = None
        if win is None:
            if len(self._windows) >= self.max_keys:
                self._evict()
            win = self._windows[key] = _Window(started=now)
        if win.logged < self.burst:
            win.logged += 1
            return (level, msg, args)
        win.held += 1
        self.suppressed += 1
        win.level, win.msg, win.args = level, msg, args
        if self._timers and win.timer is None:
            delay = max(0.0, win.started + self.interval_s - now)
            win.timer = threading.Timer(delay, self._timer_fired, (key, win))
            win.timer.daemon = True
            win.timer.start()
        return None

    def debug(self, key: str, msg: str, *args: Any) -> bool:
        return self.log(logging.DEBUG, key, msg, *args)

    def info(self, key: str, msg: str, *args: Any) -> bool:
        return self.log(logging.INFO, key, msg, *args)

    def warning(self, key: str, msg: str, *args: Any) -> bool:
        return self.log(logging.WARNING, key, msg, *args)

    def error(self, key: str, msg: str, *args: Any) -> bool:
        return self.log(logging.ERROR, key, msg, *args)

    def flush(self) -> None:
        """Write every pending summary now (and forget the windows)."""
        lines: list[tuple[int, str, tuple[Any, ...]]] = []
        with self._lock:
            now = self._clock()
            for win in self._windows.values():
                self._cancel(win)
                if win.held:
                    lines.append(self._summary(win, now, win.level, win.msg, win.args))
            self._windows.clear()
        for level, msg, args in lines:
            self.logger.log(level, msg, *args)

    # --- internals (called with the lock held) -----------------------------------------------

    def _summary(
        self, win: _Window, now: float, level: int, msg: str, args: tuple[Any, ...]
    ) -> tuple[int, str, tuple[Any, ...]]:
        try:
            text = msg % args if args else msg
        except (TypeError, ValueError):
            text = f"{msg} {args!r}"
        # '%' in the formatted text must not be taken for a placeholder a second time.
        return (
            level,
            "%s [%d more like this in the last %.0f s]",
            (text, win.held, max(now - win.started, 0.0)),
        )

    def _next_window(self, win: _Window, now: float) -> None:
        """After a summary: a new window in which every occurrence is held back again."""
        self._cancel(win)
        win.started = now
        win.logged = self.burst
        win.held = 0

    @staticmethod
    def _cancel(win: _Window) -> None:
        if win.timer is not None:
            win.timer.cancel()
            win.timer = None

    def _evict(self) -> None:
        # The oldest window without anything held back, else simply the oldest.
        victim = next((k for k, w in self._windows.items() if not w.held), next(iter(self._windows)))
        self._cancel(self._windows.pop(victim))

    def _timer_fired(self, key: str, win: _Window) -> None:
        with self._lock:
            if self._windows.get(key) is not win or win.timer is None:
                return  # superseded by a summary written meanwhile
            win.timer = None
            if not win.held:
                return
            now = self._clock()
            level, msg, args = self._summary(win, now, win.level, win.msg, win.args)
            self._next_window(win, now)
        self.logger.log(level, msg, *args)


_shared: dict[tuple[str, float, int], LogLimiter] = {}
_shared_lock = threading.Lock()


def limited(logger: logging.Logger, interval_s: float = DEFAULT_INTERVAL_S, burst: int = 1) -> LogLimiter:
    """A limiter shared by every caller with this logger and these settings (a one-line call site:
    ``limited(log).warning("outbox full", "outbox full (%d events) ...", n)``)."""
    with _shared_lock:
        key = (logger.name, interval_s, burst)
        lim = _shared.get(key)
        if lim is None:
            lim = _shared[key] = LogLimiter(logger, interval_s, burst)
        return lim
