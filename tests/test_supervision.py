"""No silent failure: supervised tasks restart or stop the daemon; the watchdog covers publishing."""

from __future__ import annotations

import asyncio
import logging

import pytest

from edge.sdnotify import ProgressWatchdog, SystemdNotifier
from edge.service.health import Health, PublishProgress
from edge.tasks import Supervisor


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_a_failing_task_is_restarted_counted_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    runs: list[int] = []
    fatal: list[str] = []

    async def flaky() -> None:
        runs.append(len(runs))
        if len(runs) < 3:
            raise OSError("port went away")
        await asyncio.sleep(3600)

    async def main() -> dict[str, dict[str, object]]:
        sup = Supervisor(fatal.append, backoff_min_s=0.01, backoff_max_s=0.02)
        sup.start("reader", flaky)
        for _ in range(200):
            if len(runs) >= 3:
                break
            await asyncio.sleep(0.01)
        stats = sup.stats()
        await sup.stop_all()
        return stats

    with caplog.at_level(logging.ERROR):
        stats = asyncio.run(main())
    assert len(runs) == 3 and not fatal
    assert stats["reader"] == {"restarts": 2, "last_error": "OSError: port went away"}
    assert sum("reader failed; restart" in r.getMessage() for r in caplog.records) == 2
    assert all(r.exc_info for r in caplog.records if "reader failed" in r.getMessage())


def test_a_task_that_keeps_failing_stops_the_daemon() -> None:
    fatal: list[str] = []

    async def broken() -> None:
        raise ValueError("database disk image is malformed")

    async def main() -> None:
        sup = Supervisor(fatal.append, max_failures=3, backoff_min_s=0.001, backoff_max_s=0.001)
        sup.start("mqtt-drain", broken)
        for _ in range(500):
            if fatal:
                break
            await asyncio.sleep(0.005)
        await sup.stop_all()

    asyncio.run(main())
    assert fatal == ["mqtt-drain: ValueError: database disk image is malformed"]


def test_returning_is_a_failure_unless_the_task_may_finish() -> None:
    fatal: list[str] = []
    finished: list[str] = []

    async def returns_early() -> None:
        return None

    async def replay() -> None:
        finished.append("replay")

    async def main() -> None:
        sup = Supervisor(fatal.append, max_failures=1, backoff_min_s=0.001, backoff_max_s=0.001)
        sup.start("stats", returns_early)
        sup.start("emg-source", replay, finishes=True)
        for _ in range(500):
            if fatal:
                break
            await asyncio.sleep(0.005)
        await sup.stop_all()

    asyncio.run(main())
    assert finished == ["replay"]
    assert fatal == ["stats: RuntimeError: returned although it should run until stopped"]


def test_stopping_a_group_leaves_the_others_running() -> None:
    async def forever() -> None:
        await asyncio.sleep(3600)

    async def main() -> tuple[bool, bool]:
        sup = Supervisor(lambda why: None)
        sup.start("emg-stage", forever, group="emg")
        sup.start("camera-stage", forever, group="camera")
        await asyncio.sleep(0)
        await sup.stop_group("emg")
        tasks = {t.get_name(): t for t in asyncio.all_tasks()}
        running = ("emg-stage" in tasks, "camera-stage" in tasks)
        await sup.stop_all()
        return running

    assert asyncio.run(main()) == (False, True)


def test_publishing_stalls_only_with_pending_events_and_a_connected_broker() -> None:
    clock = Clock()
    progress = PublishProgress(clock)
    assert progress.stalled_for(connected=True, pending=5, acked=10) == 0.0
    clock.t += 30
    assert progress.stalled_for(connected=True, pending=5, acked=10) == 30.0  # nothing acked for 30 s
    assert progress.stalled_for(connected=True, pending=5, acked=11) == 0.0  # an ack resets it
    clock.t += 30
    assert progress.stalled_for(connected=False, pending=5, acked=11) == 0.0  # an outage is not a stall
    clock.t += 30
    assert progress.stalled_for(connected=True, pending=0, acked=11) == 0.0  # nothing to send


def test_the_watchdog_ping_is_withheld_when_publishing_stalls(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    health = Health(SystemdNotifier(socket_path=""), ProgressWatchdog(clock))
    health.publishing = PublishProgress(clock)
    idle: dict[str, bool] = {"emg": False, "camera": False}
    assert health.check(idle, idle, (True, 3, 7))
    clock.t += health.max_silence_s() + 1
    with caplog.at_level(logging.ERROR):
        assert not health.check(idle, idle, (True, 3, 7))
    assert "publishing (3 events pending, none acknowledged" in caplog.text
    assert health.check(idle, idle, (True, 2, 8))  # it moved again
