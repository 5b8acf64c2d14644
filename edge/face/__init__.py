"""The camera branch: face detection (``detect``), the int8 expression model (``classifier``)
and the latest-frame stage (``stage``)."""
