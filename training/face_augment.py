"""Batched, seeded augmentation for FER2013 training (TensorFlow ops, used inside tf.data).

One projective transform per image does the flip, rotation, zoom and the random crop at once
(output ``crop`` x ``crop`` sampled from the 48x48 face), so a batch costs a single resampling.
Then per-image contrast/brightness jitter and random erasing (Zhong et al. 2020).
All randomness comes from stateless ops keyed by ``seed``, so an epoch's batches are a function
of (run seed, epoch, batch index): a resumed run sees the same stream it would have seen.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class AugmentSettings:
    crop: int = 44
    rotation_deg: float = 10.0
    zoom: float = 0.10
    contrast: float = 0.3
    brightness: float = 0.15
    erase_p: float = 0.5
    erase_area: tuple[float, float] = (0.02, 0.25)
    erase_aspect: tuple[float, float] = (0.3, 3.3)


def augment_batch(images: Any, seed: Any, s: AugmentSettings, size: int = 48) -> Any:
    """``images``: float32 [B, size, size, 1] in [0, 1]; ``seed``: int32 [2]. Returns [B, crop, crop, 1]."""
    import tensorflow as tf

    b = tf.shape(images)[0]
    seeds = tf.random.experimental.stateless_split(seed, 10)

    def uniform(i: int, lo: float, hi: float) -> Any:
        return tf.random.stateless_uniform([b], seeds[i], lo, hi)

    angle = uniform(0, -s.rotation_deg, s.rotation_deg) * (math.pi / 180.0)
    scale = 1.0 + uniform(1, -s.zoom, s.zoom)  # > 1 zooms in
    flip = tf.where(uniform(2, 0.0, 1.0) < 0.5, -1.0, 1.0)
    margin = float(size - s.crop)
    off_x, off_y = uniform(3, 0.0, margin), uniform(4, 0.0, margin)
    # Output pixel (x, y) of the crop reads input pixel A @ (x, y, 1): rotate and scale about the
    # input centre, mirror x, and shift so the crop's window starts at (off_x, off_y).
    c = (size - 1) / 2.0
    cos, sin = tf.cos(angle) / scale, tf.sin(angle) / scale
    ux, uy = off_x - c, off_y - c  # crop origin relative to the centre
    a0, a1 = cos * flip, -sin
    b0, b1 = sin * flip, cos
    # x' = c + flip*cos*(x + ux) - sin*(y + uy), y' = c + flip*sin*(x + ux) + cos*(y + uy)
    a2 = c + a0 * ux + a1 * uy
    b2 = c + b0 * ux + b1 * uy
    zeros = tf.zeros_like(angle)
    transforms = tf.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1)
    x = tf.raw_ops.ImageProjectiveTransformV3(
        images=images,
        transforms=transforms,
        output_shape=tf.constant([s.crop, s.crop]),
        interpolation="BILINEAR",
        fill_mode="NEAREST",
        fill_value=0.0,
    )
    mean = tf.reduce_mean(x, axis=[1, 2, 3], keepdims=True)
    contrast = tf.reshape(uniform(5, 1.0 - s.contrast, 1.0 + s.contrast), [-1, 1, 1, 1])
    bright = tf.reshape(uniform(6, -s.brightness, s.brightness), [-1, 1, 1, 1])
    x = (x - mean) * contrast + mean + bright
    x = tf.clip_by_value(x, 0.0, 1.0)
    return _random_erase(x, seeds[7:], s)


def _random_erase(x: Any, seeds: Any, s: AugmentSettings) -> Any:
    import tensorflow as tf

    b = tf.shape(x)[0]
    n = float(s.crop)
    u = tf.random.stateless_uniform([b, 6], seeds[0])
    area = (s.erase_area[0] + u[:, 0] * (s.erase_area[1] - s.erase_area[0])) * n * n
    log_lo, log_hi = math.log(s.erase_aspect[0]), math.log(s.erase_aspect[1])
    aspect = tf.exp(log_lo + u[:, 1] * (log_hi - log_lo))
    h = tf.minimum(tf.sqrt(area * aspect), n)
    w = tf.minimum(tf.sqrt(area / aspect), n)
    y0 = u[:, 2] * (n - h)
    x0 = u[:, 3] * (n - w)
    apply = u[:, 4] < s.erase_p
    grid = tf.range(n)
    rows = (grid[None, :] >= y0[:, None]) & (grid[None, :] < (y0 + h)[:, None])
    cols = (grid[None, :] >= x0[:, None]) & (grid[None, :] < (x0 + w)[:, None])
    mask = rows[:, :, None] & cols[:, None, :] & apply[:, None, None]
    noise = tf.random.stateless_uniform(tf.shape(x), seeds[1])
    return tf.where(mask[..., None], noise, x)


def centre_crop(images: Any, crop: int, size: int = 48) -> Any:
    """The inference-time counterpart of the random crop."""
    m = (size - crop) // 2
    return images[:, m : m + crop, m : m + crop, :]
