"""Find a TFLite interpreter: LiteRT first, then tflite-runtime, then full TensorFlow."""

from __future__ import annotations

import importlib
from typing import Any

# tflite-runtime stopped at 2.14 (numpy<2, no Python 3.12+ wheels); ai-edge-litert is its
# maintained successor and is also faster, so it goes first.
INTERPRETER_MODULES: tuple[str, ...] = (
    "ai_edge_litert.interpreter",
    "tflite_runtime.interpreter",
    "tensorflow.lite",
)
# tensorflow.lite is a lazily populated API namespace: importing the dotted name directly
# yields the bare package without Interpreter, so it is reached through ``tensorflow``.
_VIA_ATTRIBUTE = {"tensorflow.lite": ("tensorflow", "lite")}


class NoInterpreterError(ImportError):
    """None of the supported TFLite runtimes is installed."""


def interpreter_class() -> tuple[Any, str]:
    """Return the first importable ``Interpreter`` class and the module it came from."""
    for name in INTERPRETER_MODULES:
        try:
            module = importlib.import_module(name)
            if name in _VIA_ATTRIBUTE:
                parent, attr = _VIA_ATTRIBUTE[name]
                module = getattr(importlib.import_module(parent), attr)
        except ImportError:
            continue
        return module.Interpreter, name
    raise NoInterpreterError(
        "no TFLite interpreter found; install one: pip install ai-edge-litert "
        "(or tflite-runtime on Python <= 3.11)"
    )


def make_interpreter(model_path: str, num_threads: int = 1) -> tuple[Any, str]:
    """Build and allocate an interpreter for ``model_path``."""
    cls, module = interpreter_class()
    interp = cls(model_path=model_path, num_threads=num_threads)
    interp.allocate_tensors()
    return interp, module
