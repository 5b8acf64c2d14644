"""Camera frames for the page: JPEG in memory only, never written to disk, never modified (no drawing)."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

MAX_WIDTH = 640  # larger frames are scaled down: the page shows them at about this size anyway
JPEG_QUALITY = 75


def encode_jpeg(image: NDArray[np.uint8]) -> tuple[bytes, float]:
    """The JPEG of a BGR frame and the scale applied (face boxes are in the frame's own pixels). Blocking:
    call it in a thread."""
    import cv2  # only daemons with a camera have imported OpenCV already

    scale = 1.0
    if image.shape[1] > MAX_WIDTH:
        scale = MAX_WIDTH / image.shape[1]
        size = (MAX_WIDTH, round(image.shape[0] * scale))
        image = np.asarray(cv2.resize(image, size, interpolation=cv2.INTER_AREA), dtype=np.uint8)
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return data.tobytes(), scale
