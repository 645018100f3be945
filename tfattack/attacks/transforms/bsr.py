"""BSR (Wang et al. CVPR 2024): split the image into n x n blocks of random sizes, shuffle them, rotate each block.

Facts used: the authors' code (github.com/Trustworthy-AI-Group/BSR, mi_bsr.py): block lengths from get_length
(uniform weights, rounded shares, the largest absorbing the rounding), one permutation of the row strips and one
of the column blocks, each block rotated about its centre (tfa.image.rotate, bilinear, zero fill), 2x2 blocks and
20 copies; the paper's maximum angle of 24 degrees, uniform as in TransferAttack's bsr.py.
Deviations: every draw is made per copy *and image* and afresh at every call (the authors' TF1 code draws the
lengths and permutations with NumPy once, when the graph is built, so they stay fixed for the whole run and are
shared by the batch; it draws the angles per image from a normal of std 0.2 rad truncated at 2 std); the zero fill
is black here (images in [0, 1]), mid-grey in the authors' [-1, 1] code, black in TransferAttack's.

Also the gather helpers the other copy makers here share: every copy is a per-pixel resampling of its input
image, so the copies are built with one batched gather (no per-copy Python work, static shapes, XLA kernels).
"""

from __future__ import annotations

import dataclasses
import math

import tensorflow as tf

from tfattack.attacks.components import Transform, param, register


# ----------------------------------------------------------------- shared resampling helpers

def copies_shape(images, count: int):
    """[count, M] for per-copy, per-image draws (M may be dynamic)."""
    return tf.stack([count, tf.shape(images)[0]])


def gather_copies(images, rows, cols):
    """`images` [M, H, W, C]; `rows`, `cols` int [count, M, P] (in range) -> [count, M, P, C] with
    out[k, m, p] = images[m, rows[k, m, p], cols[k, m, p]]."""
    width = images.shape[2]
    flat = tf.reshape(images, tf.concat([tf.shape(images)[:1], [-1, images.shape[3]]], 0))   # [M, H*W, C]
    index = tf.transpose(rows * width + cols, [1, 0, 2])                                        # [M, count, P]
    return tf.transpose(tf.gather(flat, index, batch_dims=1), [1, 0, 2, 3])


def bilinear_copies(images, y, x, low_y=0, high_y=None, low_x=0, high_x=None):
    """Bilinear samples of `images` [M, H, W, C] at float pixel coordinates `y`, `x` [count, M, P]: the four
    neighbouring pixels, each counting as 0 outside rows [low_y, high_y) and columns [low_x, high_x) (the whole
    image by default; per-sample int bounds [count, M, P] for a block). Differentiable in the images and in y, x."""
    height, width = images.shape[1], images.shape[2]
    high_y = height if high_y is None else high_y
    high_x = width if high_x is None else high_x
    y0, x0 = tf.floor(y), tf.floor(x)
    fy, fx = y - y0, x - x0
    y0, x0 = tf.cast(y0, tf.int32), tf.cast(x0, tf.int32)
    total = 0.0
    for dy, wy in ((0, 1.0 - fy), (1, fy)):
        for dx, wx in ((0, 1.0 - fx), (1, fx)):
            ty, tx = y0 + dy, x0 + dx
            inside = (ty >= low_y) & (ty < high_y) & (tx >= low_x) & (tx < high_x)
            values = gather_copies(images, tf.clip_by_value(ty, 0, height - 1), tf.clip_by_value(tx, 0, width - 1))
            weight = tf.where(inside, wy * wx, tf.zeros_like(wy))
            total += values * tf.cast(weight, images.dtype)[..., None]
    return total


def pixel_grid(height: int, width: int):
    """Row and column index of every pixel, flattened row-major: two int32 [H*W]."""
    rows = tf.repeat(tf.range(height), width)
    cols = tf.tile(tf.range(width), [height])
    return rows, cols


def copy_major(values, height: int, width: int):
    """[count, M, H*W, C] -> [count*M, H, W, C]."""
    return tf.reshape(values, [-1, height, width, values.shape[-1]])


# ----------------------------------------------------------------- BSR

def split_lengths(weights, size: int):
    """The authors' block lengths: weights [..., n] (uniform draws) -> int32 lengths [..., n] summing to `size`:
    round(w / sum(w) * size) (half to even, as np.round), the first largest one absorbing the rounding error."""
    count = weights.shape[-1]
    total = tf.maximum(tf.reduce_sum(weights, -1, keepdims=True), 1e-12)
    lengths = tf.cast(tf.round(weights / total * size), tf.int32)
    largest = tf.reduce_max(lengths, -1, keepdims=True)
    first = tf.reduce_min(tf.where(lengths == largest, tf.range(count), count), -1)
    missing = size - tf.reduce_sum(lengths, -1, keepdims=True)
    return lengths + tf.one_hot(first, count, dtype=tf.int32) * missing


def band_layout(lengths, order, size: int):
    """One axis of a block shuffle. `lengths` [..., n]: the bands of the source image in image order; `order`
    [..., n]: output band u shows source band order[u]. For each output position p < size (int32 [..., size]):
    its output band u, its offset in that band, the band's first source position and its length."""
    batch_dims = len(order.shape) - 1
    starts = tf.cumsum(lengths, axis=-1, exclusive=True)
    out_lengths = tf.gather(lengths, order, batch_dims=batch_dims)
    out_ends = tf.cumsum(out_lengths, axis=-1)
    positions = tf.range(size)
    band = tf.reduce_sum(tf.cast(positions[:, None] >= out_ends[..., None, :], tf.int32), -1)
    band = tf.minimum(band, lengths.shape[-1] - 1)
    offset = positions - tf.gather(out_ends - out_lengths, band, batch_dims=batch_dims)
    source_start = tf.gather(starts, tf.gather(order, band, batch_dims=batch_dims), batch_dims=batch_dims)
    return band, offset, source_start, tf.gather(out_lengths, band, batch_dims=batch_dims)


def bsr_draws(generator, images, copies: int, blocks: int, max_angle: float):
    """The random numbers of `copies` BSR copies of each image, drawn per (copy, image): block lengths along rows
    and columns, the two permutations, and an angle in radians per output block. Shapes [copies, M, ...]."""
    shape = copies_shape(images, copies)
    height, width = images.shape[1], images.shape[2]
    draw = lambda *tail: generator.uniform(tf.concat([shape, tail], 0))  # noqa: E731
    limit = max_angle * math.pi / 180.0
    return dict(
        row_lengths=split_lengths(draw(blocks), height),
        col_lengths=split_lengths(draw(blocks), width),
        row_order=tf.argsort(draw(blocks), axis=-1, stable=True),
        col_order=tf.argsort(draw(blocks), axis=-1, stable=True),
        angles=generator.uniform(tf.concat([shape, [blocks, blocks]], 0), -limit, limit),
    )


def block_shuffle_rotate(images, row_lengths, col_lengths, row_order, col_order, angles):
    """BSR copies from their draws (see `bsr_draws`): output block (u, v) is source block (row_order[u],
    col_order[v]) rotated by angles[u, v] about its centre, bilinear, zeros outside the block (tfa.image.rotate
    on each block, as in the authors' code). Returns [copies*M, H, W, C], copy-major."""
    height, width = images.shape[1], images.shape[2]
    blocks = row_lengths.shape[-1]
    row_band, row_offset, row_start, row_length = band_layout(row_lengths, row_order, height)   # [k, M, H]
    col_band, col_offset, col_start, col_length = band_layout(col_lengths, col_order, width)    # [k, M, W]
    rows, cols = pixel_grid(height, width)

    def per_pixel(values, along_rows):
        return tf.gather(values, rows if along_rows else cols, axis=-1)                            # [k, M, H*W]

    band = per_pixel(row_band, True) * blocks + per_pixel(col_band, False)
    angle = tf.gather(tf.reshape(angles, tf.concat([tf.shape(angles)[:2], [-1]], 0)), band, batch_dims=2)
    length_y, length_x = per_pixel(row_length, True), per_pixel(col_length, False)
    centre_y = (tf.cast(length_y, tf.float32) - 1.0) / 2.0
    centre_x = (tf.cast(length_x, tf.float32) - 1.0) / 2.0
    dy = tf.cast(per_pixel(row_offset, True), tf.float32) - centre_y
    dx = tf.cast(per_pixel(col_offset, False), tf.float32) - centre_x
    cos, sin = tf.cos(angle), tf.sin(angle)
    start_y, start_x = per_pixel(row_start, True), per_pixel(col_start, False)
    # Output -> input within the block (the projective matrix of tfa.image.rotate), then block -> image.
    y = tf.cast(start_y, tf.float32) + centre_y + sin * dx + cos * dy
    x = tf.cast(start_x, tf.float32) + centre_x + cos * dx - sin * dy
    out = bilinear_copies(images, y, x, start_y, start_y + length_y, start_x, start_x + length_x)
    return copy_major(out, height, width)


@register
@dataclasses.dataclass(frozen=True)
class BSR(Transform):
    """Block shuffle and rotation: `copies` images, each split into blocks x blocks blocks of random sizes, the
    blocks shuffled (rows and columns of blocks permuted) and each rotated by a uniform random angle."""

    name = "bsr"
    budget_param = "copies"
    positional = "blocks"
    paper = "Wang et al., Boosting adversarial transferability by block shuffle and rotation, CVPR 2024"
    blocks: int = param(2, "Blocks per side n (paper and the authors' code: 2, i.e. 2x2 blocks; TransferAttack: 3).",
                        low=1)
    max_angle: float = param(24.0, "Rotation angle of each block, uniform in [-max_angle, max_angle] degrees "
                                   "(paper and TransferAttack: 24).", low=0.0, high=180.0)
    copies: int = param(20, "Shuffled copies N per gradient evaluation (paper and authors' code: 20).", low=1)

    @property
    def is_identity(self) -> bool:
        return self.blocks == 1 and self.max_angle == 0 and self.copies == 1

    @property
    def count(self) -> int:
        return self.copies

    @tf.autograph.experimental.do_not_convert  # static Python control flow only: no conversion needed
    def apply(self, images, generator, batch):
        draws = bsr_draws(generator, images, self.copies, self.blocks, self.max_angle)
        return block_shuffle_rotate(images, **draws)
