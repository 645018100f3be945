"""Keeping adversarial images legal: the L-inf ball, the [0, 1] box and the 8-bit grid."""

from __future__ import annotations

import numpy as np
import tensorflow as tf


def project(images, clean, eps):
    """Clip `images` to [clean - eps, clean + eps] intersected with [0, 1]."""
    lower = tf.maximum(clean - eps, 0.0)
    upper = tf.minimum(clean + eps, 1.0)
    return tf.clip_by_value(images, lower, upper)


def to_uint8(images) -> np.ndarray:
    """float images in [0, 1] -> uint8 pixels, rounded to the nearest level (not truncated)."""
    images = np.asarray(images, np.float64)
    return np.clip(np.round(images * 255.0), 0, 255).astype(np.uint8)


def quantize(adv, clean, eps) -> np.ndarray:
    """Rounds `adv` to the 8-bit grid and reprojects, so that the saved PNG passes the NIPS'17 validator.

    Guarantees `max |round(adv*255) - round(clean*255)| <= round(eps*255)` (pixel units) and returns
    float32 in [0, 1] with every value a multiple of 1/255. `clean` is assumed to be 8-bit /255 (it is
    rounded to its grid first, so a slightly off clean image still gets a legal result).
    """
    adv = np.asarray(adv, np.float64)
    clean_pixels = np.round(np.asarray(clean, np.float64) * 255.0)
    if adv.shape != clean_pixels.shape:
        raise ValueError(f"quantize: adv shape {adv.shape} != clean shape {clean_pixels.shape}")
    budget = np.round(float(eps) * 255.0)
    pixels = np.round(adv * 255.0)
    pixels = np.clip(pixels, clean_pixels - budget, clean_pixels + budget)
    pixels = np.clip(pixels, 0.0, 255.0)
    return (pixels / 255.0).astype(np.float32)
