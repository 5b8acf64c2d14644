"""The ``[mqtt]`` section: broker connection, credentials, TLS and topic layout."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_core import PydanticCustomError

from edge.config.checks import require_not_above


class MqttTlsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, validate_default=True)

    enabled: bool = Field(default=False, description="Connect over TLS.")
    ca_file: Path | None = Field(
        default=None, description="CA bundle that signed the broker certificate (default: the system store)."
    )
    cert_file: Path | None = Field(
        default=None, description="Client certificate for mutual TLS; needs key_file as well."
    )
    key_file: Path | None = Field(default=None, description="Private key of cert_file.")
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
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, validate_default=True)

    host: str | None = Field(
        default=None,
        min_length=1,
        description="Broker host name or address. Unset: no broker configured (the daemon may start an "
        "embedded one).",
    )
    port: int = Field(default=1883, ge=1, le=65535, description="Broker TCP port (8883 is usual with TLS).")
    username: str | None = Field(default=None, description="User name for broker authentication.")
    password: SecretStr | None = Field(
        default=None,
        description="Broker password. Prefer password_file or the systemd credential 'mqtt_password' so the "
        "secret stays out of this file.",
    )
    password_file: Path | None = Field(
        default=None, description="File holding the broker password (trailing newlines are ignored)."
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
    reconnect_min_s: float = Field(
        default=0.5, gt=0, description="First delay before reconnecting to the broker (doubles per failure)."
    )
    reconnect_max_s: float = Field(default=30.0, gt=0, description="Upper bound of the reconnect delay.")
    tls: MqttTlsConfig = Field(default_factory=MqttTlsConfig, description="TLS to the broker.")

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
