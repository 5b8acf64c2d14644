"""The ``[web]`` section: the live page served by the daemon (off unless enabled)."""

from __future__ import annotations

import importlib.util
import ipaddress
from pathlib import Path
from typing import Self

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from edge.config.checks import cross_field
from edge.config.mqtt import check_host

NEEDS_AIOHTTP = "the live page needs aiohttp: pip install 'emotion-edge[web]'"
# The systemd credential (LoadCredential=web_password:...) read when neither password key is set.
WEB_CREDENTIAL_NAME = "web_password"


def is_loopback(host: str) -> bool:
    """Only this machine can reach ``host``: the one case where the page may go without a password."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False  # a host name: it resolves to who knows what


def aiohttp_missing() -> bool:
    return importlib.util.find_spec("aiohttp") is None


class WebConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, validate_default=True)

    enabled: bool = Field(default=False, description="Serve the live page (camera, EMG, estimate, switches).")
    host: str = Field(
        default="127.0.0.1",
        description="Address the page listens on. Any address but loopback (127.0.0.1, ::1, localhost) "
        "needs password, password_file or the systemd credential 'web_password'.",
    )
    port: int = Field(default=8765, ge=1, le=65535, description="TCP port of the page.")
    password: SecretStr | None = Field(
        strict=False,
        default=None,
        description="Password of the page (any user name), also accepted as a Bearer token. Prefer "
        "password_file or the systemd credential 'web_password' so the secret stays out of this file.",
    )
    password_file: Path | None = Field(
        strict=False,
        default=None,
        description="File holding the page's password (trailing newlines are ignored).",
    )
    video_fps: float = Field(
        default=5.0, gt=0, le=5.0, description="Camera frames per second sent to the page (at most 5)."
    )

    @property
    def url(self) -> str:
        """Where the page is, as a browser on the device would open it."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    @field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        return check_host(value)

    @model_validator(mode="after")
    def _one_password(self) -> Self:
        if self.password is not None and self.password_file is not None:
            raise cross_field("password_file", "set either password or password_file, not both")
        if self.password is not None and not self.password.get_secret_value():
            # An empty secret (an unset variable in EMOTION_EDGE__WEB__PASSWORD=${X}) would let an
            # empty Bearer token or Basic "user:" in: refuse it rather than open the page.
            raise cross_field("password", "must not be empty")
        return self
