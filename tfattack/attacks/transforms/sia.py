"""SIA, the structure invariant attack (Wang et al. ICCV 2023): split the image into n x n blocks at random cut
points and apply to each block one transformation drawn at random from a fixed list.

The ten block transformations and their strengths are those of the authors' code (github.com/xiaosen-wang/SIT,
attack.py; TransferAttack's sia.py keeps the first seven of them, without resize, dct and dropout):

    resize     bilinear down to int(0.8 h) + 1 rows (and columns), back up, clamped to [0, 1]
    vshift     cyclic shift of the rows by a uniform integer in [0, h)
    hshift     cyclic shift of the columns by a uniform integer in [0, w)
    vflip      upside down
    hflip      left-right
    rotate180  both flips
    scale      times a uniform factor in [0, 1)
    noise      plus uniform noise in [-16/255, 16/255], clipped to [0, 1]
    dct        low-pass: the last int(0.4 h) row and int(0.4 w) column frequencies of the block's DCT zeroed
    dropout    channel dropout (dropout2d) with p = 0.1: each channel of the block zeroed or scaled by 1/(1-p)

A block's result only depends on that block, so all blocks are done at once: the shifts and flips are one gather
of the whole image, resize and dct are block-diagonal matrices applied along rows and columns, scale, noise and
dropout are elementwise; each pixel then keeps the result of its block's transformation.

Deviations: every block of every copy of every image draws its own cut points, transformation and parameters
(the authors' code draws the cut points, transformations, shifts and scale factors once per copy for the whole
batch). For
blocks of 1 or 2 pixels int(0.4 n) is 0, and the authors' `dctx[:, :, -0:, :] = 0` then zeroes the whole block;
here nothing is cut (the block is kept). Like the authors' code, dct and dropout may leave [0, 1].
"""

from __future__ import annotations

import dataclasses
import math
from typing import Tuple

import tensorflow as tf

from tfattack.attacks.components import Transform, param, register
from tfattack.attacks.transforms.bsr import band_layout, copies_shape, copy_major, gather_copies, pixel_grid

SIA_OPS = ("resize", "vshift", "hshift", "vflip", "hflip", "rotate180", "scale", "noise", "dct", "dropout")


def random_cuts(generator, shape, size: int, blocks: int):
    """Block lengths [..., blocks] from blocks-1 distinct cut points drawn uniformly from 1..size-1 (the authors'
    np.random.choice(range(1, size), blocks - 1, replace=False), sorted)."""
    if blocks == 1:
        return tf.fill(tf.concat([shape, [1]], 0), size)
    keys = generator.uniform(tf.concat([shape, [size - 1]], 0))
    cuts = tf.sort(tf.math.top_k(keys, blocks - 1).indices + 1, axis=-1)
    edges = tf.concat([tf.zeros_like(cuts[..., :1]), cuts, tf.fill(tf.shape(cuts[..., :1]), size)], -1)
    return edges[..., 1:] - edges[..., :-1]


def sia_draws(generator, images, copies: int, blocks: int, settings: "SIA"):
    """All random numbers of `copies` SIA copies of each image, per (copy, image): block lengths, each block's
    transformation (an index into `settings.ops`), shift fractions, scale factors, noise and dropout masks."""
    height, width, channels = images.shape[1], images.shape[2], images.shape[3]
    if blocks > min(height, width):
        raise ValueError(f"transform 'sia': {blocks} blocks per side need images of at least {blocks} pixels, got "
                         f"{height}x{width}")
    shape = copies_shape(images, copies)
    grid = tf.concat([shape, [blocks, blocks]], 0)
    draws = dict(
        row_lengths=random_cuts(generator, shape, height, blocks),
        col_lengths=random_cuts(generator, shape, width, blocks),
        op=generator.uniform(grid, 0, len(settings.ops), dtype=tf.int32),
        vshift=generator.uniform(grid),     # step = floor(u * block height): uniform in [0, h)
        hshift=generator.uniform(grid),
        scale=generator.uniform(grid),
    )
    if "noise" in settings.ops:
        draws["noise"] = generator.uniform(tf.concat([shape, [height, width, channels]], 0),
                                           -settings.noise, settings.noise)
    if "dropout" in settings.ops:
        draws["keep"] = generator.uniform(tf.concat([grid, [channels]], 0)) >= settings.dropout
    return draws


def _same_band(start, length, size: int):
    """[..., size, size]: position q lies in the band of position p (start/length are per p, [..., size])."""
    q = tf.range(size)
    return (q >= start[..., None]) & (q < (start + length)[..., None])


def resize_matrix(start, length, size: int, factor: float):
    """Block-diagonal [..., size, size]: along one axis, each band resized bilinearly to int(factor*len)+1 and back
    (torch F.interpolate, align_corners=False, no antialiasing). start/length/offset are per position [..., size]."""
    offset = tf.range(size) - start
    n = tf.cast(length, tf.float64)
    small = tf.floor(n * factor) + 1.0

    def taps(positions, size_in, size_out):
        """torch's bilinear source taps of output `positions` when resizing size_in -> size_out."""
        source = tf.maximum((positions + 0.5) * (size_in / size_out) - 0.5, 0.0)
        first = tf.floor(source)
        second = tf.minimum(first + 1.0, size_in - 1.0)
        return first, second, source - first

    up_first, up_second, up_frac = taps(tf.cast(offset, tf.float64), small, n)
    matrix = 0.0
    for middle, up_weight in ((up_first, 1.0 - up_frac), (up_second, up_frac)):
        down_first, down_second, down_frac = taps(middle, n, small)
        for source, down_weight in ((down_first, 1.0 - down_frac), (down_second, down_frac)):
            column = start + tf.cast(source, tf.int32)
            weight = tf.cast(up_weight * down_weight, tf.float32)
            matrix += weight[..., None] * tf.one_hot(column, size, dtype=tf.float32)
    return matrix


def dct_lowpass_matrix(start, length, size: int, cut: float):
    """Block-diagonal [..., size, size]: along one axis, each band's orthonormal DCT-II with its last int(cut*len)
    frequencies zeroed, inverted: sum over kept k of c_k(a) c_k(b), in closed form (a Dirichlet kernel).

    With c_k(a) = sqrt(2/n) cos(pi k (2a+1) / 2n) (c_0 = sqrt(1/n)), the entry for offsets a, b in a band of n is
    (1 + S(a - b) + S(a + b + 1)) / n, S(j) = sum_{k=1}^{K-1} cos(pi k j / n) = sin(pi (2K-1) j / 2n) /
    (2 sin(pi j / 2n)) - 1/2 (K - 1 at j = 0), K = n - int(cut n). The large angle is reduced exactly in integers,
    so float32 keeps ~1e-6 accuracy."""
    offset = (tf.range(size) - start)[..., :, None]                       # a, [..., size, 1]
    other = tf.range(size) - start[..., None]                             # b, [..., size, size]
    n = length[..., None]
    kept = n - tf.cast(tf.floor(tf.cast(n, tf.float64) * cut), tf.int32)
    to_angle = math.pi / (2.0 * tf.cast(n, tf.float32))

    def cosine_sum(j):
        half = tf.sin(tf.cast(j, tf.float32) * to_angle)
        zero = tf.equal(tf.math.floormod(j, 2 * n), 0)
        top = tf.sin(tf.cast(tf.math.floormod((2 * kept - 1) * j, 4 * n), tf.float32) * to_angle)
        value = top / (2.0 * tf.where(zero, tf.ones_like(half), half)) - 0.5
        return tf.where(zero, tf.cast(kept, tf.float32) - 1.0, value)

    entry = (1.0 + cosine_sum(offset - other) + cosine_sum(offset + other + 1)) / tf.cast(n, tf.float32)
    return tf.where(_same_band(start, length, size), entry, tf.zeros_like(entry))


def _along_axes(images, row_matrix, col_matrix):
    """out[k, m] = R[k, m] @ images[m] @ C[k, m]^T per channel: [count, M, H, W, C]."""
    rows = tf.einsum("kmhi,miwc->kmhwc", row_matrix, images)
    return tf.einsum("kmwj,kmhjc->kmhwc", col_matrix, rows)


def structure_invariant(images, settings: "SIA", row_lengths, col_lengths, op, vshift, hshift, scale,
                        noise=None, keep=None):
    """SIA copies from their draws (see `sia_draws`): [copies*M, H, W, C], copy-major."""
    height, width, channels = images.shape[1], images.shape[2], images.shape[3]
    blocks = row_lengths.shape[-1]
    identity_order = tf.zeros_like(row_lengths) + tf.range(blocks)
    row_band, row_offset, row_start, row_length = band_layout(row_lengths, identity_order, height)   # [k, M, H]
    col_band, col_offset, col_start, col_length = band_layout(col_lengths, identity_order, width)    # [k, M, W]
    rows, cols = pixel_grid(height, width)

    def per_pixel(values, along_rows):
        return tf.gather(values, rows if along_rows else cols, axis=-1)                              # [k, M, P]

    block = per_pixel(row_band, True) * blocks + per_pixel(col_band, False)

    def per_block(values):
        flat = tf.reshape(values, tf.concat([tf.shape(values)[:2], [blocks * blocks], values.shape[4:]], 0))
        return tf.gather(flat, block, batch_dims=2)

    chosen = per_block(op)

    def uses(name):
        return (tf.equal(chosen, settings.ops.index(name)) if name in settings.ops
                else tf.zeros_like(chosen, dtype=tf.bool))

    y_start, y_length, y_offset = (per_pixel(v, True) for v in (row_start, row_length, row_offset))
    x_start, x_length, x_offset = (per_pixel(v, False) for v in (col_start, col_length, col_offset))
    y_step = tf.cast(tf.floor(per_block(vshift) * tf.cast(y_length, tf.float32)), tf.int32)
    x_step = tf.cast(tf.floor(per_block(hshift) * tf.cast(x_length, tf.float32)), tf.int32)
    y_step, x_step = tf.minimum(y_step, y_length - 1), tf.minimum(x_step, x_length - 1)
    flip_y = uses("vflip") | uses("rotate180")
    flip_x = uses("hflip") | uses("rotate180")
    source_y = tf.where(uses("vshift"), tf.math.floormod(y_offset - y_step, y_length), y_offset)
    source_y = y_start + tf.where(flip_y, y_length - 1 - y_offset, source_y)
    source_x = tf.where(uses("hshift"), tf.math.floormod(x_offset - x_step, x_length), x_offset)
    source_x = x_start + tf.where(flip_x, x_length - 1 - x_offset, source_x)
    out = gather_copies(images, source_y, source_x)                                                   # [k, M, P, C]

    out *= tf.cast(tf.where(uses("scale"), per_block(scale), tf.ones_like(per_block(scale))), out.dtype)[..., None]
    if keep is not None:
        kept = tf.cast(per_block(keep), out.dtype) / (1.0 - settings.dropout)
        out = tf.where(uses("dropout")[..., None], out * kept, out)
    if noise is not None:
        flat_noise = tf.reshape(noise, tf.concat([tf.shape(noise)[:2], [height * width, channels]], 0))
        out = tf.where(uses("noise")[..., None], tf.clip_by_value(out + flat_noise, 0.0, 1.0), out)
    for name, builder, strength, clamp in (("resize", resize_matrix, settings.resize, True),
                                           ("dct", dct_lowpass_matrix, settings.dct_cut, False)):
        if name not in settings.ops:
            continue
        row_matrix = tf.cast(builder(row_start, row_length, height, strength), images.dtype)
        col_matrix = tf.cast(builder(col_start, col_length, width, strength), images.dtype)
        whole = tf.reshape(_along_axes(images, row_matrix, col_matrix),
                           tf.concat([tf.shape(out)[:2], [height * width, channels]], 0))
        if clamp:
            whole = tf.clip_by_value(whole, 0.0, 1.0)
        out = tf.where(uses(name)[..., None], whole, out)
    return copy_major(out, height, width)


@register
@dataclasses.dataclass(frozen=True)
class SIA(Transform):
    """Structure invariant transformation: `copies` images, each split into blocks x blocks blocks at random cut
    points, each block transformed by one of `ops` drawn uniformly (per block, copy and image)."""

    name = "sia"
    budget_param = "copies"
    positional = "blocks"
    paper = "Wang et al., Structure invariant transformation for better adversarial transferability, ICCV 2023"
    blocks: int = param(3, "Blocks per side (paper and authors' code: 3).", low=1)
    copies: int = param(20, "Transformed copies per gradient evaluation (paper and authors' code: 20).", low=1)
    ops: Tuple[str, ...] = param(SIA_OPS, "Block transformations, joined by '+' (authors' code: all ten; "
                                          "TransferAttack: vshift+hshift+vflip+hflip+rotate180+scale+noise).",
                                 items=SIA_OPS)
    noise: float = param(16 / 255, "noise: half-width of the uniform noise (authors' code: 16/255).", low=0.0)
    resize: float = param(0.8, "resize: the block is resized to int(resize*size)+1 and back (authors' code: 0.8).",
                          above=0.0, high=1.0)
    dct_cut: float = param(0.4, "dct: fraction of the highest frequencies zeroed per axis (authors' code: 0.4).",
                           low=0.0, high=1.0)
    dropout: float = param(0.1, "dropout: channel dropout probability (authors' code: 0.1).", low=0.0, high=0.99)

    def validate(self):
        if not self.ops:
            raise self.error("ops must list at least one block transformation")
        if len(set(self.ops)) != len(self.ops):
            raise self.error(f"ops lists a transformation twice: {'+'.join(self.ops)}")

    @property
    def count(self) -> int:
        return self.copies

    @tf.autograph.experimental.do_not_convert  # static Python control flow only: no conversion needed
    def apply(self, images, generator, batch):
        draws = sia_draws(generator, images, self.copies, self.blocks, self)
        return structure_invariant(images, self, **draws)
