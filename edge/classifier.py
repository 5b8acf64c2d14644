"""Run a carded ``.tflite`` model: quantise input, invoke, dequantise output."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from edge.emg.dsp import FloatArray
from edge.interpreter import make_interpreter
from edge.model_card import CardError, ModelCard, TensorQuantization, load_card

_NP_DTYPES: dict[str, Any] = {"int8": np.int8, "uint8": np.uint8, "float32": np.float32}
# np.iinfo() per call costs more than the quantisation itself.
_INT_RANGES = {"int8": (-128, 127), "uint8": (0, 255)}


def quantize(x: NDArray[np.floating[Any]], q: TensorQuantization) -> NDArray[Any]:
    """Real values -> the tensor's storage type, saturating at its range."""
    if q.dtype == "float32":
        return np.asarray(x, dtype=np.float32)
    lo, hi = _INT_RANGES[q.dtype]
    return np.clip(np.round(np.asarray(x) / q.scale) + q.zero_point, lo, hi).astype(_NP_DTYPES[q.dtype])


def dequantize(q_values: NDArray[Any], q: TensorQuantization) -> FloatArray:
    if q.dtype == "float32":
        return np.asarray(q_values, dtype=np.float64)
    return (np.asarray(q_values, dtype=np.float64) - q.zero_point) * q.scale


class TfliteClassifier:
    """A batch-1 TFLite classifier configured from its card.

    Not thread-safe: one instance per inference thread.
    """

    def __init__(self, model_path: str | Path, num_threads: int = 1) -> None:
        self.model_path = Path(model_path)
        self.card: ModelCard = load_card(self.model_path)
        self._interp, self.runtime_module = make_interpreter(str(self.model_path), num_threads)
        inp = self._interp.get_input_details()[0]
        out = self._interp.get_output_details()[0]
        self._check_tensor("input", inp, self.card.input_quantization)
        self._check_tensor("output", out, self.card.output_quantization)
        if int(out["shape"][-1]) != len(self.card.labels):
            raise CardError(
                f"{self.model_path}: model has {out['shape'][-1]} outputs, card lists "
                f"{len(self.card.labels)} labels"
            )
        self.input_shape: tuple[int, ...] = tuple(int(v) for v in inp["shape"])
        self._in_index = inp["index"]
        self._out_index = out["index"]

    def _check_tensor(self, which: str, detail: dict[str, Any], q: TensorQuantization) -> None:
        dtype = np.dtype(detail["dtype"]).name
        if dtype != q.dtype:
            raise CardError(f"{self.model_path}: {which} tensor is {dtype}, card says {q.dtype}")
        scale, zero_point = detail["quantization"]
        if q.dtype != "float32" and (not np.isclose(scale, q.scale, rtol=1e-6) or zero_point != q.zero_point):
            raise CardError(
                f"{self.model_path}: {which} quantisation ({scale}, {zero_point}) differs from "
                f"the card's ({q.scale}, {q.zero_point})"
            )

    @property
    def labels(self) -> list[str]:
        return list(self.card.labels)

    def predict_quantized(self, x: FloatArray) -> NDArray[Any]:
        """Raw output tensors (int8 for a full-integer model), one row per input row."""
        x = np.asarray(x).reshape((-1, *self.input_shape[1:]))
        qx = quantize(x, self.card.input_quantization)
        out = np.empty((len(qx), len(self.labels)), dtype=_NP_DTYPES[self.card.output_quantization.dtype])
        for i in range(len(qx)):
            self._interp.set_tensor(self._in_index, qx[i : i + 1])
            self._interp.invoke()
            out[i] = self._interp.get_tensor(self._out_index)[0]
        return out

    def predict_proba(self, x: FloatArray) -> FloatArray:
        """Probabilities per label, ``(n, n_labels)``."""
        return dequantize(self.predict_quantized(x), self.card.output_quantization)
