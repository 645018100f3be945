"""The origin write-up's augmentations (expectation over transformation), as one transform component.

Each augmentation is `fn(images, generator, settings) -> images` (same shape, values in [0, 1]; `settings` is
the `Augment` component, whose fields hold every augmentation's parameters). Non-differentiable ones (JPEG,
bit depth) pass the gradient straight through.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Tuple

import tensorflow as tf

from tfattack.attacks.components import Transform, param, register
from tfattack.attacks.gradient_ops import gaussian_kernel, smooth


def _per_image(generator, images, minval, maxval, dtype=tf.float32):
    return generator.uniform(tf.shape(images)[:1], minval, maxval, dtype=dtype)


def _mask_per_image(generator, images, prob):
    return tf.reshape(_per_image(generator, images, 0.0, 1.0) < prob, [-1, 1, 1, 1])


def _straight_through(images, transformed):
    """Forward: `transformed`; backward: identity (for non-differentiable ops such as JPEG)."""
    return images + tf.stop_gradient(transformed - images)


def _affine(images, matrix_rows):
    """Resample `images` at input coordinates given per image by rows [a0, a1, a2, b0, b1, b2] (output -> input)."""
    zeros = tf.zeros_like(matrix_rows[:, :2])
    transforms = tf.concat([matrix_rows, zeros], axis=1)
    height, width = images.shape[1], images.shape[2]
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=images, transforms=transforms, output_shape=[height, width], interpolation="BILINEAR",
        fill_mode="CONSTANT", fill_value=0.0)


def _centre(images):
    return (images.shape[2] - 1) / 2.0, (images.shape[1] - 1) / 2.0


def rotate(images, generator, settings):
    """Rotation about the centre by a uniform angle in [-rotate_degrees, rotate_degrees]."""
    angle = _per_image(generator, images, -1.0, 1.0) * (settings.rotate_degrees * math.pi / 180.0)
    cos, sin = tf.cos(angle), tf.sin(angle)
    cx, cy = _centre(images)
    rows = tf.stack([cos, -sin, cx - cos * cx + sin * cy, sin, cos, cy - sin * cx - cos * cy], axis=1)
    return _affine(images, rows)


def translate(images, generator, settings):
    """Shift by up to `translate_fraction` of the size along each axis (zeros fill the gap)."""
    dx = _per_image(generator, images, -1.0, 1.0) * (settings.translate_fraction * images.shape[2])
    dy = _per_image(generator, images, -1.0, 1.0) * (settings.translate_fraction * images.shape[1])
    ones, zeros = tf.ones_like(dx), tf.zeros_like(dx)
    return _affine(images, tf.stack([ones, zeros, dx, zeros, ones, dy], axis=1))


def scale(images, generator, settings):
    """Zoom about the centre by a factor uniform in `scale_range` (>1 enlarges)."""
    low, high = settings.scale_range
    inverse = 1.0 / _per_image(generator, images, low, high)
    cx, cy = _centre(images)
    zeros = tf.zeros_like(inverse)
    return _affine(images, tf.stack([inverse, zeros, cx - inverse * cx, zeros, inverse, cy - inverse * cy], axis=1))


def flip(images, generator, settings):
    """Left-right flip of each image with probability 1/2."""
    return tf.where(_mask_per_image(generator, images, 0.5), tf.reverse(images, axis=[2]), images)


def _shift_intensity(images, generator, settings, sign):
    delta = tf.reshape(_per_image(generator, images, 0.0, settings.brightness_delta), [-1, 1, 1, 1])
    return tf.clip_by_value(images + sign * delta, 0.0, 1.0)


def brighten(images, generator, settings):
    """Adds a uniform offset in [0, brightness_delta] per image."""
    return _shift_intensity(images, generator, settings, 1.0)


def darken(images, generator, settings):
    """Subtracts a uniform offset in [0, brightness_delta] per image."""
    return _shift_intensity(images, generator, settings, -1.0)


def noise(images, generator, settings):
    """Additive Gaussian noise of standard deviation `noise_std`."""
    return tf.clip_by_value(images + generator.normal(tf.shape(images), stddev=settings.noise_std), 0.0, 1.0)


def jpeg(images, generator, settings):
    """JPEG at `jpeg_quality`; straight-through gradient (tf's JPEG coder is per image, not differentiable)."""
    clipped = tf.clip_by_value(images, 0.0, 1.0)
    coded = tf.map_fn(lambda image: tf.image.adjust_jpeg_quality(image, settings.jpeg_quality), clipped)
    return _straight_through(images, tf.ensure_shape(coded, images.shape))


def bit_depth(images, generator, settings):
    """Bit-depth squeezing to `bit_depth` bits (Xu et al. NDSS 2018); straight-through gradient."""
    levels = 2.0 ** settings.bit_depth - 1.0
    return _straight_through(images, tf.round(tf.clip_by_value(images, 0.0, 1.0) * levels) / levels)


def gaussian_filter(images, generator, settings):
    """Gaussian smoothing of the image with a `filter_kernel` kernel (nsig 3)."""
    return smooth(images, gaussian_kernel(settings.filter_kernel, 3.0))


def _dct_2d(images, inverse=False):
    # tf.signal.dct acts on the last axis: move W, then H, there.
    transform = tf.signal.idct if inverse else tf.signal.dct
    channels_first = tf.transpose(images, [0, 3, 1, 2])            # N C H W
    along_w = transform(channels_first, type=2, norm="ortho")
    along_h = transform(tf.transpose(along_w, [0, 1, 3, 2]), type=2, norm="ortho")  # N C W H
    return tf.transpose(along_h, [0, 3, 2, 1])                      # N H W C


def dct_lowpass(images, generator, settings):
    """Keeps the lowest `dct_keep` fraction of (orthonormal, full-image) DCT frequencies per axis,
    clipped back to [0, 1] (low-passing rings past the box)."""
    height, width = images.shape[1], images.shape[2]
    keep_h = max(1, int(round(height * settings.dct_keep)))
    keep_w = max(1, int(round(width * settings.dct_keep)))
    mask = tf.reshape(tf.cast(tf.range(height) < keep_h, images.dtype), [1, -1, 1, 1]) * \
        tf.reshape(tf.cast(tf.range(width) < keep_w, images.dtype), [1, 1, -1, 1])
    return tf.clip_by_value(_dct_2d(_dct_2d(images) * mask, inverse=True), 0.0, 1.0)


def dropout(images, generator, settings):
    """Zeroes each pixel (all channels) with probability `dropout_rate`, without rescaling."""
    keep = generator.uniform(tf.concat([tf.shape(images)[:3], [1]], 0)) >= settings.dropout_rate
    return images * tf.cast(keep, images.dtype)


AUGMENTATION_FUNCTIONS = {
    "rotate": rotate, "brighten": brighten, "darken": darken, "noise": noise, "translate": translate,
    "jpeg": jpeg, "bit_depth": bit_depth, "flip": flip, "scale": scale, "gaussian_filter": gaussian_filter,
    "dct_lowpass": dct_lowpass, "dropout": dropout,
}




AUGMENTATIONS = tuple(AUGMENTATION_FUNCTIONS)
# JPEG coding and ImageProjectiveTransform (rotate, translate, scale) have no XLA kernels.
NOT_XLA_COMPILABLE = ("jpeg", "rotate", "translate", "scale")


@register
@dataclasses.dataclass(frozen=True)
class Augment(Transform):
    """Expectation over transformation with the origin write-up's augmentations: each view applies every listed
    op in order (mode all) or one chosen per image (mode one), each kept per image with probability `prob`."""

    name = "augment"
    positional = "ops"
    paper = ("Athalye et al., Synthesizing robust adversarial examples, ICML 2018; the augmentations of the "
             "Tianchi 2019 defense-attack write-up this project started from")
    makes_copies = False
    ops: Tuple[str, ...] = param((), "Augmentations, joined by '+', any of: " + ", ".join(AUGMENTATIONS) + ".",
                                 items=AUGMENTATIONS)
    mode: str = param("all", "all: each view applies every op; one: each image gets one op chosen at random.",
                      choices=("all", "one"))
    prob: float = param(1.0, "Probability that each op is applied to an image.", low=0.0, high=1.0)
    rotate_degrees: float = param(10.0, "rotate: maximum absolute angle in degrees.", low=0.0)
    brightness_delta: float = param(0.2, "brighten/darken: maximum additive change of intensity.", low=0.0)
    noise_std: float = param(0.05, "noise: standard deviation of additive Gaussian noise.", low=0.0)
    translate_fraction: float = param(0.1, "translate: maximum shift as a fraction of the image size.", low=0.0)
    scale_range: Tuple[float, ...] = param((0.9, 1.1), "scale: low+high of the random zoom factor.")
    jpeg_quality: int = param(75, "jpeg: quality 1..100 (straight-through gradient).", low=1, high=100)
    bit_depth: int = param(5, "bit_depth: bits per channel kept (straight-through gradient).", low=1, high=8)
    filter_kernel: int = param(3, "gaussian_filter: odd kernel size (nsig 3).", low=1, odd=True)
    dct_keep: float = param(0.5, "dct_lowpass: fraction of the lowest DCT frequencies kept per axis.",
                            above=0.0, high=1.0)
    dropout_rate: float = param(0.1, "dropout: fraction of pixels zeroed (the origin write-up's input dropout).",
                                low=0.0, high=1.0)

    def validate(self):
        if len(self.scale_range) != 2 or not 0 < self.scale_range[0] <= self.scale_range[1]:
            raise self.error(f"scale_range must be low+high with 0 < low <= high, got {self.scale_range!r}")

    @property
    def is_identity(self) -> bool:
        return not self.ops

    @property
    def xla_compilable(self) -> bool:
        return not self.xla_blockers()

    def xla_blockers(self):
        return tuple(op for op in self.ops if op in NOT_XLA_COMPILABLE)

    def apply(self, images, generator, batch):
        return augment(images, generator, self)


def augment(images, generator, config: Augment):
    """Applies `config.ops`: all in order ("all") or one chosen per image ("one"),
    each kept per image with probability `config.prob`."""
    names = config.ops
    if not names:
        return images

    def maybe(name, inputs):
        out = AUGMENTATION_FUNCTIONS[name](inputs, generator, config)
        if config.prob >= 1:
            return out
        return tf.where(_mask_per_image(generator, inputs, config.prob), out, inputs)

    if config.mode == "all":
        for name in names:
            images = maybe(name, images)
        return images
    choice = _per_image(generator, images, 0, len(names), dtype=tf.int32)
    selected = tf.zeros_like(images)
    for index, name in enumerate(names):
        chosen = tf.reshape(tf.equal(choice, index), [-1, 1, 1, 1])
        selected = tf.where(chosen, maybe(name, images), selected)
    return selected
