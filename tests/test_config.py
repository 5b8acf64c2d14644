"""edge.config: loading, environment overrides, secrets, error reporting and the config subcommands."""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, SecretStr, ValidationError

from edge.config import EXIT_CONFIG, Config, ConfigError, load_config
from edge.config.commands import register, summary
from edge.config.loader import config_schema, default_config_toml
from edge.config.mqtt import MqttConfig

REPO = Path(__file__).resolve().parent.parent
BAD_CONFIGS = Path(__file__).resolve().parent / "bad_configs"
BAD_FILES = sorted(BAD_CONFIGS.glob("*.toml"))

# The same entry point the brief for the CLI wiring uses, so exit codes and stderr are the real ones.
CLI = (
    "import argparse, sys; from edge.config.commands import register; p = argparse.ArgumentParser(); "
    "s = p.add_subparsers(dest='c', required=True); register(s); a = p.parse_args(sys.argv[1:]); "
    "sys.exit(a.func(a))"
)
PASSWORD = "Tr0ub4dor&3-not-for-logs"


def clean_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.upper().startswith("EMOTION_EDGE__") and k != "CREDENTIALS_DIRECTORY"
    }
    env.update(extra)
    return env


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", CLI, *args],
        cwd=REPO,
        env=env if env is not None else clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )


def write(tmp_path: Path, text: str, name: str = "config.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def error_paths(exc: ConfigError) -> list[str]:
    return [path for path, _ in exc.errors]


# --- the bad-config corpus -----------------------------------------------------------------------------


def expectations(path: Path) -> tuple[str, str | None]:
    header = path.read_bytes().decode("utf-8", errors="replace").splitlines()
    match = re.fullmatch(r"# expect: (\S+)", header[0])
    assert match, f"{path.name}: first line must be '# expect: <key.path>'"
    msg = header[1].removeprefix("# expect-msg: ") if header[1].startswith("# expect-msg: ") else None
    return match.group(1), msg


def test_corpus_is_large_enough() -> None:
    assert len(BAD_FILES) >= 32


@pytest.mark.parametrize("path", BAD_FILES, ids=[p.stem for p in BAD_FILES])
def test_bad_config_is_rejected_by_check_config(path: Path) -> None:
    expected_key, expected_msg = expectations(path)
    if expected_key == "<file>":
        expected_key = str(path)

    result = run_cli("check-config", str(path))

    assert result.returncode == EXIT_CONFIG, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert lines and all(line.startswith("emotion-edge: config error: ") for line in lines), result.stderr
    prefix = f"emotion-edge: config error: {expected_key}: "
    named = [line for line in lines if line.startswith(prefix)]
    assert named, f"no error names {expected_key!r}:\n{result.stderr}"
    if expected_msg is not None:
        assert any(expected_msg in line for line in named), result.stderr
    for password in re.findall(r"password\s*=\s*\"?([^\"\n]+)", path.read_text(errors="replace")):
        assert password.strip() not in result.stderr


def test_bad_configs_raise_config_error_in_process() -> None:
    for path in BAD_FILES:
        with pytest.raises(ConfigError) as info:
            load_config(path, env={})
        assert info.value.errors, path.name


# --- defaults and the generated default file -----------------------------------------------------------


def test_no_file_gives_defaults() -> None:
    assert load_config(None, env={}) == Config()


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, ""), env={}) == Config()


def test_default_toml_round_trips(tmp_path: Path) -> None:
    text = default_config_toml()
    assert load_config(write(tmp_path, text), env={}) == Config()


def test_default_toml_documents_every_field() -> None:
    text = default_config_toml()

    def walk(model: type[BaseModel], section: str) -> None:
        instance_defaults = model()
        for name, field in model.model_fields.items():
            value = getattr(instance_defaults, name)
            assert field.description
            assert "# " + field.description.split()[0] in text
            if isinstance(value, BaseModel):
                dotted = f"{section}.{name}" if section else name
                assert f"\n[{dotted}]\n" in text
                walk(type(value), dotted)
            elif value is None:
                assert re.search(rf"^# {name} = <", text, re.MULTILINE), name
            else:
                assert re.search(rf"^{name} = ", text, re.MULTILINE), name

    walk(Config, "")


def test_default_toml_mentions_unset_keys_commented_out() -> None:
    text = default_config_toml()
    assert "# host = " in text
    assert "# password = " in text
    mqtt = text.split("\n[mqtt]\n", 1)[1].split("\n[", 1)[0]  # [web] has a host by default: 127.0.0.1
    assert not re.search(r"^host = ", mqtt, re.MULTILINE)


def test_minimal_valid_file(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        'device_id = "kitchen-pi"\n[mqtt]\nhost = "broker.lan"\nport = 8883\n[mqtt.tls]\nenabled = true\n'
        '[emg]\nsource = "replay"\n[emg.replay]\npath = "rec.csv"\nspeed = "max"\n',
    )
    config = load_config(path, env={})
    assert config.device_id == "kitchen-pi"
    assert (config.mqtt.host, config.mqtt.port, config.mqtt.tls.enabled) == ("broker.lan", 8883, True)
    assert config.emg.replay.path == Path("rec.csv")
    assert config.emg.replay.speed == "max"


@pytest.mark.parametrize("speed", [True, "MAX", -0.5, 0])
def test_replay_speed_rejects(speed: Any) -> None:
    with pytest.raises(ValidationError):
        Config.model_validate({"emg": {"replay": {"speed": speed}}})


def test_cross_field_rules_hold_for_direct_construction() -> None:
    with pytest.raises(ValidationError):
        MqttConfig(password=SecretStr("x"))
    assert MqttConfig(username="u", password=SecretStr("x")).password is not None


# --- errors ---------------------------------------------------------------------------------------------


def test_config_error_str_is_one_line_per_error() -> None:
    exc = ConfigError([("mqtt.port", "too big"), ("device_id", "bad")])
    assert str(exc) == "mqtt.port: too big\ndevice_id: bad"
    assert exc.errors == [("mqtt.port", "too big"), ("device_id", "bad")]


def test_several_errors_are_all_reported(tmp_path: Path) -> None:
    path = write(tmp_path, '[mqtt]\nport = 0\nqos = 7\n[emg]\nsource = "usb"\n[decision]\nema_alpha = 2\n')
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert set(error_paths(info.value)) == {"mqtt.port", "mqtt.qos", "emg.source", "decision.ema_alpha"}


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as info:
        load_config(missing, env={})
    assert info.value.errors == [(str(missing), "cannot read: No such file or directory")]


def test_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "[mqtt]\nport = 1883\nhost = broker.lan\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    ((where, message),) = info.value.errors
    assert where == str(path)
    assert "line 3" in message


def test_error_does_not_chain_the_validation_error(tmp_path: Path) -> None:
    # A chained pydantic ValidationError would print input values (the password) in a logged traceback.
    path = write(tmp_path, f'[mqtt]\nusername = "u"\npassword = "{PASSWORD}"\nport = -1\n')
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert info.value.__cause__ is None
    assert info.value.__context__ is None
    assert PASSWORD not in str(info.value)
    assert PASSWORD not in repr(info.value)
    assert error_paths(info.value) == ["mqtt.port"]


# --- environment overrides ------------------------------------------------------------------------------


def test_env_overrides() -> None:
    config = load_config(
        None,
        env={
            "EMOTION_EDGE__MQTT__PORT": "1884",
            "EMOTION_EDGE__MQTT__TLS__ENABLED": "true",
            "EMOTION_EDGE__DEVICE_ID": "x",
            "EMOTION_EDGE__EMG__HOP": "250",
            "EMOTION_EDGE__DECISION__ENTER_THRESHOLD": "0.7",
            "EMOTION_EDGE__MQTT__HOST": "broker.lan",
            "UNRELATED": "1",
        },
    )
    assert config.mqtt.port == 1884
    assert config.mqtt.tls.enabled is True
    assert config.device_id == "x"
    assert config.emg.hop == 250
    assert config.decision.enter_threshold == 0.7
    assert config.mqtt.host == "broker.lan"


def test_env_names_are_case_insensitive_and_values_json() -> None:
    config = load_config(
        None,
        env={
            "emotion_edge__Mqtt__Tls__Insecure": "true",
            "EMOTION_EDGE__LOGGING__LEVEL": "debug",
            "EMOTION_EDGE__EMG__REPLAY__SPEED": "max",
            "EMOTION_EDGE__MQTT__CLIENT_ID": "null",
        },
    )
    assert config.mqtt.tls.insecure is True
    assert config.logging.level == "DEBUG"
    assert config.emg.replay.speed == "max"
    assert config.mqtt.client_id is None


def test_env_keeps_numeric_text_for_text_fields() -> None:
    config = load_config(
        None,
        env={
            "EMOTION_EDGE__DEVICE_ID": "1234",
            "EMOTION_EDGE__MQTT__USERNAME": "007",
            "EMOTION_EDGE__MQTT__PASSWORD": "123456",
        },
    )
    assert config.device_id == "1234"
    assert config.mqtt.username == "007"
    assert config.mqtt.password is not None
    assert config.mqtt.password.get_secret_value() == "123456"


def test_env_overrides_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, '[mqtt]\nhost = "a"\nport = 1000\n')
    config = load_config(path, env={"EMOTION_EDGE__MQTT__PORT": "2000"})
    assert (config.mqtt.host, config.mqtt.port) == ("a", 2000)


def test_env_bad_value_names_key_and_variable() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, env={"EMOTION_EDGE__MQTT__PORT": "eighteen"})
    ((path, message),) = info.value.errors
    assert path == "mqtt.port"
    assert "EMOTION_EDGE__MQTT__PORT" in message


def test_env_unknown_key() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, env={"EMOTION_EDGE__MQTT__TLS__VERIFY": "false"})
    assert error_paths(info.value) == ["mqtt.tls.verify"]
    assert "unknown key" in info.value.errors[0][1]


def test_env_malformed_name() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, env={"EMOTION_EDGE__MQTT____PORT": "1"})
    assert error_paths(info.value) == ["EMOTION_EDGE__MQTT____PORT"]


def test_env_cannot_nest_into_a_value() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, env={"EMOTION_EDGE__DEVICE_ID__X": "1"})
    assert error_paths(info.value) == ["device_id"]


def test_check_config_applies_env(tmp_path: Path) -> None:
    path = write(tmp_path, "")
    result = run_cli("check-config", str(path), env=clean_env(EMOTION_EDGE__MQTT__PORT="0"))
    assert result.returncode == EXIT_CONFIG
    assert result.stderr.startswith("emotion-edge: config error: mqtt.port: ")
    assert "Traceback" not in result.stderr


# --- secrets --------------------------------------------------------------------------------------------


def test_password_file(tmp_path: Path) -> None:
    secret = write(tmp_path, PASSWORD + "\n", "mqtt_password.txt")
    path = write(tmp_path, f'[mqtt]\nusername = "edge"\npassword_file = "{secret}"\n')
    config = load_config(path, env={})
    assert config.mqtt.password is not None
    assert config.mqtt.password.get_secret_value() == PASSWORD
    assert config.mqtt.password_file == secret


def test_password_file_beats_credentials_directory(tmp_path: Path) -> None:
    (tmp_path / "creds").mkdir()
    (tmp_path / "creds" / "mqtt_password").write_text("from-credential")
    secret = write(tmp_path, "from-file\n", "pw")
    path = write(tmp_path, f'[mqtt]\nusername = "edge"\npassword_file = "{secret}"\n')
    config = load_config(path, env={"CREDENTIALS_DIRECTORY": str(tmp_path / "creds")})
    assert config.mqtt.password is not None
    assert config.mqtt.password.get_secret_value() == "from-file"


def test_password_file_unreadable(tmp_path: Path) -> None:
    path = write(tmp_path, f'[mqtt]\nusername = "edge"\npassword_file = "{tmp_path / "missing"}"\n')
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert error_paths(info.value) == ["mqtt.password_file"]


def test_password_file_empty(tmp_path: Path) -> None:
    secret = write(tmp_path, "\n", "pw")
    path = write(tmp_path, f'[mqtt]\nusername = "edge"\npassword_file = "{secret}"\n')
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert error_paths(info.value) == ["mqtt.password_file"]


def test_credentials_directory(tmp_path: Path) -> None:
    (tmp_path / "mqtt_password").write_text(PASSWORD + "\n")
    path = write(tmp_path, '[mqtt]\nusername = "edge"\n')
    config = load_config(path, env={"CREDENTIALS_DIRECTORY": str(tmp_path)})
    assert config.mqtt.password is not None
    assert config.mqtt.password.get_secret_value() == PASSWORD


def test_password_in_file_beats_credential(tmp_path: Path) -> None:
    (tmp_path / "mqtt_password").write_text("from-credential")
    path = write(tmp_path, '[mqtt]\nusername = "edge"\npassword = "inline"\n')
    config = load_config(path, env={"CREDENTIALS_DIRECTORY": str(tmp_path)})
    assert config.mqtt.password is not None
    assert config.mqtt.password.get_secret_value() == "inline"


def test_credentials_directory_without_the_credential(tmp_path: Path) -> None:
    config = load_config(None, env={"CREDENTIALS_DIRECTORY": str(tmp_path)})
    assert config.mqtt.password is None


def test_credential_without_username(tmp_path: Path) -> None:
    (tmp_path / "mqtt_password").write_text(PASSWORD)
    with pytest.raises(ConfigError) as info:
        load_config(None, env={"CREDENTIALS_DIRECTORY": str(tmp_path)})
    assert error_paths(info.value) == ["mqtt.username"]
    assert PASSWORD not in str(info.value)


def test_secret_never_in_str_repr_dump_or_summary(tmp_path: Path) -> None:
    path = write(tmp_path, f'[mqtt]\nhost = "broker.lan"\nusername = "edge"\npassword = "{PASSWORD}"\n')
    config = load_config(path, env={})
    assert config.mqtt.password is not None
    assert config.mqtt.password.get_secret_value() == PASSWORD
    for text in (
        str(config),
        repr(config),
        config.model_dump_json(),
        str(config.model_dump()),
        *summary(config),
    ):
        assert PASSWORD not in text


def test_check_config_ok_redacts_password(tmp_path: Path) -> None:
    path = write(tmp_path, f'[mqtt]\nhost = "broker.lan"\nusername = "edge"\npassword = "{PASSWORD}"\n')
    result = run_cli("check-config", str(path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("config OK")
    assert "broker.lan:1883" in result.stdout
    assert "password=**********" in result.stdout
    assert PASSWORD not in result.stdout + result.stderr


def test_check_config_password_and_bad_port(tmp_path: Path) -> None:
    path = write(tmp_path, f'[mqtt]\nusername = "edge"\npassword = "{PASSWORD}"\nport = 123456\n')
    result = run_cli("check-config", str(path), env=clean_env(EMOTION_EDGE__MQTT__QOS="9"))
    assert result.returncode == EXIT_CONFIG
    assert "emotion-edge: config error: mqtt.port: " in result.stderr
    assert "emotion-edge: config error: mqtt.qos: " in result.stderr
    assert PASSWORD not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr


def test_check_config_credential_from_env(tmp_path: Path) -> None:
    (tmp_path / "mqtt_password").write_text(PASSWORD)
    path = write(tmp_path, '[mqtt]\nusername = "edge"\n')
    result = run_cli("check-config", str(path), env=clean_env(CREDENTIALS_DIRECTORY=str(tmp_path)))
    assert result.returncode == 0, result.stderr
    assert "password=**********" in result.stdout
    assert PASSWORD not in result.stdout


# --- the other subcommands ------------------------------------------------------------------------------


def test_config_schema_has_descriptions_everywhere() -> None:
    result = run_cli("config-schema")
    assert result.returncode == 0, result.stderr
    schema = json.loads(result.stdout)
    assert schema == json.loads(json.dumps(config_schema()))
    models = [schema, *schema["$defs"].values()]
    assert len(models) >= 10
    checked = 0
    for model in models:
        assert model.get("additionalProperties") is False
        for name, prop in model["properties"].items():
            assert prop.get("description"), f"{model['title']}.{name} has no description"
            checked += 1
    assert checked >= 45
    password = schema["$defs"]["MqttConfig"]["properties"]["password"]
    assert {"format": "password", "type": "string", "writeOnly": True} in password["anyOf"]


def test_print_default_config() -> None:
    result = run_cli("print-default-config")
    assert result.returncode == 0, result.stderr
    assert result.stdout == default_config_toml()


def test_check_config_missing_file(tmp_path: Path) -> None:
    result = run_cli("check-config", str(tmp_path / "absent.toml"))
    assert result.returncode == EXIT_CONFIG
    assert (
        result.stderr
        == f"emotion-edge: config error: {tmp_path / 'absent.toml'}: cannot read: No such file or directory\n"
    )


def test_register_adds_subcommands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser(prog="emotion-edge")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["check-config", str(write(tmp_path, 'device_id = "pi"\n'))])
    assert args.func(args) == 0
    assert "device_id  pi" in capsys.readouterr().out
    args = parser.parse_args(["print-default-config"])
    assert args.func(args) == 0
    assert capsys.readouterr().out == default_config_toml()
    args = parser.parse_args(["config-schema"])
    assert args.func(args) == 0
    assert json.loads(capsys.readouterr().out)["title"] == "Config"


def test_exit_config_is_ex_config() -> None:
    assert EXIT_CONFIG == 78
