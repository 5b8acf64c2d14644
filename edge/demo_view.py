"""The quick start's live view: a real MQTT subscriber that prints what Home Assistant would see."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from edge.sources.replay_emg import ReplayEmgSource

if TYPE_CHECKING:
    from edge.service import Service


def silence_stdout() -> None:
    """Point stdout at /dev/null once its reader has gone, so that later prints and the interpreter's
    final flush do not raise BrokenPipeError again (the recipe in Python's ``signal`` documentation)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def print_line(line: str, on_closed: Callable[[], object]) -> bool:
    """Print one line of live output; False, once ``on_closed`` has run, if nobody reads it any more.

    A reader that goes away (``| head -1``) ends the run quietly instead of with a traceback.
    """
    try:
        print(line, flush=True)
    except BrokenPipeError:
        silence_stdout()
        on_closed()
        return False
    return True


def watch_events(service: Service) -> mqtt.Client:
    """Subscribe to the device's topics on the service's broker and print events as they arrive."""
    link = service.link
    assert link is not None
    topics = service.topics
    source = service.emg_source
    replay = source if isinstance(source, ReplayEmgSource) else None

    def label_at(sample: int | None) -> str | None:
        """The recording's own label at the event's sample: what the person was doing."""
        return None if replay is None or sample is None else replay.label_at(sample)

    loop = asyncio.get_running_loop()

    def stop_service() -> None:
        # Called from paho's thread. A message that arrives while the loop closes has nothing left to stop.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(service.request_stop)

    def show(line: str) -> None:
        print_line(line, stop_service)

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"emotion-edge-demo-{topics.device_id}")

    def on_connect(c: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        c.subscribe(f"{topics.base}/#", qos=1)
        show(f"subscribed to {topics.base}/# on {link.host}:{link.port}")

    def on_message(c: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        if msg.topic == topics.event:
            ev = json.loads(msg.payload)
            truth = label_at(ev.get("sample"))
            top = sorted(ev["probs"].items(), key=lambda kv: -kv[1])[:3]
            probs = " ".join(f"{k}={v:.2f}" for k, v in top)
            show(
                f"event #{ev['seq']:<4} {ev['type']:<6} {ev['emotion']:<9} conf={ev['confidence']:.2f}  "
                f"[{probs}]  (recording says: {truth or '-'})"
            )
        elif msg.topic == topics.availability:
            show(f"availability: {msg.payload.decode()}")

    client.on_connect = on_connect
    client.on_message = on_message
    client.connect(link.host, link.port)
    client.loop_start()
    return client
