"""The 2017-2021 input transformations: DI (resize and pad), SI (scale copies), Admix (mix in other images)."""

from __future__ import annotations

import dataclasses

import tensorflow as tf

from tfattack.attacks.components import Transform, param, register


def _nearest_source(canvas: int, size: int, offset, resized):
    """For each canvas position: the source index under a nearest-neighbour resize of `size` pixels to
    `resized` pixels placed at `offset`, and whether the position lies inside the resized image."""
    position = tf.range(canvas, dtype=tf.float32) - tf.cast(offset, tf.float32)
    inside = (position >= 0) & (position < tf.cast(resized, tf.float32))
    source = tf.floor((position + 0.5) * (size / tf.cast(resized, tf.float32)))
    return tf.clip_by_value(tf.cast(source, tf.int32), 0, size - 1), inside


def diverse_input(images, generator, prob: float, resize_ratio: float = 330 / 299):
    """DI (Xie et al. CVPR 2019): with probability `prob` (one draw per call, as in the authors' code)
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
    apply = generator.uniform([]) < prob

    def diverse():
        rows, rows_inside = _nearest_source(canvas_h, height, pad_top, rnd_h)
        cols, cols_inside = _nearest_source(canvas_w, width, pad_left, rnd_w)
        canvas = tf.gather(tf.gather(images, rows, axis=1), cols, axis=2)
        inside = tf.cast(rows_inside[:, None] & cols_inside[None, :], images.dtype)[None, :, :, None]
        return tf.image.resize(canvas * inside, [height, width], method="bilinear")

    # A branch, not a select: the view (and its gradient) is computed only when drawn, for the same values and
    # gradients as selecting between both.
    return tf.cond(apply, diverse, lambda: tf.identity(images))


@register
@dataclasses.dataclass(frozen=True)
class DI(Transform):
    """Diverse inputs: random resize and pad, applied with probability `prob` per gradient evaluation."""

    name = "di"
    positional = "prob"
    paper = "Xie et al., Improving transferability of adversarial examples with input diversity, CVPR 2019"
    makes_copies = False
    prob: float = param(0.5, "Probability of the resize-and-pad view per gradient evaluation (paper: 0.5).",
                        low=0.0, high=1.0)
    resize_ratio: float = param(330 / 299, "Canvas size / image size (paper: 330/299).", above=1.0)

    @property
    def is_identity(self) -> bool:
        return self.prob == 0

    def apply(self, images, generator, batch):
        groups = images.shape[0] // batch if batch and images.shape[0] else 1
        if groups > 1:  # stacked points of one batch (estimator samples): a draw per point, as per sample in PGN/GRA
            return diverse_input_per_group(images, generator, self.prob, self.resize_ratio, groups)
        return diverse_input(images, generator, self.prob, self.resize_ratio)


def diverse_input_per_group(images, generator, prob: float, resize_ratio: float, groups: int):
    """`diverse_input` with its own draw (size, offset, whether to apply) for each of `groups` stacked groups of
    images: one batched gather per axis, no loop over groups."""
    if prob == 0:
        return images
    height, width = images.shape[1], images.shape[2]
    canvas_h = max(int(height * resize_ratio), height + 1)
    canvas_w = max(int(width * resize_ratio), width + 1)
    square = (height, canvas_h) == (width, canvas_w)
    unit = generator.uniform([4, groups])
    rnd_h = height + tf.cast(tf.floor(unit[0] * (canvas_h - height)), tf.int32)
    rnd_w = rnd_h if square else width + tf.cast(tf.floor(unit[1] * (canvas_w - width)), tf.int32)
    pad_top = tf.cast(tf.floor(unit[2] * tf.cast(canvas_h - rnd_h, tf.float32)), tf.int32)
    pad_left = tf.cast(tf.floor(unit[3] * tf.cast(canvas_w - rnd_w, tf.float32)), tf.int32)

    def sources(canvas, size, offset, resized):  # [groups, canvas] indices and inside-masks
        position = tf.range(canvas, dtype=tf.float32)[None, :] - tf.cast(offset, tf.float32)[:, None]
        resized = tf.cast(resized, tf.float32)[:, None]
        inside = (position >= 0) & (position < resized)
        source = tf.floor((position + 0.5) * (size / resized))
        return tf.clip_by_value(tf.cast(source, tf.int32), 0, size - 1), inside

    rows, rows_inside = sources(canvas_h, height, pad_top, rnd_h)
    cols, cols_inside = sources(canvas_w, width, pad_left, rnd_w)
    grouped = tf.reshape(images, [groups, -1, height, width, images.shape[3]])
    canvas = tf.gather(tf.gather(grouped, rows, axis=2, batch_dims=1), cols, axis=3, batch_dims=1)
    inside = tf.cast(rows_inside[:, :, None] & cols_inside[:, None, :], images.dtype)[:, None, :, :, None]
    diverse = tf.image.resize(tf.reshape(canvas * inside, [-1, canvas_h, canvas_w, images.shape[3]]),
                              [height, width], method="bilinear")
    apply = tf.repeat(generator.uniform([groups]) < prob, tf.shape(images)[0] // groups)
    return tf.where(apply[:, None, None, None], diverse, images)


def scale_copies(images, copies: int):
    """SI (Lin et al. ICLR 2020): the copies x / 2^i, i = 0..m-1. m = 1 is the identity."""
    return tf.concat([images / (2.0 ** i) for i in range(copies)], axis=0)


@register
@dataclasses.dataclass(frozen=True)
class SI(Transform):
    """Scale invariance: the copies x / 2^i, i < copies."""

    name = "si"
    budget_param = "copies"
    positional = "copies"
    paper = "Lin et al., Nesterov accelerated gradient and scale invariance for adversarial attacks, ICLR 2020"
    copies: int = param(5, "Scale copies m (paper: 5).", low=1)

    @property
    def is_identity(self) -> bool:
        return self.copies == 1

    @property
    def count(self) -> int:
        return self.copies

    def apply(self, images, generator, batch):
        return scale_copies(images, self.copies)


def admix_copies(images, generator, copies: int, strength: float, batch=None):
    """Admix (Wang et al. ICCV 2021): `copies` images x + eta * x', x' another image of the same batch.

    Each copy pairs image n with image (n + k) mod N of its batch for a random k in [1, N) (a different
    image; with N = 1 it is the image itself). x' is a constant (stop_gradient), as in the paper's formula
    where the gradient is taken with respect to x only. With several stacked groups of `batch` images
    (neighbours of one batch), x' comes from the same group.
    """
    total = tf.shape(images)[0]
    batch = total if batch is None else batch
    others = tf.stop_gradient(images)
    grouped = images.shape[0] is not None and batch is not None and images.shape[0] != batch
    mixed = []
    for _ in range(copies):
        shift = generator.uniform([], 1, tf.maximum(batch, 2), dtype=tf.int32) % batch
        if grouped:
            stacked = tf.reshape(others, tf.concat([[-1, batch], tf.shape(images)[1:]], 0))
            partner = tf.reshape(tf.roll(stacked, shift, axis=1), tf.shape(images))
        else:
            partner = tf.roll(others, shift, axis=0)
        mixed.append(images + strength * partner)
    return tf.concat(mixed, axis=0)


@register
@dataclasses.dataclass(frozen=True)
class Admix(Transform):
    """Admix: `copies` images x + strength * x', x' another image of the batch (so keep the batch >= 8: at
    batch 2 every copy mixes in the same single partner and transfer drops, see docs/benchmarks.md)."""

    name = "admix"
    budget_param = "copies"
    positional = "strength"
    paper = "Wang et al., Admix: enhancing the transferability of adversarial attacks, ICCV 2021"
    strength: float = param(0.2, "Mixing strength eta (paper: 0.2).", low=0.0)
    copies: int = param(3, "Admixed images per gradient evaluation m2 (paper: 3).", low=1)

    @property
    def is_identity(self) -> bool:
        return self.strength == 0 and self.copies == 1

    @property
    def count(self) -> int:
        return self.copies

    def apply(self, images, generator, batch):
        return admix_copies(images, generator, self.copies, self.strength, batch)
