"""Full-integer int8 TFLite export, C arrays for TFLite Micro, and the model card."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from edge.classifier import TfliteClassifier
from edge.model_card import ModelCard, TensorQuantization, card_path_for, sha256_file


def to_int8_tflite(
    keras_model: Any, representative: NDArray[np.floating[Any]], max_calibration: int = 2000, seed: int = 0
) -> bytes:
    """Convert with int8 input, output and weights, calibrated on ``representative`` rows."""
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    idx = rng.permutation(len(representative))[:max_calibration]
    calib = np.asarray(representative, dtype=np.float32)[idx]

    def dataset() -> Iterator[list[NDArray[np.float32]]]:
        for row in calib:
            yield [row[None]]

    converter = tf.lite.TFLiteConverter.from_keras_model(keras_model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = dataset
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    result: bytes = converter.convert()
    return result


def tensor_quantization(tflite_bytes: bytes) -> tuple[TensorQuantization, TensorQuantization]:
    """Read the input/output quantisation the converter chose."""
    import tensorflow as tf

    interp = tf.lite.Interpreter(model_content=tflite_bytes)
    interp.allocate_tensors()

    def q(detail: dict[str, Any]) -> TensorQuantization:
        scale, zp = detail["quantization"]
        return TensorQuantization(
            dtype=np.dtype(detail["dtype"]).name, scale=float(scale), zero_point=int(zp)
        )

    return q(interp.get_input_details()[0]), q(interp.get_output_details()[0])


def tf_int8_predict(tflite_bytes: bytes, x: NDArray[np.floating[Any]]) -> np.ndarray:
    """The training side's int8 inference, through TensorFlow's own interpreter."""
    import tensorflow as tf

    from edge.classifier import quantize

    interp = tf.lite.Interpreter(model_content=tflite_bytes, num_threads=1)
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    in_q, _ = tensor_quantization(tflite_bytes)
    rows = []
    for row in quantize(np.asarray(x).reshape((-1, *inp["shape"][1:])), in_q):
        interp.set_tensor(inp["index"], row[None])
        interp.invoke()
        rows.append(interp.get_tensor(out["index"])[0].copy())
    return np.stack(rows)


def write_c_array(tflite_bytes: bytes, out_dir: Path, symbol: str) -> tuple[Path, Path]:
    """Write ``symbol.cc``/``symbol.h`` for TFLite Micro, as the source project does."""
    header = out_dir / f"{symbol}.h"
    source = out_dir / f"{symbol}.cc"
    guard = f"{symbol.upper()}_H_"
    header.write_text(
        f"#ifndef {guard}\n#define {guard}\n\n"
        f"extern const unsigned char {symbol}[];\nextern const unsigned int {symbol}_len;\n\n"
        f"#endif  // {guard}\n"
    )
    lines = [
        ", ".join(f"0x{b:02x}" for b in tflite_bytes[i : i + 12]) for i in range(0, len(tflite_bytes), 12)
    ]
    source.write_text(
        f'#include "{symbol}.h"\n\n'
        "// Aligned so TFLite Micro can read the flatbuffer in place.\n"
        f"alignas(16) const unsigned char {symbol}[] = {{\n  "
        + ",\n  ".join(lines)
        + f"\n}};\nconst unsigned int {symbol}_len = {len(tflite_bytes)};\n"
    )
    return source, header


def write_model(
    tflite_bytes: bytes,
    model_path: Path,
    make_card: Callable[[str, TensorQuantization, TensorQuantization], ModelCard],
) -> ModelCard:
    """Write the model and its card, then load the pair through the runtime as a check."""
    model_path.parent.mkdir(parents=True, exist_ok=True)
    model_path.write_bytes(tflite_bytes)
    in_q, out_q = tensor_quantization(tflite_bytes)
    card = make_card(sha256_file(model_path), in_q, out_q)
    card_path_for(model_path).write_text(json.dumps(card.model_dump(mode="json"), indent=2) + "\n")
    TfliteClassifier(model_path)  # refuses a pair the daemon would refuse
    return card
