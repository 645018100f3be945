"""Input transforms: views and copies of the batch whose gradients the loop averages.

Every function is batched with static output shapes; randomness comes from the `tf.random.Generator`
passed in, drawn afresh each time the function runs (i.e. at every step of the traced loop).
Copies are stacked along the batch axis, copy-major: `[C * N, H, W, 3]`.
"""

from __future__ import annotations

import math

import tensorflow as tf

from tfattack.attacks.gradient_ops import gaussian_kernel, smooth


def _per_image(generator, images, minval, maxval, dtype=tf.float32):
    return generator.uniform(tf.shape(images)[:1], minval, maxval, dtype=dtype)


def _mask_per_image(generator, images, prob):
    return tf.reshape(_per_image(generator, images, 0.0, 1.0) < prob, [-1, 1, 1, 1])


def _nearest_source(canvas: int, size: int, offset, resized):
    """For each canvas position: the source index under a nearest-neighbour resize of `size` pixels to
    `resized` pixels placed at `offset`, and whether the position lies inside the resized image."""
    position = tf.range(canvas, dtype=tf.float32) - tf.cast(offset, tf.float32)
    inside = (position >= 0) & (position < tf.cast(resized, tf.float32))
    source = tf.floor((position + 0.5) * (size / tf.cast(resized, tf.float32)))
    return tf.clip_by_value(tf.cast(source, tf.int32), 0, size - 1), inside


def diverse_input(images, generator, prob: float, resize_ratio: float = 330 / 299):
    """DI (Xie et al. CVPR 2019): with probability `prob` (one draw per batch, as in the authors' code)
    resize to rnd x rnd, rnd uniform in [H, H*ratio), nearest neighbour, pad with zeros at a random
    offset to the H*ratio canvas, then resize back to H x W (bilinear) so shapes stay static.
    The original code feeds the 330x330 canvas to the network, which resizes it internally.

    The resize-and-pad is one gather with static shapes (no dynamically sized tensors), so it also
    compiles under XLA.
    """
    if prob == 0:
        return images
    height, width = images.shape[1], images.shape[2]
    canvas_h = max(int(height * resize_ratio), height + 1)
    canvas_w = max(int(width * resize_ratio), width + 1)
    rnd_h = generator.uniform([], height, canvas_h, dtype=tf.int32)
    # Square images keep a square resize, as in the paper; other shapes draw each side.
    square = (height, canvas_h) == (width, canvas_w)
    rnd_w = rnd_h if square else generator.uniform([], width, canvas_w, dtype=tf.int32)
    pad_top = generator.uniform([], 0, canvas_h - rnd_h, dtype=tf.int32)
    pad_left = generator.uniform([], 0, canvas_w - rnd_w, dtype=tf.int32)
    rows, rows_inside = _nearest_source(canvas_h, height, pad_top, rnd_h)
    cols, cols_inside = _nearest_source(canvas_w, width, pad_left, rnd_w)
    canvas = tf.gather(tf.gather(images, rows, axis=1), cols, axis=2)
    inside = tf.cast(rows_inside[:, None] & cols_inside[None, :], images.dtype)[None, :, :, None]
    diverse = tf.image.resize(canvas * inside, [height, width], method="bilinear")
    return tf.where(generator.uniform([]) < prob, diverse, images)


def scale_copies(images, copies: int):
    """SI (Lin et al. ICLR 2020): the copies x / 2^i, i = 0..m-1. m = 1 is the identity."""
    return tf.concat([images / (2.0 ** i) for i in range(copies)], axis=0)


def admix_copies(images, generator, copies: int, strength: float):
    """Admix (Wang et al. ICCV 2021): `copies` images x + eta * x', x' another image of the batch.

    Each copy pairs image n with image (n + k) mod N for a random k in [1, N) (a different image;
    with N = 1 it is the image itself). x' is a constant (stop_gradient), as in the paper's
    formula where the gradient is taken with respect to x only.
    """
    batch = tf.shape(images)[0]
    others = tf.stop_gradient(images)
    mixed = []
    for _ in range(copies):
        shift = generator.uniform([], 1, tf.maximum(batch, 2), dtype=tf.int32) % batch
        mixed.append(images + strength * tf.roll(others, shift, axis=0))
    return tf.concat(mixed, axis=0)


# --- augmentations: each `fn(images, generator, config) -> images`, same shape, values in [0, 1] ---

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


def rotate(images, generator, config):
    """Rotation about the centre by a uniform angle in [-rotate_degrees, rotate_degrees]."""
    angle = _per_image(generator, images, -1.0, 1.0) * (config.rotate_degrees * math.pi / 180.0)
    cos, sin = tf.cos(angle), tf.sin(angle)
    cx, cy = _centre(images)
    rows = tf.stack([cos, -sin, cx - cos * cx + sin * cy, sin, cos, cy - sin * cx - cos * cy], axis=1)
    return _affine(images, rows)


def translate(images, generator, config):
    """Shift by up to `translate_fraction` of the size along each axis (zeros fill the gap)."""
    dx = _per_image(generator, images, -1.0, 1.0) * (config.translate_fraction * images.shape[2])
    dy = _per_image(generator, images, -1.0, 1.0) * (config.translate_fraction * images.shape[1])
    ones, zeros = tf.ones_like(dx), tf.zeros_like(dx)
    return _affine(images, tf.stack([ones, zeros, dx, zeros, ones, dy], axis=1))


def scale(images, generator, config):
    """Zoom about the centre by a factor uniform in `scale_range` (>1 enlarges)."""
    low, high = config.scale_range
    inverse = 1.0 / _per_image(generator, images, low, high)
    cx, cy = _centre(images)
    zeros = tf.zeros_like(inverse)
    return _affine(images, tf.stack([inverse, zeros, cx - inverse * cx, zeros, inverse, cy - inverse * cy], axis=1))


def flip(images, generator, config):
    """Left-right flip of each image with probability 1/2."""
    return tf.where(_mask_per_image(generator, images, 0.5), tf.reverse(images, axis=[2]), images)


def _shift_intensity(images, generator, config, sign):
    delta = tf.reshape(_per_image(generator, images, 0.0, config.brightness_delta), [-1, 1, 1, 1])
    return tf.clip_by_value(images + sign * delta, 0.0, 1.0)


def brighten(images, generator, config):
    """Adds a uniform offset in [0, brightness_delta] per image."""
    return _shift_intensity(images, generator, config, 1.0)


def darken(images, generator, config):
    """Subtracts a uniform offset in [0, brightness_delta] per image."""
    return _shift_intensity(images, generator, config, -1.0)


def noise(images, generator, config):
    """Additive Gaussian noise of standard deviation `noise_std`."""
    return tf.clip_by_value(images + generator.normal(tf.shape(images), stddev=config.noise_std), 0.0, 1.0)


def jpeg(images, generator, config):
    """JPEG at `jpeg_quality`; straight-through gradient (tf's JPEG coder is per image, not differentiable)."""
    clipped = tf.clip_by_value(images, 0.0, 1.0)
    coded = tf.map_fn(lambda image: tf.image.adjust_jpeg_quality(image, config.jpeg_quality), clipped)
    return _straight_through(images, tf.ensure_shape(coded, images.shape))


def bit_depth(images, generator, config):
    """Bit-depth squeezing to `bit_depth` bits (Xu et al. NDSS 2018); straight-through gradient."""
    levels = 2.0 ** config.bit_depth - 1.0
    return _straight_through(images, tf.round(tf.clip_by_value(images, 0.0, 1.0) * levels) / levels)


def gaussian_filter(images, generator, config):
    """Gaussian smoothing of the image with a `filter_kernel` kernel (nsig 3)."""
    return smooth(images, gaussian_kernel(config.filter_kernel, 3.0))


def _dct_2d(images, inverse=False):
    # tf.signal.dct acts on the last axis: move W, then H, there.
    transform = tf.signal.idct if inverse else tf.signal.dct
    channels_first = tf.transpose(images, [0, 3, 1, 2])            # N C H W
    along_w = transform(channels_first, type=2, norm="ortho")
    along_h = transform(tf.transpose(along_w, [0, 1, 3, 2]), type=2, norm="ortho")  # N C W H
    return tf.transpose(along_h, [0, 3, 2, 1])                      # N H W C


def dct_lowpass(images, generator, config):
    """Keeps the lowest `dct_keep` fraction of (orthonormal, full-image) DCT frequencies per axis,
    clipped back to [0, 1] (low-passing rings past the box)."""
    height, width = images.shape[1], images.shape[2]
    keep_h = max(1, int(round(height * config.dct_keep)))
    keep_w = max(1, int(round(width * config.dct_keep)))
    mask = tf.reshape(tf.cast(tf.range(height) < keep_h, images.dtype), [1, -1, 1, 1]) * \
        tf.reshape(tf.cast(tf.range(width) < keep_w, images.dtype), [1, 1, -1, 1])
    return tf.clip_by_value(_dct_2d(_dct_2d(images) * mask, inverse=True), 0.0, 1.0)


def dropout(images, generator, config):
    """Zeroes each pixel (all channels) with probability `dropout_rate`, without rescaling."""
    keep = generator.uniform(tf.concat([tf.shape(images)[:3], [1]], 0)) >= config.dropout_rate
    return images * tf.cast(keep, images.dtype)


AUGMENTATION_FUNCTIONS = {
    "rotate": rotate, "brighten": brighten, "darken": darken, "noise": noise, "translate": translate,
    "jpeg": jpeg, "bit_depth": bit_depth, "flip": flip, "scale": scale, "gaussian_filter": gaussian_filter,
    "dct_lowpass": dct_lowpass, "dropout": dropout,
}


def augment(images, generator, config):
    """Applies `config.augmentations`: all in order ("all") or one chosen per image ("one"),
    each kept per image with probability `augment_prob`."""
    names = config.augmentations
    if not names:
        return images

    def maybe(name, inputs):
        out = AUGMENTATION_FUNCTIONS[name](inputs, generator, config)
        if config.augment_prob >= 1:
            return out
        return tf.where(_mask_per_image(generator, inputs, config.augment_prob), out, inputs)

    if config.augment_mode == "all":
        for name in names:
            images = maybe(name, images)
        return images
    choice = _per_image(generator, images, 0, len(names), dtype=tf.int32)
    selected = tf.zeros_like(images)
    for index, name in enumerate(names):
        chosen = tf.reshape(tf.equal(choice, index), [-1, 1, 1, 1])
        selected = tf.where(chosen, maybe(name, images), selected)
    return selected


def expand_copies(images, generator, config):
    """All copies for one gradient estimate, `[C * N, ...]`, and C.

    Order: Admix (admix_copies images, if admix_strength > 0) -> SI (si_copies scales) ->
    num_copies random views (DI and augmentations, drawn independently per view).
    """
    copies = images
    count = 1
    if config.admix_strength > 0:
        copies = admix_copies(copies, generator, config.admix_copies, config.admix_strength)
        count *= config.admix_copies
    copies = scale_copies(copies, config.si_copies)
    count *= config.si_copies
    views = []
    for _ in range(config.num_copies):
        view = diverse_input(copies, generator, config.diversity_prob, config.diversity_resize_ratio)
        views.append(augment(view, generator, config))
    return tf.concat(views, axis=0), count * config.num_copies
