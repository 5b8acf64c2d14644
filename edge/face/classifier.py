"""The face path: detect faces in a frame, crop them, classify each crop with the int8 model.

Frames stay inside this process: nothing here writes, logs or publishes pixels.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from edge.classifier import TfliteClassifier
from edge.emg.dsp import FloatArray
from edge.face.detect import FaceBox, FaceDetector, crop_face, select
from edge.model_card import CardError, FacePreprocessing

# FER2013's label order; npz files for `evaluate face` use these indices.
FER2013_LABELS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")


class FaceClassifier:
    """Grayscale face crops in, probabilities per emotion out, configured from the card."""

    def __init__(self, model_path: str | Path, num_threads: int = 1) -> None:
        self.model = TfliteClassifier(model_path, num_threads)
        pre = self.model.card.preprocessing
        if not isinstance(pre, FacePreprocessing):
            raise CardError(f"{model_path}: model {self.model.card.name!r} is not a face model")
        self.pre = pre
        expected = (pre.size, pre.size, 1)
        if tuple(self.model.input_shape[1:]) != expected:
            raise CardError(f"{model_path}: model input {self.model.input_shape[1:]}, card says {expected}")

    @property
    def labels(self) -> list[str]:
        return self.model.labels

    @property
    def size(self) -> int:
        return self.pre.size

    def predict_proba(self, crops: NDArray[np.uint8]) -> FloatArray:
        """``(n, size, size)`` uint8 grayscale -> ``(n, n_labels)``."""
        x = (np.asarray(crops, dtype=np.float64) - self.pre.pixel_offset) / self.pre.pixel_scale
        return self.model.predict_proba(x[..., None])


@dataclass(frozen=True)
class FaceResult:
    box: FaceBox
    probs: FloatArray

    def as_dict(self, labels: list[str]) -> dict[str, object]:
        top = int(np.argmax(self.probs))
        return {
            "box": [self.box.x, self.box.y, self.box.w, self.box.h],
            "score": round(self.box.score, 3),
            "emotion": labels[top],
            "confidence": round(float(self.probs[top]), 4),
            "probs": {lab: round(float(p), 4) for lab, p in zip(labels, self.probs, strict=True)},
        }


class FacePipeline:
    """detect -> select (largest or all) -> crop -> classify. Blocking: run it off the event loop."""

    def __init__(
        self,
        detector: FaceDetector,
        classifier: FaceClassifier,
        policy: Literal["largest", "all"] = "largest",
    ) -> None:
        self.detector = detector
        self.classifier = classifier
        self.policy = policy

    @property
    def labels(self) -> list[str]:
        return self.classifier.labels

    def process(self, bgr: NDArray[np.uint8]) -> list[FaceResult]:
        """Results in box order, largest face first."""
        boxes = select(self.detector.detect(bgr), self.policy)
        if not boxes:
            return []
        crops = np.stack([crop_face(bgr, box, size=self.classifier.size) for box in boxes])
        probs = self.classifier.predict_proba(crops)
        return [FaceResult(box, p) for box, p in zip(boxes, probs, strict=True)]
