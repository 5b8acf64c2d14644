"""edge.config rejects what the README does not promise: odd types, huge or special files, deep nesting.

Each bad input must end as one ``emotion-edge: config error: <key>: ...`` line and exit 78, through the real
``python -m edge.cli`` entry point, never as a hang, a traceback or a MemoryError.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from edge.config import EXIT_CONFIG, Config, ConfigError, load_config
from edge.config import emg as emg_section
from edge.config.emg import EmgSerialConfig
from edge.config.mqtt import MqttConfig

REPO = Path(__file__).resolve().parent.parent
CLI_TIMEOUT_S = 60
MEMORY_LIMIT = 2 << 30  # bytes of address space for the CLI: reading /dev/zero must not take the machine


def clean_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.upper().startswith("EMOTION_EDGE__") and k != "CREDENTIALS_DIRECTORY"
    }
    env.update(OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", **extra)
    return env


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def cli(*args: str, env: dict[str, str] | None = None, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    """``python -m edge.cli ARGS``; a hang raises TimeoutExpired (and the child is killed)."""
    return subprocess.run(
        [sys.executable, "-m", "edge.cli", *args],
        cwd=cwd,
        env=env if env is not None else clean_env(),
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        preexec_fn=_limit_memory,
    )


def assert_config_error(result: subprocess.CompletedProcess[str], key: str, fragment: str = "") -> str:
    assert result.returncode == EXIT_CONFIG, result.stdout + result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert lines and all(line.startswith("emotion-edge: config error: ") for line in lines), result.stderr
    named = [line for line in lines if line.startswith(f"emotion-edge: config error: {key}: ")]
    assert named, f"no error names {key!r}:\n{result.stderr}"
    assert any(fragment in line for line in named), result.stderr
    return named[0]


def write(tmp_path: Path, text: str, name: str = "config.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def errors_of(path: Path | None, env: dict[str, str] | None = None, **kwargs: Any) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as info:
        load_config(path, env={} if env is None else env, **kwargs)
    return info.value.errors


def finishes_within(seconds: float, call: Callable[[], object], release: Callable[[], None]) -> object:
    """``call()`` in a thread; if it is still blocked after ``seconds``, ``release()`` it and fail."""
    outcome: list[object] = []

    def target() -> None:
        try:
            outcome.append(call())
        except BaseException as exc:  # handed back to the test
            outcome.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        release()
        thread.join(10)
        pytest.fail(f"blocked for more than {seconds} s")
    return outcome[0]


# --- emg.serial.baudrate --------------------------------------------------------------------------------


@pytest.mark.parametrize("baud", [300, 9600, 115200, 230400, 250000, 460800, 921600, 1000000, 4000000])
def test_standard_baudrates_are_accepted(baud: int) -> None:
    assert EmgSerialConfig(baudrate=baud).baudrate == baud


@pytest.mark.parametrize(
    "baud", [0, 1, 299, 12345, 230401, 4000001, 2**31, 2**63 - 1, 10**30, True, "9600", 9600.0]
)
def test_other_baudrates_are_rejected(baud: Any) -> None:
    with pytest.raises(ValidationError):
        Config.model_validate({"emg": {"serial": {"baudrate": baud}}})


def test_baudrate_choice_is_documented() -> None:
    field = EmgSerialConfig.model_fields["baudrate"]
    assert field.description and "4000000" in field.description
    rates = emg_section.STANDARD_BAUDRATES
    assert 230400 in rates and min(rates) == 300 and max(rates) == 4000000
    schema = Config.model_json_schema()["$defs"]["EmgSerialConfig"]["properties"]["baudrate"]
    assert schema["enum"] == sorted(rates)


def test_huge_baudrate_fails_check_config(tmp_path: Path) -> None:
    path = write(tmp_path, "[emg.serial]\nbaudrate = 9223372036854775807\n")
    assert_config_error(cli("check-config", str(path)), "emg.serial.baudrate", "baud rate")


# --- mqtt.password_file: special and large files ---------------------------------------------------------


def password_config(tmp_path: Path, secret: Path | str) -> Path:
    return write(tmp_path, f'[mqtt]\nusername = "edge"\npassword_file = "{secret}"\n')


def test_password_file_fifo_does_not_hang_check_config(tmp_path: Path) -> None:
    fifo = tmp_path / "pw.fifo"
    os.mkfifo(fifo)
    result = cli("check-config", str(password_config(tmp_path, fifo)))
    assert_config_error(result, "mqtt.password_file", "not a regular file")


def test_password_file_fifo_does_not_hang_load_config(tmp_path: Path) -> None:
    fifo = tmp_path / "pw.fifo"
    os.mkfifo(fifo)
    path = password_config(tmp_path, fifo)

    def release() -> None:
        # A blocked open() of the FIFO returns once a writer comes and goes.
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        os.close(fd)

    outcome = finishes_within(10, lambda: load_config(path, env={}), release)
    assert isinstance(outcome, ConfigError), outcome
    assert [key for key, _ in outcome.errors] == ["mqtt.password_file"]


def test_password_file_dev_zero_is_refused_not_read(tmp_path: Path) -> None:
    result = cli("check-config", str(password_config(tmp_path, "/dev/zero")))
    assert "MemoryError" not in result.stderr
    assert_config_error(result, "mqtt.password_file", "not a regular file")


def test_password_file_larger_than_a_password(tmp_path: Path) -> None:
    big = write(tmp_path, "x" * 100_000, "pw")
    assert errors_of(password_config(tmp_path, big)) == [
        ("mqtt.password_file", f"{big} is larger than 4096 bytes: expected a file holding only the password")
    ]


def test_password_file_of_the_largest_size_is_read(tmp_path: Path) -> None:
    secret = "p" * 4095
    pw = write(tmp_path, secret + "\n", "pw")
    config = load_config(password_config(tmp_path, pw), env={})
    assert config.mqtt.password is not None and config.mqtt.password.get_secret_value() == secret


def test_password_file_directory(tmp_path: Path) -> None:
    assert errors_of(password_config(tmp_path, tmp_path)) == [
        ("mqtt.password_file", f"{tmp_path} is a directory, not a regular file")
    ]


def test_credential_fifo_does_not_hang(tmp_path: Path) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    os.mkfifo(creds / "mqtt_password")
    path = write(tmp_path, '[mqtt]\nusername = "edge"\n')
    result = cli("check-config", str(path), env=clean_env(CREDENTIALS_DIRECTORY=str(creds)))
    assert_config_error(result, "mqtt.password", "not a regular file")


# --- nesting depth --------------------------------------------------------------------------------------


def nested(depth: int, open_: str = "{a = ", close: str = "}") -> str:
    return open_ * depth + "1" + close * depth


def test_deep_inline_tables_through_the_cli(tmp_path: Path) -> None:
    path = write(tmp_path, f'device_id = "pi"\n[emg.replay]\nspeed = {nested(1000)}\n')
    result = cli("check-config", str(path))
    line = assert_config_error(result, "emg.replay.speed", "nested more than 16 levels")
    assert "line 3" in line
    assert "RecursionError" not in line


@pytest.mark.parametrize(
    ("text", "key"),
    [
        (f"x = {nested(400)}\n", "x"),
        (f"x = {nested(3000, '[', ']')}\n", "x"),
        (f"[mqtt]\nport = {nested(17, '[', ']')}\n", "mqtt.port"),
        (f'[mqtt.tls]\n"odd key".b = [{nested(30)}]\n', "mqtt.tls.odd key.b"),
        (f"[[mqtt]]\nport = {nested(40)}\n", "mqtt.port"),
        (f"a = [\n  1,\n  {nested(40)},\n]\n", "a"),
        (f"a = {{b = 1, c = {nested(40)}}}\n", "a"),
        # Past the first nested value: the key is the one being assigned there, not the first of the file.
        (f'[mqtt]\nhost = "b"\n[emg]\nhop = {nested(20)}\n', "emg.hop"),
    ],
)
def test_deep_nesting_is_refused_before_parsing(tmp_path: Path, text: str, key: str) -> None:
    errors = errors_of(write(tmp_path, text))
    assert len(errors) == 1, errors
    assert errors[0][0] == key
    assert "nested more than 16 levels" in errors[0][1]


def test_deep_dotted_keys_name_the_path(tmp_path: Path) -> None:
    errors = errors_of(write(tmp_path, "[emg]\n" + ".".join(["k"] * 200) + " = 1\n"))
    ((key, message),) = errors
    assert key == "emg." + ".".join(["k"] * 16)
    assert "nested more than 16 levels" in message


def test_deep_table_header(tmp_path: Path) -> None:
    ((key, message),) = errors_of(write(tmp_path, "[" + ".".join(["t"] * 50) + "]\nx = 1\n"))
    assert key == ".".join(["t"] * 17)
    assert "nested more than 16 levels" in message


def test_deep_env_override_names_the_variable() -> None:
    name = "EMOTION_EDGE__" + "__".join(["A"] * 30)
    ((key, message),) = errors_of(None, env={name: "1"})
    assert key == ".".join(["a"] * 17)
    assert name in message


def test_brackets_inside_strings_and_comments_do_not_count(tmp_path: Path) -> None:
    brackets = "[{" * 40
    text = (
        f'device_id = "pi" # {brackets}\n'
        f"[mqtt] # {brackets}\n"
        f'username = "{brackets}\\"{brackets}"\n'
        f"client_id = '{brackets}'\n"
        f'topic_prefix = """\n{brackets}\\"""{brackets}"""\n'
        f"discovery_prefix = '''\n{brackets}''''\n"
        f"[emg]\nhop = {nested(10)}\n"
    )
    errors = errors_of(write(tmp_path, text))
    # The strings are skipped whole, so the only error is the ordinary one for the (shallow) hop table.
    assert errors == [("emg.hop", "must be an integer")]


def test_nesting_at_the_limit_gets_the_ordinary_error(tmp_path: Path) -> None:
    # 1 level for [emg], 15 for the value: within the limit, so pydantic explains what is wrong.
    ((key, message),) = errors_of(write(tmp_path, f"[emg]\nhop = {nested(15)}\n"))
    assert key == "emg.hop"
    assert "nested" not in message


def test_config_file_too_large(tmp_path: Path) -> None:
    path = write(tmp_path, "# " + "x" * (1 << 20) + "\n")
    ((where, message),) = errors_of(path)
    assert where == str(path)
    assert "larger than" in message


def test_config_file_dev_zero(tmp_path: Path) -> None:
    result = cli("check-config", "/dev/zero")
    assert result.returncode == EXIT_CONFIG, result.stderr[-3000:]
    assert result.stderr.startswith("emotion-edge: config error: /dev/zero: ")
    assert "Traceback" not in result.stderr


# --- files the config names ------------------------------------------------------------------------------


def test_missing_ca_file_fails_check_config(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f'[mqtt]\nhost = "broker.lan"\n[mqtt.tls]\nenabled = true\nca_file = "{tmp_path / "ca.crt"}"\n',
    )
    line = assert_config_error(cli("check-config", str(path)), "mqtt.tls.ca_file", "No such file")
    assert str(tmp_path / "ca.crt") in line


def test_missing_ca_file_fails_run_naming_the_key_not_the_outbox(tmp_path: Path) -> None:
    outbox = tmp_path / "outbox.sqlite3"
    path = write(
        tmp_path,
        '[mqtt]\nhost = "127.0.0.1"\nport = 9\n[mqtt.tls]\nenabled = true\n'
        f'ca_file = "{tmp_path / "ca.crt"}"\n[emg]\nsource = "off"\n[outbox]\npath = "{outbox}"\n',
    )
    result = cli("run", "--config", str(path))
    assert_config_error(result, "mqtt.tls.ca_file", "No such file")
    assert "outbox" not in result.stderr
    assert not outbox.exists()  # refused before anything started


@pytest.mark.parametrize("key", ["ca_file", "cert_file", "key_file"])
def test_tls_files_are_checked_when_tls_is_on(tmp_path: Path, key: str) -> None:
    good = write(tmp_path, "pem\n", "good.pem")
    files = {"ca_file": good, "cert_file": good, "key_file": good, key: tmp_path / "absent.pem"}
    lines = "".join(f'{name} = "{value}"\n' for name, value in files.items())
    path = write(tmp_path, f"[mqtt.tls]\nenabled = true\n{lines}")
    assert errors_of(path) == [
        (f"mqtt.tls.{key}", f"cannot read {tmp_path / 'absent.pem'}: No such file or directory")
    ]
    off = write(tmp_path, f"[mqtt.tls]\nenabled = false\n{lines}", "off.toml")
    assert load_config(off, env={}).mqtt.tls.enabled is False  # not used, so not checked


def test_file_error_names_the_environment_variable(tmp_path: Path) -> None:
    env = {
        "EMOTION_EDGE__MQTT__TLS__ENABLED": "true",
        "EMOTION_EDGE__MQTT__TLS__CA_FILE": str(tmp_path / "x"),
    }
    ((key, message),) = errors_of(None, env=env)
    assert key == "mqtt.tls.ca_file"
    assert "EMOTION_EDGE__MQTT__TLS__CA_FILE" in message


def test_every_bad_file_is_reported(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    path = write(
        tmp_path,
        f'[mqtt.tls]\nenabled = true\ncert_file = "{fifo}"\nkey_file = "{tmp_path}"\n'
        f'[models]\nemg = "{tmp_path / "emg.tflite"}"\nface = "{tmp_path / "face.tflite"}"\n'
        f'[camera]\nsource = "file"\npath = "{tmp_path / "video.avi"}"\n'
        f'[face]\ndetector_model = "{tmp_path / "yunet.onnx"}"\n',
    )
    assert [key for key, _ in errors_of(path)] == [
        "mqtt.tls.cert_file",
        "mqtt.tls.key_file",
        "models.emg",
        "models.face",
        "face.detector_model",
    ]


def test_model_without_its_card(tmp_path: Path) -> None:
    model = write(tmp_path, "tflite", "emg.tflite")
    ((key, message),) = errors_of(write(tmp_path, f'[models]\nemg = "{model}"\n'))
    assert key == "models.emg"
    assert str(tmp_path / "emg.card.json") in message


def test_models_are_checked_only_for_modalities_in_use(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f'[emg]\nsource = "off"\n[models]\nemg = "{tmp_path / "a.tflite"}"\n'
        f'face = "{tmp_path / "b.tflite"}"\n'
        f'[face]\ndetector_model = "{tmp_path / "c.onnx"}"\n',
    )
    config = load_config(path, env={})
    assert config.models.emg == tmp_path / "a.tflite"


def test_missing_replay_path_fails_check_config(tmp_path: Path) -> None:
    path = write(tmp_path, f'[emg]\nsource = "replay"\n[emg.replay]\npath = "{tmp_path / "rec.csv"}"\n')
    line = assert_config_error(cli("check-config", str(path)), "emg.replay.path", "No such file")
    assert str(tmp_path / "rec.csv") in line


def test_replay_path_that_is_a_fifo_fails_check_config(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "rec.csv")
    path = write(tmp_path, f'[emg]\nsource = "replay"\n[emg.replay]\npath = "{tmp_path / "rec.csv"}"\n')
    assert_config_error(cli("check-config", str(path)), "emg.replay.path", "not a regular file")


def test_replay_path_is_left_to_the_replay_source_by_default(tmp_path: Path) -> None:
    # `emotion-edge replay MISSING.csv` reports a missing recording itself (EX_NOINPUT, 66).
    path = write(tmp_path, f'[emg]\nsource = "replay"\n[emg.replay]\npath = "{tmp_path / "rec.csv"}"\n')
    assert load_config(path, env={}).emg.replay.path == tmp_path / "rec.csv"
    assert [key for key, _ in errors_of(path, check_recording=True)] == ["emg.replay.path"]


def test_existing_files_pass_check_config(tmp_path: Path) -> None:
    pem = write(tmp_path, "pem\n", "ca.crt")
    rec = write(tmp_path, "sample,EMG1,EMG2,EMG3\n", "rec.csv")
    path = write(
        tmp_path,
        f'[mqtt]\nhost = "broker.lan"\n[mqtt.tls]\nenabled = true\nca_file = "{pem}"\n'
        f'[emg]\nsource = "replay"\n[emg.replay]\npath = "{rec}"\n',
    )
    result = cli("check-config", str(path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("config OK")


# --- strict types ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"mqtt": {"tls": {"enabled": "yes"}}}, "mqtt.tls.enabled"),
        ({"mqtt": {"tls": {"enabled": 1}}}, "mqtt.tls.enabled"),
        ({"mqtt": {"qos": True}}, "mqtt.qos"),
        ({"mqtt": {"qos": "1"}}, "mqtt.qos"),
        ({"mqtt": {"qos": 1.0}}, "mqtt.qos"),
        ({"mqtt": {"port": "1883"}}, "mqtt.port"),
        ({"mqtt": {"port": 1883.0}}, "mqtt.port"),
        ({"mqtt": {"discovery": "false"}}, "mqtt.discovery"),
        ({"mqtt": {"stats_interval_s": True}}, "mqtt.stats_interval_s"),
        ({"emg": {"sample_rate_hz": "1000"}}, "emg.sample_rate_hz"),
        ({"emg": {"hop": True}}, "emg.hop"),
        ({"emg": {"replay": {"loop": "true"}}}, "emg.replay.loop"),
        ({"camera": {"loop": 0}}, "camera.loop"),
        ({"camera": {"width": 640.0}}, "camera.width"),
        ({"face": {"detect_max_side": "256"}}, "face.detect_max_side"),
        ({"decision": {"ema_alpha": "0.3"}}, "decision.ema_alpha"),
        ({"outbox": {"max_events": False}}, "outbox.max_events"),
        ({"models": {"num_threads": "2"}}, "models.num_threads"),
    ],
)
def test_no_coercion(data: dict[str, Any], key: str) -> None:
    with pytest.raises(ValidationError) as info:
        Config.model_validate(data)
    assert [".".join(str(p) for p in e["loc"]) for e in info.value.errors()] == [key]


def test_integers_are_still_numbers() -> None:
    config = Config.model_validate(
        {"emg": {"sample_rate_hz": 1000, "weight": 1}, "camera": {"fps": 5}, "decision": {"ema_alpha": 1}}
    )
    assert config.emg.sample_rate_hz == 1000.0 and isinstance(config.emg.sample_rate_hz, float)
    assert config.camera.fps == 5.0


def test_env_overrides_still_work() -> None:
    config = load_config(
        None,
        env={
            "EMOTION_EDGE__MQTT__TLS__ENABLED": "True",
            "EMOTION_EDGE__MQTT__DISCOVERY": "FALSE",
            "EMOTION_EDGE__MQTT__QOS": "2",
            "EMOTION_EDGE__MQTT__PORT": "8883",
            "EMOTION_EDGE__EMG__SERIAL__BAUDRATE": "115200",
            "EMOTION_EDGE__CAMERA__FPS": "7.5",
            "EMOTION_EDGE__EMG__SAMPLE_RATE_HZ": "1000",
            "EMOTION_EDGE__EMG__REPLAY__SPEED": "20",
            "EMOTION_EDGE__MQTT__HOST": "10.0.0.2",
        },
    )
    assert config.mqtt.tls.enabled is True and config.mqtt.discovery is False
    assert (config.mqtt.qos, config.mqtt.port, config.emg.serial.baudrate) == (2, 8883, 115200)
    assert (config.camera.fps, config.emg.sample_rate_hz, config.emg.replay.speed) == (7.5, 1000.0, 20.0)
    assert config.mqtt.host == "10.0.0.2"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("EMOTION_EDGE__MQTT__TLS__ENABLED", "yes"),
        ("EMOTION_EDGE__MQTT__TLS__ENABLED", "1"),
        ("EMOTION_EDGE__MQTT__QOS", "true"),
        ("EMOTION_EDGE__MQTT__PORT", "1883.0"),
        ("EMOTION_EDGE__MQTT__HOST", "broker lan"),
    ],
)
def test_env_overrides_are_not_coerced_either(name: str, value: str) -> None:
    ((key, message),) = errors_of(None, env={name: value})
    assert key == name.removeprefix("EMOTION_EDGE__").replace("__", ".").lower()
    assert name in message


# --- mqtt.host ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "host",
    [
        "localhost",
        "broker.lan",
        "broker.lan.",
        "homeassistant.local",
        "mqtt-1.example.com",
        "my_broker",
        "192.168.1.10",
        "::1",
        "fe80::1%eth0",
        "2001:db8::42",
        "xn--bcher-kva.example",
        "a" * 63 + ".lan",
    ],
)
def test_valid_hosts(host: str) -> None:
    assert MqttConfig(host=host).host == host


@pytest.mark.parametrize(
    "host",
    [
        "",
        " broker.lan",
        "broker.lan ",
        "broker lan",
        "broker.lan\n",
        "broker\r\n.lan",
        "broker\t",
        "broker\x00",
        "broker\x7f",
        "mqtt://broker.lan",
        "broker.lan:1883",
        "[::1]",
        "-broker.lan",
        "broker-.lan",
        "broker..lan",
        ".broker.lan",
        "a" * 64 + ".lan",
        ("a" * 60 + ".") * 5,
        "broker/lan",
        "bücher.example",
        "user@broker.lan",
    ],
)
def test_invalid_hosts(host: str) -> None:
    with pytest.raises(ValidationError) as info:
        MqttConfig(host=host)
    assert [e["loc"] for e in info.value.errors()] == [("host",)]
