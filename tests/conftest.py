"""Shared fixtures: the read-only data in ../shared/data and the shipped models."""

from __future__ import annotations

import os
from pathlib import Path
from typing import NoReturn

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("EMOTION_EDGE_SHARED_DATA", REPO.parent / "shared" / "data"))
SHIPPED_EMG = REPO / "models" / "emg" / "emg.tflite"


def missing(message: str) -> NoReturn:
    """Something a test needs is not here: fail under CI (never a silent skip), skip locally."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


def shared_file(relative: str) -> Path:
    """A file from ../shared/data (see :func:`missing`)."""
    path = SHARED_DATA / relative
    if not path.exists():
        missing(f"test data missing: {path}")
    return path


@pytest.fixture(scope="session")
def emg_csv() -> Path:
    return shared_file("emg/emg_train.csv")
