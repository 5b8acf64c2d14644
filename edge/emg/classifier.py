"""The EMG model: raw windows in, through the card's feature pipeline, probabilities out."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge.classifier import TfliteClassifier
from edge.emg.dsp import FeatureSpec, FloatArray
from edge.model_card import CardError, EmgPreprocessing, ModelCard


def feature_spec_from_card(card: ModelCard) -> FeatureSpec:
    """Rebuild the exact training-time feature pipeline from an EMG card."""
    pre = card.preprocessing
    if not isinstance(pre, EmgPreprocessing) or card.window is None:
        raise CardError(f"model {card.name!r} is not an EMG model")
    return FeatureSpec(
        kind=pre.kind,
        window=card.window,
        hop=card.hop or card.window,
        n_channels=len(card.channels),
        smoothing_sigma=pre.smoothing_sigma,
        offset=tuple(pre.offset),
        scale=tuple(pre.scale),
        zc_threshold=pre.zc_threshold,
    )


class EmgClassifier:
    """Raw EMG windows in, probabilities per emotion out."""

    def __init__(self, model_path: str | Path, num_threads: int = 1) -> None:
        self.model = TfliteClassifier(model_path, num_threads)
        self.spec = feature_spec_from_card(self.model.card)
        if self.spec.n_features != int(np.prod(self.model.input_shape[1:])):
            raise CardError(
                f"{model_path}: card describes {self.spec.n_features} features, model takes "
                f"{self.model.input_shape[1:]}"
            )

    @property
    def labels(self) -> list[str]:
        return self.model.labels

    @property
    def window(self) -> int:
        return self.spec.window

    def predict_proba(self, windows: FloatArray) -> FloatArray:
        return self.model.predict_proba(self.spec.transform(windows))
