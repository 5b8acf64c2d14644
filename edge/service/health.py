"""What the systemd watchdog ping stands for: the daemon is doing its job, not just alive.

The ping is sent only while every stage whose source is available makes progress, and while
events that are waiting get sent: with the broker connected and events pending, no PUBACK
for ``max_silence_s`` means publishing has stalled. A source that is down, paused or finished
is handled by reconnecting (or has nothing to deliver), so it never withholds the ping; a
broker outage does not either. Withholding the ping makes systemd restart the daemon
(``WatchdogSec=`` in the unit).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping

from edge.sdnotify import ProgressWatchdog, SystemdNotifier

log = logging.getLogger(__name__)

# A stage that has not made progress for this long stops the pings. Under systemd it scales
# with WatchdogSec (4 ping periods = 2 x WatchdogSec).
STAGE_MAX_SILENCE_S = 10.0
MIN_STAGE_SILENCE_S = 2.0

# sensor -> the watchdog stage that follows its source
WATCHED_SOURCES = {"emg": "emg_source", "camera": "camera"}


class PublishProgress:
    """Pending events with a connected broker must see acknowledgements."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._acked = -1
        self._since = clock()

    def stalled_for(self, connected: bool, pending: int, acked: int) -> float:
        now = self._clock()
        if not connected or pending == 0 or acked != self._acked:
            self._acked, self._since = acked, now
            return 0.0
        return now - self._since


class Health:
    def __init__(self, notifier: SystemdNotifier, watchdog: ProgressWatchdog) -> None:
        self.notifier = notifier
        self.watchdog = watchdog
        self.publishing = PublishProgress()
        self.unhealthy_ticks = 0

    def max_silence_s(self) -> float:
        interval = self.notifier.watchdog_interval_s()
        return STAGE_MAX_SILENCE_S if interval is None else max(MIN_STAGE_SILENCE_S, 4 * interval)

    async def run(
        self,
        availability: Callable[[], Mapping[str, bool]],
        running: Callable[[], Mapping[str, bool]],
        publishing: Callable[[], Awaitable[tuple[bool, int, int]]],
    ) -> None:
        """``availability``: each sensor's (as MQTT reports it); ``running``: whether its source
        exists; ``publishing``: (connected, pending events, events acked so far)."""
        interval = self.notifier.watchdog_interval_s()
        if interval is None:
            await asyncio.get_running_loop().create_future()  # nothing to feed: idle until cancelled
        assert interval is not None
        while True:
            await asyncio.sleep(interval)
            if self.check(availability(), running(), await publishing()):
                self.notifier.watchdog()

    def check(
        self, available: Mapping[str, bool], running: Mapping[str, bool], publishing: tuple[bool, int, int]
    ) -> bool:
        # Decided afresh on every tick from the same availability that MQTT reports (pause and
        # resume are idempotent), so switches, reloads and reconnects elsewhere cannot leave a
        # stage watched while its source is down.
        for sensor, stage in WATCHED_SOURCES.items():
            if running.get(sensor):
                (self.watchdog.resume if available.get(sensor) else self.watchdog.pause)(stage)
        healthy, stalled = self.watchdog.healthy()
        silent = self.publishing.stalled_for(*publishing)
        if silent > self.max_silence_s():
            healthy = False
            stalled.append(
                f"publishing ({publishing[1]} events pending, none acknowledged for {silent:.0f} s)"
            )
        if not healthy:
            self.unhealthy_ticks += 1
            log.error("stalled stage(s): %s; withholding the watchdog ping", ", ".join(stalled))
        return healthy
