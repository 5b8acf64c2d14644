"""emotion-edge: on-device emotion recognition from facial EMG and camera, published over MQTT."""

__version__ = "0.1.0"
