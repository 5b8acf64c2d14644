"""Personal calibration: fit a user's own EMG model from a short labelled session.

The whole path runs on the runtime install (numpy, scipy, the flatbuffers schema that ships
with ai-edge-litert); nothing here imports TensorFlow.

- :mod:`edge.calibration.fit`: class-balanced softmax regression on precomputed features and
  leave-one-repetition-out (or any leave-one-group-out) validation.
- :mod:`edge.calibration.tflite_writer`: the fitted linear model as a full-int8 ``.tflite``.
- :mod:`edge.calibration.offline`: ``emotion-edge calibrate --from-recording``.
"""

DEFAULT_NAME = "emg-personal"  # file stem and card name of a calibrated model
