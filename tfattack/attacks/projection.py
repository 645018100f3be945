"""Keeping adversarial images legal: the L-inf or L2 ball, the [0, 1] box and the 8-bit grid."""

from __future__ import annotations

import numpy as np
import tensorflow as tf


def project(images, clean, eps, norm: str = "linf"):
    """`images` moved into the eps ball around `clean` (L-inf: clipped per pixel; L2: the perturbation scaled down
    to length eps), then clipped to [0, 1]. Clipping to the box after the L2 scaling keeps the ball: it only
    shortens each coordinate of the perturbation."""
    if norm == "linf":
        lower = tf.maximum(clean - eps, 0.0)
        upper = tf.minimum(clean + eps, 1.0)
        return tf.clip_by_value(images, lower, upper)
    # tf.clip_by_norm is the same formula with another rounding (it divides by max(length, eps)); written out,
    # the L2 projection rounds as torchattacks' PGDL2 does (delta * min(1, eps / ||delta||)).
    delta = images - clean
    length = tf.sqrt(tf.reduce_sum(tf.square(delta), axis=[1, 2, 3], keepdims=True))
    scale = tf.minimum(1.0, tf.math.divide_no_nan(tf.cast(eps, delta.dtype), length))
    scale = tf.where(length > 0, scale, tf.ones_like(scale))
    return tf.clip_by_value(clean + delta * scale, 0.0, 1.0)


def quantize(adv, clean, eps, norm: str = "linf") -> np.ndarray:
    """Rounds `adv` to the 8-bit grid and keeps it in the ball, so that the saved PNG is a legal attack.

    L-inf: guarantees `max |round(adv*255) - round(clean*255)| <= round(eps*255)` (pixel units, the NIPS'17
    validator's rule). L2: rounds to the nearest level, and for an image whose rounded perturbation would be
    longer than eps, rounds each pixel of the perturbation toward the clean value instead (never longer than the
    float perturbation). Returns float32 in [0, 1] with every value a multiple of 1/255. `clean` is assumed to be
    8-bit /255 (it is rounded to its grid first, so a slightly off clean image still gets a legal result).
    """
    adv = np.asarray(adv, np.float64)
    clean_pixels = np.round(np.asarray(clean, np.float64) * 255.0)
    if adv.shape != clean_pixels.shape:
        raise ValueError(f"quantize: adv shape {adv.shape} != clean shape {clean_pixels.shape}")
    if norm == "l2":
        delta = np.clip(adv * 255.0, 0.0, 255.0) - clean_pixels
        nearest = np.round(delta)
        toward_clean = np.trunc(delta)
        lengths = np.sqrt(np.sum(np.square(nearest), axis=tuple(range(1, adv.ndim)))) / 255.0
        too_long = (lengths > float(eps)).reshape((-1,) + (1,) * (adv.ndim - 1))
        pixels = clean_pixels + np.where(too_long, toward_clean, nearest)
        return (np.clip(pixels, 0.0, 255.0) / 255.0).astype(np.float32)
    budget = np.round(float(eps) * 255.0)
    pixels = np.round(adv * 255.0)
    pixels = np.clip(pixels, clean_pixels - budget, clean_pixels + budget)
    pixels = np.clip(pixels, 0.0, 255.0)
    return (pixels / 255.0).astype(np.float32)
