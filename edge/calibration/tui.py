"""``emotion-edge calibrate`` (without ``--from-recording``): the guided session in a terminal.

It shows the prompt, the countdown, a level bar per electrode and a progress bar. With the daemon
running it is only a front-end: it asks the daemon over the control socket (the daemon owns the
serial port) and draws what comes back. Without a daemon it runs the session itself on the port
of the config file, with the daemon's instance lock held (so a daemon started meanwhile waits
its turn rather than fighting over the port), and serves the same control socket meanwhile.

Ctrl-C cancels the session: nothing is changed. Exit status: 0 the personal model is active,
65 the session was refused (validation too poor) or failed, 69 calibration is not possible now
(EMG off, no signal on the port, a session already running), 75 the session was cancelled.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sys
from collections.abc import Callable
from typing import Any, TextIO

from edge.calibration.control import ControlClient, ControlServer
from edge.calibration.manager import CalibrationBusy, CalibrationManager, socket_path
from edge.calibration.offline import CHANNEL_NAMES
from edge.calibration.session import FINAL_PHASES
from edge.config import Config

EXIT_OK = 0
EXIT_REFUSED = os.EX_DATAERR
EXIT_UNAVAILABLE = os.EX_UNAVAILABLE
EXIT_CANCELLED = os.EX_TEMPFAIL
EXIT_NOPERM = os.EX_NOPERM
EXIT_BY_PHASE = {
    "done": EXIT_OK,
    "refused": EXIT_REFUSED,
    "failed": EXIT_REFUSED,
    "cancelled": EXIT_CANCELLED,
}
CHANNELS = tuple(f"EMG{i + 1} {name}" for i, name in enumerate(CHANNEL_NAMES))
# Seconds to wait for the first samples when the session runs on the port itself.
SIGNAL_WAIT_S = 5.0


def bar(fraction: float, width: int) -> str:
    filled = round(max(0.0, min(1.0, fraction)) * width)
    return "[" + "#" * filled + " " * (width - filled) + "]"


def render(snap: dict[str, Any], width: int = 80) -> list[str]:
    """The screen for one snapshot, as lines (no escape codes)."""
    inner = max(10, width - 40)
    phase = snap.get("phase", "idle")
    lines = [
        f"Calibration  step {snap.get('step', 0)}/{snap.get('steps', 0)}  "
        f"{bar(float(snap.get('progress', 0.0)), inner)} {float(snap.get('progress', 0.0)):4.0%}"
    ]
    prompt = str(snap.get("prompt", ""))
    if phase in ("countdown", "record", "rest"):
        prompt += f"   {float(snap.get('remaining_s', 0.0)):.1f} s"
    lines.append(f"  >> {prompt}")
    levels, statuses = snap.get("levels") or [], snap.get("channels") or []
    for i, name in enumerate(CHANNELS):
        if i < len(levels):
            lines.append(f"  {name:<17} {bar(float(levels[i]), inner)} {statuses[i]}")
        else:
            lines.append(f"  {name:<17} {bar(0.0, inner)}")
    lines.append(f"  {snap.get('message', '')}"[:width])
    return lines


class Screen:
    """Redraws the snapshot in place on a terminal; elsewhere prints a line per prompt change."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.tty = out.isatty()
        self._drawn = 0
        self._last_key: tuple[object, ...] | None = None

    def show(self, snap: dict[str, Any]) -> None:
        if self.tty:
            width = shutil.get_terminal_size((80, 24)).columns
            lines = render(snap, width)
            up = f"\x1b[{self._drawn}F" if self._drawn else ""
            self.out.write(up + "".join(f"\x1b[2K{line[:width]}\n" for line in lines))
            self._drawn = len(lines)
        else:
            key = (snap.get("phase"), snap.get("step"), snap.get("message"))
            if key == self._last_key:
                return
            self._last_key = key
            message = f" ({snap['message']})" if snap.get("message") else ""
            self.out.write(
                f"[{snap.get('step', 0)}/{snap.get('steps', 0)} {float(snap.get('progress', 0)):.0%}] "
                f"{snap.get('phase')}: {snap.get('prompt', '')}{message}\n"
            )
        self.out.flush()

    def result(self, snap: dict[str, Any]) -> None:
        result = snap.get("result") or {}
        self.out.write(f"{snap.get('prompt', '')}: {snap.get('message', '')}\n")
        if result.get("model_id"):
            self.out.write(
                f"  model {result['model_id']}: accuracy {result['accuracy']:.1%} "
                f"(leave-one-repetition-out), trained in {result['training_s']:.1f} s; "
                f"recording kept at {result['recording']}\n"
            )
        for flag in snap.get("flagged") or []:
            self.out.write(f"  repeated {flag['label']} (repetition {flag['rep'] + 1}): {flag['reason']}\n")
        self.out.flush()


async def _follow(snapshots: Any, screen: Screen) -> dict[str, Any]:
    last: dict[str, Any] = {}
    async for snap in snapshots:
        screen.show(snap)
        last = snap
    return last


def _on_interrupt(cancel: Callable[[], object]) -> None:
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGINT, cancel)
    loop.add_signal_handler(signal.SIGTERM, cancel)


async def through_daemon(client: ControlClient, screen: Screen) -> int:
    """The daemon runs the session; this only starts it, draws it and cancels it on Ctrl-C."""
    try:
        reply = await client.request("start")
        if not reply.get("ok"):
            print(f"emotion-edge: calibrate: {reply.get('error')}", file=sys.stderr)
            return EXIT_UNAVAILABLE
        tasks = set()

        def cancel() -> None:
            # On the same connection: its answer is skipped by snapshots(), which ends on "cancelled".
            task = asyncio.get_running_loop().create_task(client.send("cancel"))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

        _on_interrupt(cancel)
        last = await _follow(client.snapshots(), screen)
    except (OSError, ValueError) as exc:  # the daemon stopped or died mid-session
        print(f"emotion-edge: calibrate: lost the daemon's control socket: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    finally:
        await client.close()
    screen.result(last)
    return EXIT_BY_PHASE.get(str(last.get("phase")), EXIT_REFUSED)


async def standalone(config: Config, screen: Screen) -> int:
    """No daemon: open the port, run the session here (fit, install, activate; no swap needed)."""
    from edge.calibration.install import StoreInstaller
    from edge.calibration.store import PersonalModelStore, state_dir
    from edge.queues import CountingQueue
    from edge.service import loading
    from edge.service.instance_lock import AlreadyRunning, InstanceLock
    from edge.sources.chunk import SampleChunk

    lock = InstanceLock(config.outbox.path)
    try:
        lock.acquire()
    except AlreadyRunning as exc:
        print(f"emotion-edge: calibrate: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except PermissionError as exc:
        print(f"emotion-edge: calibrate: {exc}: run as the daemon's user", file=sys.stderr)
        return EXIT_NOPERM
    except OSError as exc:
        print(f"emotion-edge: calibrate: cannot use the state directory: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    # Holding the daemon's lock, this process is what `emotion-edge models activate` signals to
    # reload: the session picks up nothing from a reload, and SIGHUP must not end it.
    asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, lambda: None)
    try:
        if config.emg.source == "off":
            raise CalibrationBusy('EMG is off (emg.source = "off"): nothing to calibrate')
        store = PersonalModelStore.for_config(config)
        manager = CalibrationManager(lambda: config, StoreInstaller(store), CHANNEL_NAMES)
        source = loading.emg_source(config, len(CHANNEL_NAMES))
        queue: CountingQueue[SampleChunk] = CountingQueue(config.emg.queue_size)

        async def consume() -> None:
            while True:
                manager.tap(await queue.get())

        server = ControlServer(manager, socket_path(state_dir(config)))
        await server.start()
        tasks = [
            asyncio.create_task(source.run(queue)),
            asyncio.create_task(consume()),
            asyncio.create_task(manager.run()),
        ]
        try:
            received = queue.stats
            deadline = asyncio.get_running_loop().time() + SIGNAL_WAIT_S
            while received.got == 0 and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.05)
            if received.got == 0:
                raise CalibrationBusy(
                    f"no EMG samples within {SIGNAL_WAIT_S:.0f} s: check the board and its cable"
                )
            manager.start()
            _on_interrupt(manager.cancel)
            while True:
                snap = manager.status()
                screen.show(snap)
                if snap["phase"] in FINAL_PHASES:
                    break
                await asyncio.sleep(0.1)
        finally:
            source.stop()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await server.stop()
    except CalibrationBusy as exc:
        print(f"emotion-edge: calibrate: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    finally:
        lock.release()
    screen.result(snap)
    return EXIT_BY_PHASE.get(str(snap["phase"]), EXIT_REFUSED)


async def run(config: Config, out: TextIO = sys.stdout) -> int:
    from edge.calibration.store import state_dir

    screen = Screen(out)
    path = socket_path(state_dir(config))
    try:
        client = await ControlClient.connect(path)
    except (FileNotFoundError, ConnectionRefusedError):
        out.write(f"no daemon is running (no {path}): running the session on {config.emg.serial.port}\n")
        return await standalone(config, screen)
    except PermissionError:
        print(
            f"emotion-edge: calibrate: {path}: permission denied: run as the daemon's user",
            file=sys.stderr,
        )
        return EXIT_UNAVAILABLE
    except OSError as exc:  # e.g. a state directory whose socket path is too long for AF_UNIX
        print(f"emotion-edge: calibrate: cannot reach {path}: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    return await through_daemon(client, screen)
