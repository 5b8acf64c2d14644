"""The ``[mqtt]`` section: broker connection, credentials, TLS and topic layout."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_core import PydanticCustomError

from edge.config.checks import require_not_above

# One DNS label: letters, digits, '-' inside, and '_' (not RFC 1123, but common in container and LAN names).
_HOST_LABEL = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)")
_BAD_HOST = "must be a host name (such as broker.lan) or an IP address, without scheme, port or user"


def check_host(value: str) -> str:
    """``value`` if it is a host name or an IP literal paho can connect to; ValueError otherwise."""
    if any(ch.isspace() or not ch.isprintable() for ch in value):
        raise ValueError("must be a host name or IP address, without spaces or control characters")
    try:
        ipaddress.ip_address(value)  # also IPv6 with a scope, fe80::1%eth0; without [brackets]
        return value
    except ValueError:
        pass
    labels = value.removesuffix(".").split(".")
    if len(value) > 253 or not all(_HOST_LABEL.fullmatch(label) for label in labels):
        raise ValueError(_BAD_HOST + (" (non-ASCII names in their xn-- form)" if not value.isascii() else ""))
    if labels[-1].isdigit():
        raise ValueError("is neither an IPv4 address nor a host name (a name cannot end in a number)")
    return value


class MqttTlsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, validate_default=True)

    enabled: bool = Field(default=False, description="Connect over TLS.")
    ca_file: Path | None = Field(
        strict=False,
        default=None,
        description="CA bundle that signed the broker certificate (default: the system store).",
    )
    cert_file: Path | None = Field(
        strict=False, default=None, description="Client certificate for mutual TLS; needs key_file as well."
    )
    key_file: Path | None = Field(strict=False, default=None, description="Private key of cert_file.")
    insecure: bool = Field(
        default=False,
        description="Skip the broker hostname check (self-signed test brokers only: it gives up protection "
        "against impersonation).",
    )

    @model_validator(mode="after")
    def _client_cert_pair(self) -> Self:
        # Name the missing half so the operator is sent to the key they forgot, not the one they wrote.
        if self.cert_file is not None and self.key_file is None:
            raise PydanticCustomError("cross_field", "required when cert_file is set", {"field": "key_file"})
        if self.key_file is not None and self.cert_file is None:
            raise PydanticCustomError("cross_field", "required when key_file is set", {"field": "cert_file"})
        return self


class MqttConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, validate_default=True)

    host: str | None = Field(
        default=None,
        min_length=1,
        description="Broker host name or IP address, alone: no scheme, port, user or [brackets] (e.g. "
        "broker.lan, 192.168.1.10, fd00::1). Unset: no broker configured (the daemon may start an embedded "
        "one).",
    )
    port: int = Field(default=1883, ge=1, le=65535, description="Broker TCP port (8883 is usual with TLS).")
    username: str | None = Field(default=None, description="User name for broker authentication.")
    password: SecretStr | None = Field(
        strict=False,
        default=None,
        description="Broker password. Prefer password_file or the systemd credential 'mqtt_password' so the "
        "secret stays out of this file.",
    )
    password_file: Path | None = Field(
        strict=False,
        default=None,
        description="File holding the broker password (trailing newlines are ignored).",
    )
    client_id: str | None = Field(
        default=None, min_length=1, description="MQTT client id. Unset: derived from device_id."
    )
    keepalive_s: int = Field(
        default=30,
        ge=1,
        le=65535,
        description="Seconds between keepalive pings; the broker drops the connection after 1.5x this "
        "without traffic.",
    )
    qos: Literal[0, 1, 2] = Field(default=1, description="QoS of published events (0, 1 or 2).")
    topic_prefix: str = Field(
        default="emotion_edge", description="First level of every topic this device publishes."
    )
    discovery_prefix: str = Field(
        default="homeassistant", description="Home Assistant MQTT discovery prefix."
    )
    discovery: bool = Field(default=True, description="Publish Home Assistant discovery messages.")
    stats_interval_s: float = Field(default=30.0, gt=0, description="Seconds between statistics messages.")
    state_min_interval_s: float = Field(
        default=30.0,
        ge=0,
        description="While one emotion holds, the retained state is re-published at most this often, and "
        "only when a probability moved by state_confidence_step (Home Assistant stores every change). A "
        "change of emotion is published at once.",
    )
    state_confidence_step: float = Field(
        default=0.1,
        gt=0,
        le=1,
        description="Change of any probability (0-1; the confidence is one of them) that re-publishes the "
        "state while one emotion holds.",
    )
    reconnect_min_s: float = Field(
        default=0.5, gt=0, description="First delay before reconnecting to the broker (doubles per failure)."
    )
    reconnect_max_s: float = Field(default=30.0, gt=0, description="Upper bound of the reconnect delay.")
    tls: MqttTlsConfig = Field(default_factory=MqttTlsConfig, description="TLS to the broker.")

    @field_validator("host")
    @classmethod
    def _host(cls, value: str | None) -> str | None:
        # paho passes the host to getaddrinfo; a newline or a URL would only fail (or worse, resolve
        # something else) at connect time, over and over with backoff.
        return None if value is None else check_host(value)

    @field_validator("qos", mode="before")
    @classmethod
    def _qos_not_bool(cls, value: object) -> object:
        # true == 1 in Python, so a Literal[0, 1, 2] alone would take qos = true as 1, even in strict mode.
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError("must be the integer 0, 1 or 2")
        return value

    @field_validator("topic_prefix", "discovery_prefix")
    @classmethod
    def _topic_prefix(cls, value: str) -> str:
        # Prefixes are joined with '/' into publish topics, where wildcards are illegal and an extra '/'
        # would create an empty topic level that subscribers written against the documented layout miss.
        if not value:
            raise ValueError("must not be empty")
        if "+" in value or "#" in value:
            raise ValueError("must not contain the MQTT wildcards '+' or '#'")
        if value.startswith("/") or value.endswith("/"):
            raise ValueError("must not start or end with '/'")
        if value.startswith("$"):
            raise ValueError("must not start with '$' (reserved for broker topics such as $SYS)")
        if "\x00" in value:
            raise ValueError("must not contain a NUL character")
        return value

    # Cross-field errors carry the offending key in ctx["field"]: a model validator can only report at the
    # model's own location, and the loader appends the key so messages point at e.g. mqtt.username.
    @model_validator(mode="after")
    def _credentials(self) -> Self:
        if (self.password is not None or self.password_file is not None) and self.username is None:
            raise PydanticCustomError(
                "cross_field", "required when password or password_file is set", {"field": "username"}
            )
        if self.password is not None and self.password_file is not None:
            raise PydanticCustomError(
                "cross_field", "set either password or password_file, not both", {"field": "password_file"}
            )
        return self

    @model_validator(mode="after")
    def _reconnect_bounds(self) -> Self:
        require_not_above("reconnect_min_s", self.reconnect_min_s, "reconnect_max_s", self.reconnect_max_s)
        return self
