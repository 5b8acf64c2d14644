"""Find a TFLite interpreter: LiteRT first, then tflite-runtime, then full TensorFlow."""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
import tempfile
import threading
from collections.abc import Iterator
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
# The one line the XNNPACK CPU delegate logs each time a model is allocated; it reports nothing wrong.
_DELEGATE_NOTICE = b"Created TensorFlow Lite XNNPACK delegate for CPU."
# fd 2 belongs to the whole process: two models loading at once must not swap each other's stderr.
_STDERR_LOCK = threading.Lock()


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


@contextlib.contextmanager
def without_delegate_notice() -> Iterator[None]:
    """Pass on everything native code writes to stderr (fd 2) meanwhile, except the delegate notice.

    LiteRT's C++ logger prints it on every allocate_tensors(), and no setting reaches that logger from
    Python (TF_CPP_MIN_LOG_LEVEL does not). Real warnings and errors still arrive, once the block ends.
    """
    with _STDERR_LOCK, contextlib.ExitStack() as stack:
        sys.stderr.flush()
        try:
            capture = stack.enter_context(tempfile.TemporaryFile())
            saved = os.dup(2)
        except OSError:  # no temporary space, or no stderr at all: the notice is better than no model
            saved = -1
        if saved < 0:
            yield
            return
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()  # Python's own writes in the meantime belong to the capture too
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            kept = b"".join(line for line in capture if _DELEGATE_NOTICE not in line)
            if kept:
                with os.fdopen(os.dup(2), "wb") as stderr:
                    stderr.write(kept)


def make_interpreter(model_path: str, num_threads: int = 1) -> tuple[Any, str]:
    """Build and allocate an interpreter for ``model_path``."""
    cls, module = interpreter_class()
    with without_delegate_notice():
        interp = cls(model_path=model_path, num_threads=num_threads)
        interp.allocate_tensors()
    return interp, module
