"""The emotions emotion-edge reports: one vocabulary for fusion, Home Assistant and calibration.

Home Assistant's enum sensor and device triggers declare these names in advance, so a model whose
labels fall outside them (a personal calibration, say) would publish states nobody can automate on.
"""

from __future__ import annotations

EMOTIONS: tuple[str, ...] = ("happy", "angry", "surprise", "fear", "sad", "disgust", "neutral")
# The fused state when no emotion is stated; never the label of an episode.
UNCERTAIN = "uncertain"
