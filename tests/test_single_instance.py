"""One daemon per state directory: a second one refuses to start and names the first."""

from __future__ import annotations

import os
from pathlib import Path

from tests.harness import Daemon, Mosquitto, Subscriber, daemon_config, replay_emg, wait_until

EVENTS = "emotion_edge/test_pi/event"


def test_a_second_daemon_on_the_same_state_dir_exits_75_naming_the_first(
    tmp_path: Path, emg_csv: Path
) -> None:
    broker = Mosquitto(tmp_path / "broker").start()
    sub = Subscriber(broker.port, [EVENTS])
    config = daemon_config(tmp_path, broker.port, emg=replay_emg(emg_csv, speed=8, loop=True))
    first = Daemon(config, tmp_path)
    daemons = [first]
    try:
        sub.wait_for(EVENTS, lambda m: len(m) >= 1)
        second = Daemon(config, tmp_path)
        daemons.append(second)
        assert second.wait(30) == os.EX_TEMPFAIL, second.log
        assert f"PID {first.proc.pid}" in second.log and "outbox.path" in second.log
        assert "Traceback" not in second.log
        # The first one never noticed: it keeps publishing, with one connection only.
        before = len(sub.on(EVENTS))
        wait_until(lambda: len(sub.on(EVENTS)) > before + 2, 30, what="events from the first daemon")
        assert first.log.count("MQTT: connected") == 1
        assert first.stop() == 0
        # Once the first has stopped (or died), the directory is free again.
        third = Daemon(config, tmp_path)
        daemons.append(third)
        wait_until(lambda: "running as" in third.log, 30, what="the third daemon to start")
        third.kill()  # SIGKILL: the kernel drops the lock with the process
        fourth = Daemon(config, tmp_path)
        daemons.append(fourth)
        wait_until(lambda: "running as" in fourth.log, 30, what="a start after a SIGKILL")
        assert fourth.stop() == 0
    finally:
        for daemon in daemons:  # a failed assertion must not leave a daemon running
            daemon.kill()
        sub.close()
        broker.stop()
