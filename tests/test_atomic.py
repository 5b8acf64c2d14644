"""edge.atomic: a write that fails leaves the old file and no temporary file."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.atomic import atomic_write


def test_replaces_the_file_whole(tmp_path: Path) -> None:
    target = tmp_path / "model.json"
    atomic_write(target, b"old")
    atomic_write(target, b"new")
    assert target.read_bytes() == b"new"
    assert [p.name for p in tmp_path.iterdir()] == ["model.json"]


def test_a_failed_write_keeps_the_old_file_and_cleans_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "model.json"
    atomic_write(target, b"old")

    def disk_full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("edge.atomic.os.fsync", disk_full)
    with pytest.raises(OSError, match="No space"):
        atomic_write(target, b"new")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["model.json"]
