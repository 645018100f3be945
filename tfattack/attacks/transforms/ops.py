"""The operator pool of OPS (Guo et al. CVPR 2025), vectorised over copies: random compositions of basic image
operators, each copy with its own operator and parameters. Used by the `ops` estimator
(`tfattack.attacks.estimators.ops`); not a transform component itself (OPS needs the operators per neighbour and
one untransformed term, which the estimator arranges).

Facts from the authors' code (github.com/the-full/OPS, TransferAttack/transferattack/input_transformation/ops.py,
the same in Trustworthy-AI-Group/TransferAttack): 31 basic operators on NCHW images,

    identity
    vflip, hflip              flip the rows / the columns
    vshift, hshift            cyclic shift (torch.roll) of the rows / columns by a step uniform in [0, H) / [0, W)
    rotate(a)                 torchvision rotate by a degrees counter-clockwise about the centre: nearest
                              neighbour, zero fill, same size; a in +-5, +-15, +-45, +-90, 180
    scale(s)                  x / s, s = 2..8
    dim(r)                    bilinear resize (torch interpolate, align_corners=False) to rnd x rnd, rnd uniform in
                              [size, int(size * r)), zero pad at a random offset to int(size * r), bilinear resize
                              back to size; r = 1.1, 1.3, ..., 2.9; always applied

A composite operator of level k applies k basic operators drawn uniformly with replacement. Implementation, all
copies at once with static shapes (channels first inside the pipeline): each slot of the composites is one pass
over the stack. Pixel remaps (the first five kinds and the rotations) are one gather with a per-copy source index
(-1: zero fill); the rotations' index maps are computed once per image size in NumPy (exact coordinates snapped to
1e-6 and rounded half to even like grid_sample; torch's float32 arithmetic can break a near-tie the other way: 2
of 50176 pixels at 224 x 224 and +-15 degrees, and for non-square images the quarter turns, where every coordinate
is an exact tie). dim is separable: per copy a [H, H] and a [W, W] matrix of the four taps of each output row and
column (the two bilinear resizes), applied by batched matmuls (R x C^T per channel). Everything is linear in the
image, so gradients flow through the operators by the chain rule, as in the authors' code.

Deviations: the images are NHWC in [0, 1]; the operators of a copy are drawn per image too (the authors' code
draws the composition, shift steps and dim sizes once per copy for the whole batch); for non-square images dim
resizes each side within its own canvas (the authors' code assumes square images); the canvas is at least
size + 1 (for tiny images where int(size * r) == size torch's randint would fail).
"""

from __future__ import annotations

import functools
import math
from typing import Sequence, Tuple

import numpy as np
import tensorflow as tf

from tfattack.attacks.transforms.bsr import pixel_grid

SIMPLE_OPERATORS = ("identity", "vflip", "hflip", "vshift", "hshift")
KINDS = SIMPLE_OPERATORS + ("rotate", "scale", "dim")
UNIFORMS = 4  # per (copy, image, slot): shift step or dim size (rows), dim size (columns), dim top, dim left

Operator = Tuple[str, float]


def basic_operators(simple: Sequence[str], angles: Sequence[float], scales: Sequence[float],
                    rates: Sequence[float]) -> Tuple[Operator, ...]:
    """The basic operator list, (kind, parameter) pairs, in the authors' order: the simple ones, the rotations,
    the scalings, the dims."""
    return (tuple((name, 0.0) for name in simple) + tuple(("rotate", float(a)) for a in angles)
            + tuple(("scale", float(s)) for s in scales) + tuple(("dim", float(r)) for r in rates))


def skip_id(operators: Sequence[Operator]) -> int:
    """The operator id meaning "nothing" (a slot past a composite's level): one past the basic operators."""
    return len(operators)


def dim_canvas(size: int, rate: float) -> int:
    """dim's canvas side: int(size * rate) (authors' code), at least size + 1."""
    return max(int(size * rate), size + 1)


@functools.lru_cache(maxsize=None)
def rotation_source(height: int, width: int, angle: float) -> np.ndarray:
    """Flat source pixel (row * width + col, or -1 outside) of every output pixel of torchvision's
    rotate(angle) (counter-clockwise, about the centre ((W-1)/2, (H-1)/2), nearest, zero fill): the output pixel
    at offset (x, y) from the centre reads (cos a x - sin a y, sin a x + cos a y). Nearest rounds half to even, as
    grid_sample does; coordinates are snapped to 1e-6 first so that exact ties stay ties."""
    rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    cy, cx = (height - 1) / 2.0, (width - 1) / 2.0
    x, y = cols - cx, rows - cy
    a = math.radians(angle)
    source_x = np.rint(np.round(math.cos(a) * x - math.sin(a) * y + cx, 6)).astype(np.int64)
    source_y = np.rint(np.round(math.sin(a) * x + math.cos(a) * y + cy, 6)).astype(np.int64)
    inside = (source_x >= 0) & (source_x < width) & (source_y >= 0) & (source_y < height)
    return np.where(inside, source_y * width + source_x, -1).reshape(-1).astype(np.int32)


def _tables(operators: Tuple[Operator, ...], height: int, width: int):
    """Static per-operator tables (the skip id last): source maps [n+1, H*W], factors [n+1], dim canvases."""
    identity = np.arange(height * width, dtype=np.int32)
    grid = identity.reshape(height, width)
    maps, factors, canvas_h, canvas_w = [], [], [], []
    for kind, value in tuple(operators) + (("identity", 0.0),):
        if kind == "vflip":
            maps.append(grid[::-1].reshape(-1))
        elif kind == "hflip":
            maps.append(grid[:, ::-1].reshape(-1))
        elif kind == "rotate":
            maps.append(rotation_source(height, width, value))
        else:  # identity, the shifts (replaced per copy), scale, dim (not a remap)
            maps.append(identity)
        factors.append(1.0 / value if kind == "scale" else 1.0)
        rate = value if kind == "dim" else 1.0
        canvas_h.append(dim_canvas(height, rate))
        canvas_w.append(dim_canvas(width, rate))
    return (np.stack(maps).astype(np.int32), np.asarray(factors, np.float32), np.asarray(canvas_h, np.int32),
            np.asarray(canvas_w, np.int32))


def _floor_index(u, count):
    """floor(u * count) for u in [0, 1), kept below `count` (float rounding); `count` an int or int32 [K]."""
    value = tf.cast(tf.floor(u * tf.cast(count, tf.float32)), tf.int32)
    return tf.minimum(value, count - 1)


def dim_taps(size: int, canvas, resized, offset):
    """One axis of dim for each copy (canvas, resized, offset: int32 [K]): the source index [K, size, 4] and weight
    [K, size, 4] of the four taps of every output position. Output position i reads the canvas (bilinear, canvas ->
    size), whose position c holds the resized image at c - offset (zero outside [0, resized)), itself bilinear
    from the source (size -> resized). torch's interpolate, align_corners=False: source coordinate
    max((i + 0.5) * in / out - 0.5, 0), the upper tap clamped to the last position."""
    canvas_f = tf.cast(canvas, tf.float32)[:, None]
    resized_f = tf.cast(resized, tf.float32)[:, None]
    position = tf.range(size, dtype=tf.float32)[None, :]
    down = tf.maximum((position + 0.5) * (canvas_f / size) - 0.5, 0.0)                  # [K, size] in the canvas
    c0 = tf.floor(down)
    c_weight = down - c0
    c0 = tf.cast(c0, tf.int32)
    c1 = tf.minimum(c0 + 1, canvas[:, None] - 1)
    indices, weights = [], []
    for c, weight in ((c0, 1.0 - c_weight), (c1, c_weight)):
        q = c - offset[:, None]                                                         # in the resized image
        inside = tf.cast((q >= 0) & (q < resized[:, None]), tf.float32)
        up = tf.maximum((tf.cast(q, tf.float32) + 0.5) * (size / resized_f) - 0.5, 0.0)
        s0 = tf.floor(up)
        s_weight = up - s0
        s0 = tf.clip_by_value(tf.cast(s0, tf.int32), 0, size - 1)
        s1 = tf.minimum(s0 + 1, size - 1)
        indices += [s0, s1]
        weights += [weight * inside * (1.0 - s_weight), weight * inside * s_weight]
    return tf.stack(indices, -1), tf.stack(weights, -1)


def taps_matrix(indices, weights, size: int):
    """The [K, size, size] matrices with rows given by taps: M[k, i, indices[k, i, t]] += weights[k, i, t]."""
    count = tf.shape(indices)[0]
    rows = tf.reshape(tf.range(count * size), [count, size, 1])                           # (k, i) flattened
    segments = tf.reshape(rows * size + indices, [-1])
    flat = tf.math.unsorted_segment_sum(tf.reshape(weights, [-1]), segments, count * size * size)
    return tf.reshape(flat, [count, size, size])


def _one_slot(images, op, uniforms, operators: Tuple[Operator, ...], tables):
    """Applies to each image k of `images` [K, H, W, C] its operator op[k] (an id into `operators` or the skip id)
    with the random numbers uniforms[k] [UNIFORMS]; `tables` from `_tables` (as constants)."""
    channels, height, width = images.shape[1], images.shape[2], images.shape[3]
    maps, factors, canvas_h, canvas_w, kinds, square = tables
    present = {name for name, _ in operators}
    kind = tf.gather(kinds, op)

    def uses(name):
        return tf.equal(kind, KINDS.index(name))

    count = tf.shape(images)[0]
    source = tf.gather(maps, op)                                                           # [K, H*W]
    rows, cols = pixel_grid(height, width)
    for name, size in (("vshift", height), ("hshift", width)):
        if name not in present:
            continue
        step = _floor_index(uniforms[:, 0], size)[:, None]
        if name == "vshift":   # torch.roll: out[i] = x[(i - step) mod H]
            shifted = tf.math.floormod(rows[None] - step, height) * width + cols[None]
        else:
            shifted = rows[None] * width + tf.math.floormod(cols[None] - step, width)
        source = tf.where(uses(name)[:, None], shifted, source)
    flat = tf.reshape(images, [count, channels, height * width])
    remapped = tf.gather(flat, tf.maximum(source, 0), axis=2, batch_dims=1)
    remapped *= tf.cast(source >= 0, images.dtype)[:, None, :]
    out = tf.reshape(remapped, tf.shape(images))
    if "dim" in present:
        canvas_rows, canvas_cols = tf.gather(canvas_h, op), tf.gather(canvas_w, op)
        resized_rows = height + _floor_index(uniforms[:, 0], canvas_rows - height)
        if square:   # one size for both sides
            resized_cols = resized_rows
        else:
            resized_cols = width + _floor_index(uniforms[:, 1], canvas_cols - width)
        top = _floor_index(uniforms[:, 2], canvas_rows - resized_rows)
        left = _floor_index(uniforms[:, 3], canvas_cols - resized_cols)
        # Separable: R @ x @ C^T per channel, R and C built from the four taps of each output row / column
        # (batched matmuls, channels first: much faster on CPU than gathering the taps).
        along_rows = tf.cast(taps_matrix(*dim_taps(height, canvas_rows, resized_rows, top), height), images.dtype)
        along_cols = tf.cast(taps_matrix(*dim_taps(width, canvas_cols, resized_cols, left), width), images.dtype)
        dimmed = tf.matmul(tf.matmul(tf.stop_gradient(along_rows)[:, None], images),
                           tf.stop_gradient(along_cols)[:, None], transpose_b=True)
        out = tf.where(uses("dim")[:, None, None, None], dimmed, out)
    return out * tf.cast(tf.gather(factors, op), images.dtype)[:, None, None, None]


@tf.autograph.experimental.do_not_convert  # static Python control flow only
def apply_operators(images, ops, uniforms, operators: Tuple[Operator, ...]):
    """Composite operators, one per image: `images` [K, H, W, C], `ops` int32 [K, L] (slot l of image k: an id
    into `operators`, or `skip_id(operators)`), `uniforms` [K, L, UNIFORMS] in [0, 1). Slot 0 is applied first
    (the slots are i.i.d. draws, so the order is immaterial). Returns [K, H, W, C]."""
    maps, factors, canvas_h, canvas_w = _tables(tuple(operators), images.shape[1], images.shape[2])
    square = (images.shape[1], canvas_h.tolist()) == (images.shape[2], canvas_w.tolist())
    kinds = [KINDS.index(name) for name, _ in operators] + [KINDS.index("identity")]   # the skip id last
    tables = (tf.constant(maps), tf.constant(factors), tf.constant(canvas_h), tf.constant(canvas_w),
              tf.constant(kinds, tf.int32), square)
    images = tf.transpose(images, [0, 3, 1, 2])
    for slot in range(ops.shape[1]):
        images = _one_slot(images, ops[:, slot], uniforms[:, slot], operators, tables)
    return tf.transpose(images, [0, 2, 3, 1])


@tf.autograph.experimental.do_not_convert  # static Python control flow only
def draw_composites(generator, shape, operators: Tuple[Operator, ...], levels: Sequence[int], count: int):
    """`count` composite operators drawn without replacement, for each index of `shape` (e.g. [neighbours,
    batch]), from a fresh pool of len(operators) composites per level (authors' init_op_list, then random.sample):
    ops int32 [*shape, count, max(levels)] and uniforms [*shape, count, max(levels), UNIFORMS].

    A level-k composite draws k basic operators uniformly with replacement (random.choices); level 1 holds each
    basic operator once (the evident intent of the authors' code, whose level 1 appends the list itself)."""
    shape = tf.constant(list(shape), tf.int32) if isinstance(shape, (list, tuple)) else shape
    basic = len(operators)
    depth = max(levels)
    keys = generator.uniform(tf.concat([shape, [basic * len(levels)]], 0))
    chosen = tf.math.top_k(keys, count).indices                                            # [*shape, count]
    level = tf.gather(tf.constant(list(levels), tf.int32), chosen // basic)
    drawn = generator.uniform(tf.concat([shape, [count, depth]], 0), 0, basic, dtype=tf.int32)
    own = tf.concat([tf.math.floormod(chosen, basic)[..., None], drawn[..., 1:]], -1)      # level 1: each once
    drawn = tf.where((level == 1)[..., None], own, drawn)
    active = tf.range(depth) < level[..., None]
    ops = tf.where(active, drawn, skip_id(operators))
    uniforms = generator.uniform(tf.concat([shape, [count, depth, UNIFORMS]], 0))
    return ops, uniforms
