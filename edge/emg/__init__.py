"""The EMG branch: signal processing shared with training and calibration (``dsp``), the int8
model (``classifier``) and the streaming stage (``stage``)."""
