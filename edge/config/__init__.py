"""Configuration of the emotion-edge daemon: TOML file, ``EMOTION_EDGE__*`` overrides, systemd credentials."""

from edge.config.loader import ConfigError, config_schema, default_config_toml, load_config
from edge.config.root import Config

# sysexits EX_CONFIG: systemd and supervisors read it as "fix the configuration", not "restart me".
EXIT_CONFIG = 78

__all__ = ["EXIT_CONFIG", "Config", "ConfigError", "config_schema", "default_config_toml", "load_config"]
