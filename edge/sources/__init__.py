"""Sensor sources: EMG over serial or from a recording, and (later) camera frames."""
