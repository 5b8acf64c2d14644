"""Everything that leaves the device: MQTT topics, payloads, discovery and the broker link."""
