"""The quick start's live view: a real MQTT subscriber that prints what Home Assistant would see."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

if TYPE_CHECKING:
    from edge.service import Service


def watch_events(service: Service) -> mqtt.Client:
    """Subscribe to the device's topics on the service's broker and print events as they arrive."""
    link = service.link
    assert link is not None
    topics = service.topics
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"emotion-edge-demo-{topics.device_id}")

    def on_connect(c: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        c.subscribe(f"{topics.base}/#", qos=1)
        print(f"subscribed to {topics.base}/# on {link.host}:{link.port}", flush=True)

    def on_message(c: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        if msg.topic == topics.event:
            ev = json.loads(msg.payload)
            truth = service.emg_stage.stats.last_label if service.emg_stage else None
            top = sorted(ev["probs"].items(), key=lambda kv: -kv[1])[:3]
            probs = " ".join(f"{k}={v:.2f}" for k, v in top)
            print(
                f"event #{ev['seq']:<4} {ev['type']:<6} {ev['emotion']:<9} conf={ev['confidence']:.2f}  "
                f"[{probs}]  (recording says: {truth})",
                flush=True,
            )
        elif msg.topic == topics.availability:
            print(f"availability: {msg.payload.decode()}", flush=True)

    client.on_connect = on_connect
    client.on_message = on_message
    client.connect(link.host, link.port)
    client.loop_start()
    return client
