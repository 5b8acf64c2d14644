"""Where the shipped models live: the package ``edge.models`` (the repository's ``models/``)."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

SHIPPED_EMG_MODEL = "emg/emg.tflite"
SHIPPED_FACE_MODEL = "face/face.tflite"


def shipped_model(relative: str) -> Path:
    """The path of a shipped model (its card sits beside it).

    ``importlib.resources`` finds the package wherever it was installed (a venv, ``--user``, the
    system, or an editable checkout, where ``edge.models`` maps to ``models/``), so no
    ``sys.prefix`` or ``site-packages`` guessing. The interpreter needs a real file, and wheels
    are always unpacked on disk; a zipped install is refused rather than silently copied.
    """
    resource = files("edge.models").joinpath(relative)
    if not isinstance(resource, Path):
        raise RuntimeError(f"edge.models is not installed on a file system ({resource!r}): install the wheel")
    return resource
