"""The model card: a JSON file beside each ``.tflite`` that tells the runtime how to use it.

The runtime configures itself entirely from the card (labels, window, preprocessing and
quantisation), so a model and the code that feeds it can never drift apart.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

CARD_SCHEMA_VERSION = 1


class CardError(ValueError):
    """A model/card pair that must not be used."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TensorQuantization(_Strict):
    """Affine int8 quantisation of one tensor: real = scale * (q - zero_point)."""

    dtype: Literal["int8", "uint8", "float32"] = Field(description="Tensor element type.")
    scale: float = Field(description="Real value of one quantisation step (0 for float tensors).")
    zero_point: int = Field(description="Quantised value that represents real 0.")


class EmgPreprocessing(_Strict):
    """Everything :class:`edge.emg.dsp.FeatureSpec` needs to reproduce training-time features."""

    kind: Literal["td", "raw_gauss"] = Field(description="Feature family from edge.emg.dsp.")
    smoothing_sigma: float = Field(description="Gaussian sigma in samples applied along time (0: none).")
    zc_threshold: float = Field(description="Deadband (ADC units) for zero crossings and slope sign changes.")
    feature_names: list[str] = Field(description="Name of each model input, in order.")
    offset: list[float] = Field(description="Subtracted from each feature (fitted on training windows).")
    scale: list[float] = Field(description="Each feature is divided by this after the offset.")


class FacePreprocessing(_Strict):
    """Input geometry for a face-crop classifier."""

    kind: Literal["face_gray"] = Field(description="Grayscale square face crop.")
    size: int = Field(description="Crop side length in pixels.")
    pixel_offset: float = Field(description="Subtracted from 0..255 pixel values.")
    pixel_scale: float = Field(description="Pixels are divided by this after the offset.")


class DataRef(_Strict):
    """A data file a model was trained or evaluated on."""

    name: str = Field(description="File name (not a path on the training machine).")
    sha256: str = Field(description="SHA-256 of the file's bytes.")


class ModelCard(_Strict):
    """The JSON card shipped beside each model."""

    schema_version: int = Field(default=CARD_SCHEMA_VERSION, description="Card format version.")
    name: str = Field(description="Short model name.")
    modality: Literal["emg", "face"] = Field(description="Which sensor the model reads.")
    model_file: str = Field(description="File name of the .tflite model, relative to the card.")
    model_sha256: str = Field(description="SHA-256 of the .tflite file; checked at load.")
    labels: list[str] = Field(description="Output classes, in output order.")
    channels: list[str] = Field(default_factory=list, description="EMG channel order (EMG only).")
    window: int | None = Field(default=None, description="Window length in samples (EMG only).")
    hop: int | None = Field(default=None, description="Hop between windows at training time, in samples.")
    sample_rate_hz: float | None = Field(
        default=None, description="Sample rate of the training data; null if unknown."
    )
    preprocessing: EmgPreprocessing | FacePreprocessing = Field(discriminator="kind")
    input_quantization: TensorQuantization = Field(description="How the model input is quantised.")
    output_quantization: TensorQuantization = Field(description="How the model output is quantised.")
    metrics: dict[str, Any] = Field(
        default_factory=dict, description="Evaluation results and their protocol."
    )
    training_data: list[DataRef] = Field(default_factory=list, description="Data the model was fitted on.")
    training: dict[str, Any] = Field(default_factory=dict, description="Seed, command and hyper-parameters.")


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def card_path_for(model_path: str | Path) -> Path:
    """``models/emg.tflite`` -> ``models/emg.card.json``."""
    p = Path(model_path)
    return p.with_name(p.stem + ".card.json")


def load_card(model_path: str | Path) -> ModelCard:
    """Read and validate the card beside ``model_path`` and check the model's checksum."""
    model_path = Path(model_path)
    card_path = card_path_for(model_path)
    if not model_path.is_file():
        raise CardError(f"model file not found: {model_path}")
    if not card_path.is_file():
        raise CardError(f"model card not found: {card_path} (every model needs its card)")
    try:
        card = ModelCard.model_validate_json(card_path.read_bytes())
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        raise CardError(f"{card_path}: invalid card at {loc}: {first['msg']}") from exc
    if card.model_file != model_path.name:
        raise CardError(f"{card_path} describes {card.model_file!r}, not {model_path.name!r}")
    actual = sha256_file(model_path)
    if actual != card.model_sha256:
        raise CardError(
            f"{model_path}: sha256 {actual[:12]}... does not match its card "
            f"({card.model_sha256[:12]}...): the model is corrupt or belongs to another card"
        )
    return card
