"""Where the shipped models live, in a source checkout and in an installed wheel."""

from __future__ import annotations

import os
import sys
from pathlib import Path

MODELS_ENV = "EMOTION_EDGE_MODELS"
SHIPPED_EMG_MODEL = "emg/emg.tflite"
SHIPPED_FACE_MODEL = "face/face.tflite"


def models_dir() -> Path:
    """``$EMOTION_EDGE_MODELS``, else the checkout's ``models/``, else the wheel's data dir."""
    env = os.environ.get(MODELS_ENV)
    if env:
        return Path(env)
    checkout = Path(__file__).resolve().parent.parent / "models"
    if checkout.is_dir():
        return checkout
    return Path(sys.prefix) / "share" / "emotion-edge" / "models"


def shipped_model(relative: str) -> Path:
    return models_dir() / relative
