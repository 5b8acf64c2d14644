"""Background tasks that are neither garbage-collected mid-flight nor fail silently."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)


class TaskSet:
    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str | None = None) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task %s failed", task.get_name(), exc_info=task.exception())

    async def wait(self) -> None:
        """Let the tasks still running finish (e.g. outbox acks at shutdown)."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


@dataclass
class _Supervised:
    name: str
    factory: Callable[[], Coroutine[Any, Any, Any]]
    group: str
    finishes: bool
    task: asyncio.Task[Any] | None = None
    restarts: int = 0
    failures: list[float] = field(default_factory=list)
    last_error: str | None = None


class Supervisor:
    """Long-lived tasks that are never silently dead.

    A task that raises, or returns although it should run forever, is logged with its
    traceback, counted, and restarted with exponential backoff. One that fails more than
    ``max_failures`` times within ``window_s`` calls ``on_fatal``: the daemon then exits
    non-zero and systemd restarts it, rather than running on uselessly. ``finishes=True``
    marks a task whose return is normal (a replay that reached its end).
    """

    def __init__(
        self,
        on_fatal: Callable[[str], None],
        max_failures: int = 5,
        window_s: float = 60.0,
        backoff_min_s: float = 0.5,
        backoff_max_s: float = 10.0,
    ) -> None:
        self._on_fatal = on_fatal
        self.max_failures = max_failures
        self.window_s = window_s
        self.backoff_min_s = backoff_min_s
        self.backoff_max_s = backoff_max_s
        self._entries: dict[str, _Supervised] = {}

    def start(
        self,
        name: str,
        factory: Callable[[], Coroutine[Any, Any, Any]],
        group: str = "core",
        finishes: bool = False,
    ) -> None:
        entry = _Supervised(name, factory, group, finishes)
        previous = self._entries.get(name)
        if previous is not None:  # a restarted stage keeps its counters
            entry.restarts, entry.failures, entry.last_error = (
                previous.restarts,
                previous.failures,
                previous.last_error,
            )
        self._entries[name] = entry
        entry.task = asyncio.get_running_loop().create_task(self._guard(entry), name=name)

    async def _guard(self, entry: _Supervised) -> None:
        backoff = self.backoff_min_s
        while True:
            try:
                await entry.factory()
                if entry.finishes:
                    return
                raise RuntimeError("returned although it should run until stopped")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                now = time.monotonic()
                entry.last_error = f"{type(exc).__name__}: {exc}"
                entry.failures = [t for t in entry.failures if now - t < self.window_s] + [now]
                if len(entry.failures) > self.max_failures:
                    log.critical(
                        "%s failed %d times in %.0f s (%s): stopping the daemon so that systemd restarts it",
                        entry.name,
                        len(entry.failures),
                        self.window_s,
                        entry.last_error,
                        exc_info=exc,
                    )
                    self._on_fatal(f"{entry.name}: {entry.last_error}")
                    return
                entry.restarts += 1
                log.error(
                    "%s failed; restart %d in %.1f s", entry.name, entry.restarts, backoff, exc_info=exc
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.backoff_max_s)

    async def stop_group(self, group: str) -> None:
        entries = [e for e in self._entries.values() if e.group == group]
        await self._cancel(entries)

    async def stop_all(self) -> None:
        await self._cancel(list(self._entries.values()))

    async def _cancel(self, entries: list[_Supervised]) -> None:
        tasks = [e.task for e in entries if e.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def stats(self) -> dict[str, dict[str, Any]]:
        return {
            e.name: {"restarts": e.restarts, "last_error": e.last_error}
            for e in self._entries.values()
            if e.restarts or e.last_error
        }
