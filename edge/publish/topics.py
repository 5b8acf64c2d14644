"""The MQTT topic layout, in one place."""

from __future__ import annotations

from dataclasses import dataclass

MODALITIES = ("emg", "camera")


@dataclass(frozen=True)
class Topics:
    prefix: str
    device_id: str
    discovery_prefix: str

    @property
    def base(self) -> str:
        return f"{self.prefix}/{self.device_id}"

    @property
    def availability(self) -> str:
        return f"{self.base}/availability"

    @property
    def state(self) -> str:
        return f"{self.base}/state"

    @property
    def event(self) -> str:
        return f"{self.base}/event"

    @property
    def stats(self) -> str:
        return f"{self.base}/stats"

    def modality_available(self, modality: str) -> str:
        """Retained ``ON``/``OFF``: is this modality delivering data right now."""
        return f"{self.base}/modality/{modality}/available"

    def switch_state(self, switch: str) -> str:
        """Retained ``ON``/``OFF`` of a switch (``emg_paused``, ``camera_paused``, ``privacy``)."""
        return f"{self.base}/switch/{switch}"

    def command(self, switch: str) -> str:
        return f"{self.base}/set/{switch}"

    @property
    def calibration_state(self) -> str:
        """Retained JSON: the calibration session's phase, prompt and progress (a wall tablet's guide)."""
        return f"{self.base}/calibration/state"

    @property
    def calibration_result(self) -> str:
        """Retained JSON: the last calibration's accuracy, date and whether its model is active."""
        return f"{self.base}/calibration/result"

    @property
    def command_filter(self) -> str:
        return f"{self.base}/set/#"

    @property
    def discovery(self) -> str:
        return f"{self.discovery_prefix}/device/{self.device_id}/config"

    @property
    def ha_status(self) -> str:
        return f"{self.discovery_prefix}/status"
