"""Configuration of the emotion-edge daemon: TOML file, ``EMOTION_EDGE__*`` overrides, systemd credentials.

Every section is a strict pydantic model: unknown keys are errors and nothing is coerced (``"yes"`` is not
true, ``"8883"`` not a port, ``true`` not QoS 1); only paths and the password are taken from strings.
"""

from edge.config.loader import ConfigError, config_schema, default_config_toml, load_config
from edge.config.root import Config

# sysexits EX_CONFIG: systemd and supervisors read it as "fix the configuration", not "restart me".
EXIT_CONFIG = 78

__all__ = ["EXIT_CONFIG", "Config", "ConfigError", "config_schema", "default_config_toml", "load_config"]
