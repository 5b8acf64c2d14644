"""The ``[web]`` section: off and on loopback by default; a password, read like the broker's, off loopback."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from edge.config import ConfigError, load_config
from edge.config.web import is_loopback


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def errors(path: Path, env: dict[str, str] | None = None) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as info:
        load_config(path, env=env or {})
    return info.value.errors


def test_defaults_are_off_and_loopback() -> None:
    web = load_config(None, env={}).web
    assert (web.enabled, web.host, web.password) == (False, "127.0.0.1", None)


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost", "127.0.0.2"])
def test_loopback_needs_no_password(tmp_path: Path, host: str) -> None:
    assert is_loopback(host)
    assert load_config(write(tmp_path, f'[web]\nenabled = true\nhost = "{host}"\n'), env={}).web.host == host


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.20", "pi.lan"])
def test_any_other_address_needs_a_password(tmp_path: Path, host: str) -> None:
    (found,) = errors(write(tmp_path, f'[web]\nhost = "{host}"\n'))
    assert found[0] == "web.password_file" and f"web.host ({host}) is not a loopback address" in found[1]


def test_password_file_and_credential(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("hunter2\n")
    path = write(tmp_path, f'[web]\nhost = "0.0.0.0"\npassword_file = "{secret}"\n')
    web = load_config(path, env={}).web
    assert web.password is not None and web.password.get_secret_value() == "hunter2"
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "web_password").write_text("from-systemd")
    path = write(tmp_path, '[web]\nhost = "0.0.0.0"\n')
    web = load_config(path, env={"CREDENTIALS_DIRECTORY": str(creds)}).web
    assert web.password is not None and web.password.get_secret_value() == "from-systemd"


def test_password_problems_name_their_key(tmp_path: Path) -> None:
    (empty := tmp_path / "empty").write_text("\n")
    found = errors(write(tmp_path, f'[web]\npassword_file = "{empty}"\n'))
    assert found == [("web.password_file", f"{empty} is empty")]
    found = errors(write(tmp_path, f'[web]\npassword = "x"\npassword_file = "{empty}"\n'))
    assert found[0][0] == "web.password_file" and "not both" in found[0][1]
    found = errors(write(tmp_path, '[web]\nport = 0\nvideo_fps = 30\nhost = "http://x"\n'))
    assert {key for key, _ in found} == {"web.port", "web.video_fps", "web.host"}


def test_an_empty_password_is_refused_not_treated_as_set(tmp_path: Path) -> None:
    # EMOTION_EDGE__WEB__PASSWORD=${UNSET} in a unit: an empty secret would let an empty token in.
    found = errors(write(tmp_path, '[web]\nhost = "0.0.0.0"\n'), env={"EMOTION_EDGE__WEB__PASSWORD": ""})
    assert found and found[0][0] == "web.password" and "empty" in found[0][1]
    assert errors(write(tmp_path, '[web]\npassword = ""\n'))[0][0] == "web.password"


def test_a_password_in_the_file_never_shows_in_errors(tmp_path: Path) -> None:
    found = errors(write(tmp_path, '[web]\npassword = "pa55word"\nport = "pa55word"\n'))
    assert all("pa55word" not in message for _, message in found)


def test_enabled_without_aiohttp_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "aiohttp", None)  # as if the 'web' extra were not installed
    (found,) = errors(write(tmp_path, "[web]\nenabled = true\n"))
    assert found == ("web.enabled", "the live page needs aiohttp: pip install 'emotion-edge[web]'")
    assert load_config(write(tmp_path, "[web]\nenabled = false\n"), env={}).web.enabled is False
