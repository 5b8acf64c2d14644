"""``emotion-edge models fetch``: verified, atomic download of YuNet (file:// URLs, no network needed)."""

from __future__ import annotations

import argparse
import hashlib
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from edge.models_fetch import (
    EXIT_DATA_ERROR,
    EXIT_UNAVAILABLE,
    YUNET_FILENAME,
    YUNET_SHA256,
    YUNET_URL,
    default_dest,
    fetch,
    register,
)
from tests.conftest import shared_file

REPO = Path(__file__).resolve().parent.parent
CLI = (
    "import argparse, sys; from edge.models_fetch import register; p = argparse.ArgumentParser(); "
    "s = p.add_subparsers(dest='c', required=True); register(s); a = p.parse_args(sys.argv[1:]); "
    "sys.exit(a.func(a))"
)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="emotion-edge")
    register(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["models", "fetch", *argv])


@pytest.fixture
def model_url() -> str:
    return shared_file("models/face_detection_yunet_2023mar.onnx").resolve().as_uri()


def test_fetch_from_file_url(tmp_path: Path, model_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    dest = tmp_path / "models"
    args = parse("--dest", str(dest), "--url", model_url)
    assert args.func(args) == 0
    saved = dest / YUNET_FILENAME
    assert sha256(saved) == YUNET_SHA256
    assert sorted(p.name for p in dest.iterdir()) == [YUNET_FILENAME]  # no temporary file left
    assert saved.stat().st_mode & 0o777 == 0o644
    out = capsys.readouterr().out.splitlines()
    assert out[0] == str(saved)
    assert "[face]" in out and f'detector_model = "{saved}"' in out


def test_the_printed_config_line_is_valid(tmp_path: Path, model_url: str) -> None:
    from edge.config import load_config

    saved = fetch(model_url, tmp_path)
    config = tmp_path / "config.toml"
    config.write_text(f'[face]\ndetector_model = "{saved}"\n')
    assert load_config(config, env={}).face.detector_model == saved


def test_checksum_mismatch_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"<html>rate limited</html>")
    dest = tmp_path / "models"
    args = parse("--dest", str(dest), "--url", junk.as_uri())
    assert args.func(args) == EXIT_DATA_ERROR == 65
    assert list(dest.iterdir()) == []
    assert "does not match" in capsys.readouterr().err


def test_mismatch_keeps_a_previous_good_file(tmp_path: Path, model_url: str) -> None:
    saved = fetch(model_url, tmp_path)
    saved.write_bytes(b"corrupted")  # a damaged copy is replaced only by a verified one
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"junk")
    args = parse("--dest", str(tmp_path), "--url", junk.as_uri())
    assert args.func(args) == EXIT_DATA_ERROR
    assert saved.read_bytes() == b"corrupted"
    assert fetch(model_url, tmp_path) == saved and sha256(saved) == YUNET_SHA256


def test_present_and_valid_needs_no_download(tmp_path: Path, model_url: str) -> None:
    saved = fetch(model_url, tmp_path)
    # Unreachable URL, but the file on disk already verifies: provisioning can rerun offline.
    assert fetch((tmp_path / "absent").as_uri(), tmp_path) == saved


def test_missing_file_url_is_unavailable(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = parse("--dest", str(tmp_path / "models"), "--url", (tmp_path / "absent.onnx").as_uri())
    assert args.func(args) == EXIT_UNAVAILABLE == 69
    assert not (tmp_path / "models" / YUNET_FILENAME).exists()
    assert "emotion-edge: models fetch: cannot download" in capsys.readouterr().err


def test_offline_is_exit_69(tmp_path: Path) -> None:
    # A port nothing listens on: the same failure as no network, without needing one.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            CLI,
            "models",
            "fetch",
            "--dest",
            str(tmp_path),
            "--url",
            f"http://127.0.0.1:{port}/y.onnx",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == EXIT_UNAVAILABLE, result.stderr
    assert "offline?" in result.stderr and "Traceback" not in result.stderr
    assert result.stdout == "" and list(tmp_path.iterdir()) == []


def test_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert YUNET_URL.startswith("https://github.com/opencv/opencv_zoo/")
    assert parse().url == YUNET_URL and parse().dest is None
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_dest() == tmp_path / ".cache" / "emotion-edge" / "models"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_dest() == tmp_path / "xdg" / "emotion-edge" / "models"


def test_not_a_url(tmp_path: Path) -> None:
    args = parse("--dest", str(tmp_path), "--url", str(tmp_path / "plain/path.onnx"))
    assert args.func(args) == 64
    assert list(tmp_path.iterdir()) == []


def test_unwritable_destination(tmp_path: Path, model_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")  # a file where a folder should be: fails even for root
    args = parse("--dest", str(blocker / "models"), "--url", model_url)
    assert args.func(args) == 73
    assert "cannot write to" in capsys.readouterr().err
