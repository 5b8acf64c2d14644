"""Write a linear softmax classifier as a full-integer int8 ``.tflite``, without TensorFlow.

The graph is what TensorFlow's ``TFLiteConverter`` makes of a Keras ``Dense(k, activation="softmax")``
with ``Optimize.DEFAULT``, a representative data set, int8 builtins and int8 input/output types (see
``training/export.py``)::

    features int8 [1, d] --FULLY_CONNECTED(int8 weights per output channel, int32 bias)--> logits int8 [1, k]
    logits --SOFTMAX(beta 1)--> probs int8 [1, k], scale 1/256, zero point -128

and the quantisation parameters are chosen by the converter's rules, so for the same weights and the
same representative rows the two files compute the same integers (tests/test_calibration_offline.py
checks this against TensorFlow):

- activations (input, logits): asymmetric int8 over the representative range widened to include 0,
  ``scale = (max - min) / 255`` and the zero point nudged to an integer (MLIR's
  ``getNudgedScaleAndZeroPoint``);
- weights: symmetric per output channel, narrow range, ``scale_c = max|W_c| / 127``, zero point 0;
- bias: int32 with ``scale_c = input_scale * weight_scale_c``, zero point 0;
- softmax output: fixed by TFLite's int8 SOFTMAX kernel, which requires ``scale = 1/256`` and
  ``zero_point = -128`` (the range [0, 1) in 256 steps).

The flatbuffer is built with the TFLite schema that ships inside ``ai-edge-litert``
(``ai_edge_litert.schema_py_generated``) and the ``flatbuffers`` package it depends on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from edge.emg.dsp import FloatArray
from edge.model_card import TensorQuantization

INT8_MIN, INT8_MAX = -128, 127
# TFLite's int8 SOFTMAX kernel only accepts this output quantisation.
SOFTMAX_OUTPUT = TensorQuantization(dtype="int8", scale=1.0 / 256.0, zero_point=-128)
# Operator versions TensorFlow 2.21's converter writes for this graph (int8 per-channel
# FULLY_CONNECTED, int8 SOFTMAX); the interpreter checks it has kernels for them.
_FULLY_CONNECTED_VERSION = 4
_SOFTMAX_VERSION = 2
# Tensor data is aligned as TensorFlow aligns it, so kernels may read it in place.
_BUFFER_ALIGNMENT = 16


class TfliteSchemaUnavailable(ImportError):
    """No TFLite flatbuffer schema module is importable (ai-edge-litert is not installed)."""


def _schema() -> Any:
    try:
        from ai_edge_litert import schema_py_generated
    except ImportError as exc:
        raise TfliteSchemaUnavailable(
            "writing a .tflite needs the TFLite schema from ai-edge-litert: pip install ai-edge-litert"
        ) from exc
    schema: Any = schema_py_generated
    return schema


def _round_half_away(x: NDArray[np.floating[Any]]) -> NDArray[np.floating[Any]]:
    """C's ``std::round`` (TensorFlow's rounding), not numpy's round-half-to-even."""
    result: NDArray[np.floating[Any]] = np.sign(x) * np.floor(np.abs(x) + 0.5)
    return result


def activation_quantization(rmin: float, rmax: float) -> TensorQuantization:
    """Asymmetric int8 for a tensor observed in ``[rmin, rmax]``: the converter's rule."""
    rmin, rmax = min(float(rmin), 0.0), max(float(rmax), 0.0)
    qmin, qmax = float(INT8_MIN), float(INT8_MAX)
    if rmax - rmin < np.finfo(np.float64).eps:
        return TensorQuantization(dtype="int8", scale=1.0, zero_point=0)
    scale = (rmax - rmin) / (qmax - qmin)
    zp_from_min, zp_from_min_err = qmin - rmin / scale, abs(qmin) + abs(rmin / scale)
    zp_from_max, zp_from_max_err = qmax - rmax / scale, abs(qmax) + abs(rmax / scale)
    zp = zp_from_min if zp_from_min_err < zp_from_max_err else zp_from_max
    nudged = int(np.clip(_round_half_away(np.array(zp)), qmin, qmax))
    # The scale is stored as float32 in the flatbuffer; the card holds the same number.
    return TensorQuantization(dtype="int8", scale=float(np.float32(scale)), zero_point=nudged)


@dataclass(frozen=True)
class QuantizedLinear:
    """Every number that goes into the flatbuffer."""

    input_q: TensorQuantization
    logits_q: TensorQuantization
    weights: NDArray[np.int8]  # (k, d)
    weight_scales: NDArray[np.float32]  # (k,)
    bias: NDArray[np.int32]  # (k,)
    bias_scales: NDArray[np.float32]  # (k,)

    @property
    def output_q(self) -> TensorQuantization:
        return SOFTMAX_OUTPUT


def quantize_linear(weights: FloatArray, bias: FloatArray, representative: FloatArray) -> QuantizedLinear:
    """Quantise ``softmax(x @ weights.T + bias)`` for inputs like the rows of ``representative``
    (model inputs, i.e. already normalised features), as the TFLite converter would."""
    w = np.asarray(weights, dtype=np.float32)
    b = np.asarray(bias, dtype=np.float32)
    rep = np.asarray(representative, dtype=np.float32)
    if w.ndim != 2 or b.shape != (w.shape[0],) or rep.ndim != 2 or rep.shape[1] != w.shape[1]:
        raise ValueError(f"shapes do not fit: weights {w.shape}, bias {b.shape}, representative {rep.shape}")
    if len(rep) == 0:
        raise ValueError("need at least one representative row")
    input_q = activation_quantization(float(rep.min()), float(rep.max()))
    logits = rep @ w.T + b  # float32, as the calibrator runs the float graph
    logits_q = activation_quantization(float(logits.min()), float(logits.max()))
    w_max = np.abs(w).max(axis=1)
    weight_scales = np.where(w_max > 0, w_max / np.float32(INT8_MAX), np.float32(1.0)).astype(np.float32)
    wq = np.clip(_round_half_away(w / weight_scales[:, None]), -INT8_MAX, INT8_MAX).astype(np.int8)
    bias_scales = (np.float32(input_q.scale) * weight_scales).astype(np.float32)
    i32 = np.iinfo(np.int32)
    bq = np.clip(_round_half_away(b / bias_scales), i32.min, i32.max).astype(np.int32)
    return QuantizedLinear(input_q, logits_q, wq, weight_scales, bq, bias_scales)


def write_linear_softmax(
    weights: FloatArray, bias: FloatArray, representative: FloatArray, description: str = "emotion-edge"
) -> tuple[bytes, QuantizedLinear]:
    """The ``.tflite`` bytes of the quantised model, and the numbers in it."""
    q = quantize_linear(weights, bias, representative)
    return build_flatbuffer(q, description), q


def build_flatbuffer(q: QuantizedLinear, description: str = "emotion-edge") -> bytes:
    import flatbuffers  # type: ignore[import-untyped]

    s = _schema()
    k, d = q.weights.shape
    b = flatbuffers.Builder(1024)

    def int_vector(start: Any, values: list[int]) -> int:
        start(b, len(values))
        for v in reversed(values):
            b.PrependInt32(v)
        return int(b.EndVector())

    def offsets_vector(start: Any, offsets: list[int]) -> int:
        start(b, len(offsets))
        for off in reversed(offsets):
            b.PrependUOffsetTRelative(off)
        return int(b.EndVector())

    def data_buffer(data: bytes | None) -> int:
        vec = None
        if data:
            b.StartVector(1, len(data), _BUFFER_ALIGNMENT)
            b.head = b.head - len(data)
            b.Bytes[b.head : b.head + len(data)] = data
            vec = b.EndVector()
        s.BufferStart(b)
        if vec is not None:
            s.BufferAddData(b, vec)
        return int(s.BufferEnd(b))

    def quantization(scales: list[float], zero_points: list[int]) -> int:
        s.QuantizationParametersStartScaleVector(b, len(scales))
        for v in reversed(scales):
            b.PrependFloat32(v)
        scale_vec = b.EndVector()
        s.QuantizationParametersStartZeroPointVector(b, len(zero_points))
        for zp in reversed(zero_points):
            b.PrependInt64(zp)
        zp_vec = b.EndVector()
        s.QuantizationParametersStart(b)
        s.QuantizationParametersAddScale(b, scale_vec)
        s.QuantizationParametersAddZeroPoint(b, zp_vec)
        s.QuantizationParametersAddQuantizedDimension(b, 0)
        return int(s.QuantizationParametersEnd(b))

    def tensor(
        name: str, shape: list[int], dtype: int, buffer: int, quant: int, signature: list[int] | None = None
    ) -> int:
        name_off = b.CreateString(name)
        shape_off = int_vector(s.TensorStartShapeVector, shape)
        sig_off = int_vector(s.TensorStartShapeSignatureVector, signature) if signature else None
        s.TensorStart(b)
        s.TensorAddShape(b, shape_off)
        s.TensorAddType(b, dtype)
        s.TensorAddBuffer(b, buffer)
        s.TensorAddName(b, name_off)
        s.TensorAddQuantization(b, quant)
        if sig_off is not None:
            s.TensorAddShapeSignature(b, sig_off)
        return int(s.TensorEnd(b))

    # Buffers: 0 is the empty sentinel every .tflite starts with; activations point at it.
    buffers = [
        data_buffer(None),
        data_buffer(q.weights.astype("<i1").tobytes()),
        data_buffer(q.bias.astype("<i4").tobytes()),
    ]
    int8, int32 = s.TensorType.INT8, s.TensorType.INT32
    tensors = [
        tensor(
            "features",
            [1, d],
            int8,
            0,
            quantization([q.input_q.scale], [q.input_q.zero_point]),
            [-1, d],
        ),
        tensor(
            "weights",
            [k, d],
            int8,
            1,
            quantization([float(v) for v in q.weight_scales], [0] * k),
        ),
        tensor(
            "bias",
            [k],
            int32,
            2,
            quantization([float(v) for v in q.bias_scales], [0] * k),
        ),
        tensor(
            "logits",
            [1, k],
            int8,
            0,
            quantization([q.logits_q.scale], [q.logits_q.zero_point]),
            [-1, k],
        ),
        tensor(
            "probs",
            [1, k],
            int8,
            0,
            quantization([q.output_q.scale], [q.output_q.zero_point]),
            [-1, k],
        ),
    ]

    s.FullyConnectedOptionsStart(b)
    s.FullyConnectedOptionsAddFusedActivationFunction(b, s.ActivationFunctionType.NONE)
    s.FullyConnectedOptionsAddWeightsFormat(b, s.FullyConnectedOptionsWeightsFormat.DEFAULT)
    s.FullyConnectedOptionsAddKeepNumDims(b, False)
    fc_options = s.FullyConnectedOptionsEnd(b)
    s.SoftmaxOptionsStart(b)
    s.SoftmaxOptionsAddBeta(b, 1.0)
    softmax_options = s.SoftmaxOptionsEnd(b)

    def operator(opcode: int, inputs: list[int], outputs: list[int], options_type: int, options: int) -> int:
        in_off = int_vector(s.OperatorStartInputsVector, inputs)
        out_off = int_vector(s.OperatorStartOutputsVector, outputs)
        s.OperatorStart(b)
        s.OperatorAddOpcodeIndex(b, opcode)
        s.OperatorAddInputs(b, in_off)
        s.OperatorAddOutputs(b, out_off)
        s.OperatorAddBuiltinOptionsType(b, options_type)
        s.OperatorAddBuiltinOptions(b, options)
        return int(s.OperatorEnd(b))

    operators = [
        operator(0, [0, 1, 2], [3], s.BuiltinOptions.FullyConnectedOptions, fc_options),
        operator(1, [3], [4], s.BuiltinOptions.SoftmaxOptions, softmax_options),
    ]

    def opcode(code: int, version: int) -> int:
        s.OperatorCodeStart(b)
        # Codes below 127 are also written to the deprecated int8 field, which old readers use.
        s.OperatorCodeAddDeprecatedBuiltinCode(b, min(code, 127))
        s.OperatorCodeAddBuiltinCode(b, code)
        s.OperatorCodeAddVersion(b, version)
        return int(s.OperatorCodeEnd(b))

    opcodes = [
        opcode(s.BuiltinOperator.FULLY_CONNECTED, _FULLY_CONNECTED_VERSION),
        opcode(s.BuiltinOperator.SOFTMAX, _SOFTMAX_VERSION),
    ]

    sg_name = b.CreateString("main")
    sg_tensors = offsets_vector(s.SubGraphStartTensorsVector, tensors)
    sg_inputs = int_vector(s.SubGraphStartInputsVector, [0])
    sg_outputs = int_vector(s.SubGraphStartOutputsVector, [4])
    sg_ops = offsets_vector(s.SubGraphStartOperatorsVector, operators)
    s.SubGraphStart(b)
    s.SubGraphAddTensors(b, sg_tensors)
    s.SubGraphAddInputs(b, sg_inputs)
    s.SubGraphAddOutputs(b, sg_outputs)
    s.SubGraphAddOperators(b, sg_ops)
    s.SubGraphAddName(b, sg_name)
    subgraph = s.SubGraphEnd(b)

    desc = b.CreateString(description)
    opcodes_vec = offsets_vector(s.ModelStartOperatorCodesVector, opcodes)
    subgraphs_vec = offsets_vector(s.ModelStartSubgraphsVector, [subgraph])
    buffers_vec = offsets_vector(s.ModelStartBuffersVector, buffers)
    s.ModelStart(b)
    s.ModelAddVersion(b, 3)  # the TFLite schema version every current runtime reads
    s.ModelAddOperatorCodes(b, opcodes_vec)
    s.ModelAddSubgraphs(b, subgraphs_vec)
    s.ModelAddDescription(b, desc)
    s.ModelAddBuffers(b, buffers_vec)
    model = s.ModelEnd(b)
    b.Finish(model, file_identifier=b"TFL3")
    return bytes(b.Output())
