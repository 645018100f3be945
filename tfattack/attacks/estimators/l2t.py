"""L2T, learning to transform (Zhu et al. CVPR 2024): input transformations drawn from a distribution over a pool
of candidate operations that is itself learned during the attack, by gradient ascent on the loss of the drawn
copies.

Per iteration, with theta the distribution's logits over the P ops of the pool (theta_0 = 0, one per attacked
batch) and p = softmax(theta):

    o_i1..o_iL ~ p  (i.i.d., i = 1..S)                    a trajectory: L ops, applied in order
    J_i        = mean over the copies c of T_i(x) of J(c)  T_i = o_iL o ... o o_i1; an op makes C_o copies of each
                                                          input, so a trajectory makes C_o1 x ... x C_oL copies
    grad       = d/dx 1/S sum_i J_i                        through the ops (chain rule)
    theta     <- theta + lr * d/dtheta 1/S sum_i (prod_l p[o_il]) * J_i
              =  theta + lr/S sum_i J_i prod_l p[o_il] (sum_l onehot(o_il) - L p)

and MI-FGSM takes grad. Facts from the authors' code (github.com/RongyiZhu/L2T, l2t.py and main.py; the same in
Trustworthy-AI-Group/TransferAttack, transferattack/input_transformation/l2t.py, except ssm's copies, 10 there):
S = num_scale = 3, L = ops_num = 2, lr = learning_rate = 0.01, eps 16/255, 10 steps of 1.6/255, decay 1; J is the
mean cross-entropy over the batch and the copies (one distribution per batch); ops drawn by torch.multinomial with
replacement; the derivative of theta via autograd of the line above; and this pool of 98 ops (`AUTHORS_OPS`, in
op_list order; one of them, ide with 0.1..0.4, is listed twice):

    identity                  x                                                   1 copy
    rotate(a), a = 30..300    torchvision rotate by a / 2^i degrees, i < 5: counter-clockwise about the centre,
                              nearest neighbour, zero fill                        5 copies
    sim(k), k = 1..10         x / 2^i, i < k                                      k copies
    dim(r), r = 1.1..1.55     bilinear resize (align_corners=False) to rnd x rnd, rnd uniform in [S, int(S r)),
                              zero pad at a random offset to int(S r), bilinear resize back to S; always applied
                                                                                  1 copy
    blockshuffle(n), n=3..12  the axes in random order: n strips of random lengths (round(w / sum(w) * S), the
                              largest absorbing the rounding) along the first, shuffled; each strip cut the same
                              way along the second axis with its own lengths and shuffle     10 copies
    admix(m, eta), m = 1..5,  (x + eta x') / 2^i, i < 3, x' a detached image of a random permutation of the
    eta = 0.2, 0.4            input stack, one permutation for each of m mixes    3 m copies
    ide(q_1..q_k)             x * mask, mask 0 with probability q_j per element (dropout rescaled back)   k copies
    masked(n), n = 2..11      one random block of an n x n grid (edges round(i S / n)) set to 0     5 copies
    ssm(rho), rho = 0.1..0.9  IDCT(DCT(x + xi) * mask), xi ~ N(0, (16/255)^2), mask ~ U[1-rho, 1+rho] per
                              element, 2-D DCT-II of each channel                 5 copies
    crop(r), r = 0.1..0.9     centre crop of int(S r_i) pixels, r_i = r + (1-r)(i+1)/5, i < 5, resized back
                              (bilinear)                                          5 copies
    affine(o), o = 0.5..0.9   torchvision affine translation by t_i = o (i+1)/5 pixels right and down, i < 5
                              (nearest neighbour, zero fill)                      5 copies

How it runs here: every trajectory gets the same number of model inputs, `copies` slots (static shapes). Its
C = C_o1 x ... x C_oL combinations of sub-copies are spread over the slots by systematic sampling: when C <= copies,
slot k takes combination k mod C and the slots of a combination share its weight 1/C (every combination, equally
weighted, as the authors' mean); otherwise slot k takes combination floor((k + u) C / copies), u ~ U[0, 1) per
trajectory, weight 1/copies (each combination with probability copies/C: an unbiased estimate of the mean).
The S x copies slots of the batch are one stack [S*copies, batch, H, W, C]; at each of the L stages the copies
slots of a trajectory (one block of tf.split) run its op's family alone: a tf.switch_case over the families in the
pool, in a static loop over the S trajectories (none over copies), each family vectorised over the slots and the
batch and traced once as a tf.function (not under XLA). rotate and affine are one gather with per-slot static index
maps (`transforms.ops.rotation_source`), blockshuffle a gather with index maps built from its draws
(`transforms.bsr`'s strip layout), dim and crop bilinear taps along each axis (dim's from
`transforms.ops.dim_taps`), ssm the orthonormal DCT matrices of `transforms.ssa`, the rest elementwise. A family
draws its random numbers inside its branch (only the ops that run draw), per slot and shared by the batch (ide's
and ssm's per element). All copies then go through the objective in one pass (or `copies_per_pass` copies at a
time), giving both the per-trajectory losses the update needs and, by the chain rule through the ops, the gradient.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
from typing import Dict, Tuple

import numpy as np
import tensorflow as tf

from tfattack.attacks.components import Estimator, param, register
from tfattack.attacks.transforms.bsr import band_layout, split_lengths
from tfattack.attacks.transforms.ops import dim_canvas, dim_taps, rotation_source
from tfattack.attacks.transforms.ssa import dct_2d

FAMILIES = ("identity", "rotate", "sim", "dim", "blockshuffle", "admix", "ide", "masked", "ssm", "crop", "affine")
# Copies per op application in the authors' code (their classes' num_scale / num_spectrum defaults).
ROTATE_COPIES = 5
BLOCKSHUFFLE_COPIES = 10
ADMIX_SCALES = 3
MASKED_COPIES = 5
SSM_COPIES = 5          # the authors' repository; TransferAttack's copy uses 10
CROP_COPIES = 5
AFFINE_COPIES = 5

AUTHORS_OPS = (
    ("identity",)
    + tuple(f"rotate{a}" for a in range(30, 301, 30))
    + tuple(f"sim{k}" for k in range(1, 11))
    + tuple(f"dim{r}" for r in ("1.1", "1.15", "1.2", "1.25", "1.3", "1.35", "1.4", "1.45", "1.5", "1.55"))
    + tuple(f"blockshuffle{n}" for n in range(3, 13))
    + tuple(f"admix{m}_{eta}" for eta in ("0.2", "0.4") for m in range(1, 6))
    + ("ide0.1", "ide0.1_0.2", "ide0.1_0.2_0.3", "ide0.1_0.2_0.3_0.4", "ide0.1_0.2_0.3_0.4_0.5", "ide0.2_0.3_0.4_0.5",
       "ide0.1_0.3_0.4_0.5", "ide0.1_0.2_0.4_0.5", "ide0.1_0.2_0.3_0.5", "ide0.1_0.2_0.3_0.4")
    + tuple(f"masked{n}" for n in (2, 4, 6, 8, 10, 3, 5, 7, 9, 11))
    + tuple(f"ssm{rho}" for rho in ("0.2", "0.4", "0.5", "0.6", "0.8", "0.1", "0.3", "0.7", "0.9"))
    + tuple(f"crop0.{i}" for i in range(1, 10))
    + tuple(f"affine{o}" for o in ("0.5", "0.55", "0.6", "0.65", "0.7", "0.75", "0.8", "0.85", "0.9"))
)

_NUMBER = r"\d+(?:\.\d*)?"
_PATTERNS = {
    "identity": "", "rotate": f"(-?{_NUMBER})", "sim": r"(\d+)", "dim": f"({_NUMBER})", "blockshuffle": r"(\d+)",
    "admix": rf"(\d+)_({_NUMBER})", "ide": f"({_NUMBER}(?:_{_NUMBER})*)", "masked": r"(\d+)", "ssm": f"({_NUMBER})",
    "crop": f"({_NUMBER})", "affine": f"({_NUMBER})",
}
OP_SYNTAX = ("identity, rotate<degrees>, sim<k>, dim<rate>, blockshuffle<n>, admix<m>_<eta>, ide<q>[_<q>...], "
             "masked<n>, ssm<rho>, crop<ratio>, affine<offset>")


def parse_op(name: str) -> Tuple[str, tuple]:
    """'rotate30' -> ('rotate', (30.0,)); ValueError naming the syntax for anything else."""
    for family in sorted(_PATTERNS, key=len, reverse=True):
        match = re.fullmatch(family + _PATTERNS[family], name)
        if match is None:
            continue
        text = match.groups()
        if family in ("sim", "blockshuffle", "masked"):
            args = (int(text[0]),)
            if args[0] < 1:
                raise ValueError(f"op {name!r}: the count must be >= 1")
        elif family == "admix":
            args = (int(text[0]), float(text[1]))
            if args[0] < 1:
                raise ValueError(f"op {name!r}: the number of mixes must be >= 1")
        elif family == "ide":
            args = (tuple(float(q) for q in text[0].split("_")),)
            if not all(0.0 <= q < 1.0 for q in args[0]):
                raise ValueError(f"op {name!r}: dropout probabilities must lie in [0, 1)")
        else:
            args = tuple(float(t) for t in text)
        if family == "dim" and not args[0] > 1.0:
            raise ValueError(f"op {name!r}: the resize rate must be > 1")
        if family == "crop" and not 0.0 < args[0] <= 1.0:
            raise ValueError(f"op {name!r}: the crop ratio must lie in (0, 1]")
        return family, args
    raise ValueError(f"unknown op {name!r}; ops are {OP_SYNTAX}")


def op_copies(family: str, args: tuple) -> int:
    """Copies one application of the op makes of each input (the authors' classes)."""
    if family == "sim":
        return args[0]
    if family == "admix":
        return ADMIX_SCALES * args[0]
    if family == "ide":
        return len(args[0])
    return {"identity": 1, "rotate": ROTATE_COPIES, "dim": 1, "blockshuffle": BLOCKSHUFFLE_COPIES,
            "masked": MASKED_COPIES, "ssm": SSM_COPIES, "crop": CROP_COPIES, "affine": AFFINE_COPIES}[family]


def crop_ratio(ratio: float, copy: int) -> float:
    """Sub-copy i of crop(ratio): ratio + (1 - ratio) * (i + 1) / 5, in the authors' order of operations."""
    return ratio + (1 - ratio) * (copy + 1) / CROP_COPIES


def affine_shift(offset: float, copy: int) -> int:
    """Sub-copy i of affine(offset): the translation o (i + 1) / 5 pixels as an integer shift, rounded half up
    (torch's nearest grid sample reads pixel round(j - t), so only t matters up to rounding)."""
    return int(math.floor(offset * (copy + 1) / AFFINE_COPIES + 0.5))


def block_edges(size: int, blocks: int) -> list:
    """masked's grid: round(step * i) with step = size / n (Python's round, halves to even), as the authors."""
    step = size / blocks
    return [round(step * i) for i in range(blocks + 1)]


class OpTable:
    """Static per-op tables of a pool for one image size (NumPy; indexed [op] or [op, sub-copy])."""

    def __init__(self, ops: Tuple[str, ...], height: int, width: int):
        parsed = [parse_op(name) for name in ops]
        self.present = {family for family, _ in parsed}
        count = [op_copies(*p) for p in parsed]
        most = max(count)
        size = (len(ops), most)
        self.family = np.array([FAMILIES.index(f) for f, _ in parsed], np.int32)
        self.count = np.array(count, np.int32)
        self.factor = np.ones(size, np.float32)          # sim, admix: 1 / 2^i
        self.strength = np.zeros(len(ops), np.float32)   # admix eta
        self.drop = np.zeros(size, np.float32)           # ide
        self.rho = np.zeros(len(ops), np.float32)        # ssm
        self.blocks = np.ones(len(ops), np.int32)        # blockshuffle
        self.grid = np.ones(len(ops), np.int32)          # masked
        self.remap = np.zeros(size, np.int32)            # rotate, affine: index into self.maps (0: identity)
        self.crop = np.zeros(size + (4,), np.int32)      # crop: row start, rows, column start, columns
        self.crop[..., 1], self.crop[..., 3] = height, width
        self.canvas = np.array([[dim_canvas(height, 1.0), dim_canvas(width, 1.0)]] * len(ops), np.int32)
        masked = [args[0] for family, args in parsed if family == "masked"] or [1]
        self.edges = np.zeros((len(ops), 2, max(masked) + 1), np.int32)
        self.shuffle_blocks = max([args[0] for family, args in parsed if family == "blockshuffle"] or [1])
        maps, where = [np.arange(height * width, dtype=np.int32)], {}

        def map_id(key, build):
            if key not in where:
                where[key] = len(maps)
                maps.append(build())
            return where[key]

        for op, (family, args) in enumerate(parsed):
            for i in range(count[op]):
                if family == "rotate":
                    angle = args[0] / (2 ** i)
                    self.remap[op, i] = map_id(("rotate", angle), lambda: rotation_source(height, width, angle))
                elif family == "affine":
                    shift = affine_shift(args[0], i)
                    if shift:
                        self.remap[op, i] = map_id(("shift", shift), lambda: shift_source(height, width, shift))
                elif family == "sim":
                    self.factor[op, i] = 1.0 / 2 ** i
                elif family == "admix":
                    self.factor[op, i] = 1.0 / 2 ** (i // args[0])
                elif family == "ide":
                    self.drop[op, i] = args[0][i]
                elif family == "crop":
                    r = crop_ratio(args[0], i)
                    rows, cols = max(int(height * r), 1), max(int(width * r), 1)
                    self.crop[op, i] = ((height - rows) // 2, rows, (width - cols) // 2, cols)
            if family == "admix":
                self.strength[op] = args[1]
            elif family == "ssm":
                self.rho[op] = args[0]
            elif family == "blockshuffle":
                self.blocks[op] = args[0]
            elif family == "masked":
                self.grid[op] = args[0]
            elif family == "dim":
                self.canvas[op] = (dim_canvas(height, args[0]), dim_canvas(width, args[0]))
            if family == "masked":
                for axis, extent in enumerate((height, width)):
                    edges = block_edges(extent, args[0])
                    self.edges[op, axis] = edges + [extent] * (self.edges.shape[2] - len(edges))
        self.maps = np.stack(maps)


@functools.lru_cache(maxsize=None)
def op_table(ops: Tuple[str, ...], height: int, width: int) -> OpTable:
    return OpTable(ops, height, width)


def shift_source(height: int, width: int, shift: int) -> np.ndarray:
    """Flat source pixel (or -1) of a translation by `shift` pixels right and down, zero fill."""
    rows, cols = np.meshgrid(np.arange(height) - shift, np.arange(width) - shift, indexing="ij")
    inside = (rows >= 0) & (rows < height) & (cols >= 0) & (cols < width)
    return np.where(inside, rows * width + cols, -1).reshape(-1).astype(np.int32)


# ----------------------------------------------------------------- the ops on a stack [slots, batch, H, W, C]

def _per_slot(values, rank: int = 5):
    return tf.reshape(values, [-1] + [1] * (rank - 1))


def _floor_index(uniform, count):
    """floor(u * count) for u in [0, 1), kept below `count`; `count` int32 (>= 1)."""
    return tf.minimum(tf.cast(tf.floor(uniform * tf.cast(count, uniform.dtype)), tf.int32), count - 1)


def remap(images, source):
    """out[n, b, p] = images[n, b, source[n, p]] (0 where source < 0): `source` int32 [slots, H*W]."""
    slots, batch, height, width, channels = images.shape
    flat = tf.reshape(images, [slots, batch, height * width, channels])
    out = tf.gather(flat, tf.maximum(source, 0), axis=2, batch_dims=1)
    out *= tf.cast(source >= 0, images.dtype)[:, None, :, None]
    return tf.reshape(out, tf.shape(images))


def admix(images, strength, factor, shift):
    """(x + eta x') * factor, x' = the (detached) image `shift` places on in the batch, per slot."""
    batch = images.shape[1]
    partner = tf.math.floormod(tf.range(batch)[None, :] + shift[:, None], batch)
    others = tf.gather(tf.stop_gradient(images), partner, axis=1, batch_dims=1)
    return (images + _per_slot(strength) * others) * _per_slot(factor)


def spectrum(images, rho, noise, uniforms, sigma: float):
    """ssm: IDCT(DCT(x + sigma * noise) * mask), mask = u * 2 rho + 1 - rho (noise ~ N(0, 1), u ~ U[0, 1))."""
    rho = _per_slot(rho)
    mask = uniforms * 2.0 * rho + 1.0 - rho
    return dct_2d(dct_2d(images + sigma * noise) * mask, inverse=True)


def block_mask(images, rows, cols):
    """Zero the block rows [rows[:, 0], rows[:, 1]) x cols [cols[:, 0], cols[:, 1]) of every slot."""
    height, width = images.shape[2], images.shape[3]

    def inside(span, size):
        position = tf.range(size)[None, :]
        return (position >= span[:, :1]) & (position < span[:, 1:])

    block = inside(rows, height)[:, :, None] & inside(cols, width)[:, None, :]
    return images * tf.cast(~block, images.dtype)[:, None, :, :, None]


def resample(images, indices, weights, axis: int):
    """Weighted taps along rows (axis 2) or columns (axis 3) of [slots, batch, H, W, C], per slot: out[..., i, ...]
    = sum_t weights[n, i, t] * images[n, ..., indices[n, i, t], ...]; indices/weights [slots, size, T]."""
    slots, size, taps = indices.shape
    gathered = tf.gather(images, tf.reshape(indices, [slots, size * taps]), axis=axis, batch_dims=1)
    shape = images.shape.as_list()
    shape[axis:axis + 1] = [size, taps]
    weights = tf.reshape(weights, [slots, 1] + ([size, taps, 1, 1] if axis == 2 else [1, size, taps, 1]))
    return tf.reduce_sum(tf.reshape(gathered, shape) * tf.cast(weights, images.dtype), axis=axis + 1)


def dim_resample(images, canvas, uniforms):
    """dim per slot: canvas int32 [slots, 2] (rows, columns), uniforms [slots, 3] (size, top, left): resized =
    size + floor(u0 (canvas - size)) (one u for both sides: square images get square resizes, as the authors'),
    offset = floor(u (canvas - resized)); the two bilinear resizes and the pad as four taps per axis."""
    for axis, size, offset_uniform in ((2, images.shape[2], uniforms[:, 1]), (3, images.shape[3], uniforms[:, 2])):
        room = canvas[:, axis - 2]
        resized = size + _floor_index(uniforms[:, 0], room - size)
        images = resample(images, *dim_taps(size, room, resized, _floor_index(offset_uniform, room - resized)), axis)
    return images


def crop_taps(size: int, start, length):
    """One axis of crop per slot: the window [start, start + length) resized to `size` (torch bilinear,
    align_corners=False: source max((i + 0.5) length / size - 0.5, 0), upper tap clamped): [slots, size, 2]."""
    position = tf.range(size, dtype=tf.float32)[None, :]
    source = tf.maximum((position + 0.5) * (tf.cast(length, tf.float32)[:, None] / size) - 0.5, 0.0)
    low = tf.floor(source)
    fraction = source - low
    low = tf.cast(low, tf.int32)
    high = tf.minimum(low + 1, length[:, None] - 1)
    return tf.stack([low, high], -1) + start[:, None, None], tf.stack([1.0 - fraction, fraction], -1)


def _strip_lengths(weights, active, size: int):
    """blockshuffle's strip lengths (the authors' get_length, `split_lengths`) over the active strips; where the
    authors' rounding fix would make a strip negative (only images smaller than about 2n pixels), the rounded
    cumulative shares instead."""
    weights = tf.where(active, weights, tf.zeros_like(weights))
    lengths = split_lengths(weights, size)
    total = tf.maximum(tf.reduce_sum(weights, -1, keepdims=True), 1e-12)
    ends = tf.cast(tf.round(tf.cumsum(weights, -1) / total * size), tf.int32)
    cumulative = ends - tf.concat([tf.zeros_like(ends[..., :1]), ends[..., :-1]], -1)
    return tf.where(tf.reduce_any(lengths < 0, -1, keepdims=True), cumulative, lengths)


def _strip_order(keys, active):
    """A uniform random order of the active strips (argsort of uniform keys), the inactive ones last."""
    return tf.argsort(tf.where(active, keys, 2.0 + tf.zeros_like(keys)), axis=-1, stable=True)


def shuffle_source(blocks, first, lengths, order, sub_lengths, sub_order, height: int, width: int):
    """blockshuffle's source map [slots, H*W]. Per slot: `blocks` strips; first < 0.5: rows first (the authors'
    dims [2, 3]), else columns first; lengths/order [slots, n_max] uniforms for the first axis, sub_lengths /
    sub_order [slots, n_max, n_max] for the second axis of each output strip."""
    n_max = lengths.shape[-1]
    active = tf.range(n_max)[None, :] < blocks[:, None]
    sub_active = tf.broadcast_to(active[:, None, :], tf.shape(sub_lengths))

    def layout(size_a: int, size_b: int):
        band, offset, start, _ = band_layout(_strip_lengths(lengths, active, size_a), _strip_order(order, active),
                                             size_a)
        sub_band, sub_offset, sub_start, _ = band_layout(_strip_lengths(sub_lengths, sub_active, size_b),
                                                         _strip_order(sub_order, sub_active), size_b)
        return start + offset, tf.gather(sub_start + sub_offset, band, batch_dims=1)   # [k, a], [k, a, b]

    rows_a, cols_b = layout(height, width)
    cols_a, rows_b = layout(width, height)
    rows_first = (first < 0.5)[:, None, None]
    rows = tf.where(rows_first, tf.broadcast_to(rows_a[:, :, None], tf.shape(cols_b)), tf.transpose(rows_b, [0, 2, 1]))
    cols = tf.where(rows_first, cols_b, tf.broadcast_to(cols_a[:, None, :], tf.shape(cols_b)))
    return tf.reshape(rows * width + cols, [-1, height * width])


def family_draws(name: str, generator, table: OpTable, slots: int, batch: int, shape):
    """The random numbers of the family `name` for `slots` slots of `batch` images of `shape` (H, W, C), None for the
    deterministic families. Drawn inside the family's branch, so only for the ops that run."""
    height, width, channels = shape
    full = [slots, batch, height, width, channels]
    if name == "dim":
        return generator.uniform([slots, 3])                      # size, top, left
    if name == "blockshuffle":
        n = table.shuffle_blocks
        return dict(first=generator.uniform([slots]), lengths=generator.uniform([slots, n]),
                    order=generator.uniform([slots, n]), sub_lengths=generator.uniform([slots, n, n]),
                    sub_order=generator.uniform([slots, n, n]))
    if name == "admix":
        return generator.uniform([slots], 1, max(batch, 2), dtype=tf.int32) % batch
    if name == "ide":
        return generator.uniform(full)
    if name == "masked":
        return generator.uniform([slots, 2])
    if name == "ssm":
        return dict(noise=generator.normal(full), uniforms=generator.uniform(full))
    return None


TABLES = ("family", "count", "factor", "strength", "drop", "rho", "blocks", "grid", "remap", "crop", "canvas",
          "edges", "maps")


def table_constants(table: OpTable) -> Dict[str, tf.Tensor]:
    """The tables as constants of the graph being built (once per estimate: the maps are H*W per angle)."""
    return {name: tf.constant(getattr(table, name)) for name in TABLES}


def _family(name: str, x, tables, op, sub, draws, *, sigma: float):
    """The op family `name` on slots `x` [K, batch, H, W, C] with pool indices `op` and sub-copies `sub` [K], its
    random numbers `draws` (`family_draws`); `tables` from `table_constants`."""
    height, width = x.shape[2], x.shape[3]
    pair = tf.stack([op, sub], -1)

    def by_copy(key):
        return tf.gather_nd(tables[key], pair)

    def by_op(key):
        return tf.gather(tables[key], op)

    if name == "identity":
        return x
    if name in ("rotate", "affine"):
        return remap(x, tf.gather(tables["maps"], by_copy("remap")))
    if name == "sim":
        return x * _per_slot(by_copy("factor"))
    if name == "dim":
        return dim_resample(x, by_op("canvas"), draws)
    if name == "blockshuffle":
        return remap(x, shuffle_source(by_op("blocks"), height=height, width=width, **draws))
    if name == "admix":
        return admix(x, by_op("strength"), by_copy("factor"), draws)
    if name == "ide":
        return x * tf.cast(draws >= _per_slot(by_copy("drop")), x.dtype)
    if name == "masked":
        block = _floor_index(draws, by_op("grid")[:, None])      # [K, 2]: row, column
        edges = by_op("edges")                                             # [K, 2, n_max + 1]
        spans = tf.stack([tf.gather(edges, block, batch_dims=2), tf.gather(edges, block + 1, batch_dims=2)], -1)
        return block_mask(x, spans[:, 0], spans[:, 1])
    if name == "ssm":
        return spectrum(x, by_op("rho"), sigma=sigma, **draws)
    if name == "crop":
        box = by_copy("crop")
        x = resample(x, *crop_taps(height, box[:, 0], box[:, 1]), axis=2)
        return resample(x, *crop_taps(width, box[:, 2], box[:, 3]), axis=3)
    raise ValueError(name)


def family_functions(table: OpTable, sigma: float, traced: bool):
    """name -> f(x, tables, op, sub, generator): the family's draws and transformation, for the families of the
    pool; `traced`: each a tf.function (without autograph), so that inside a traced attack it is built and
    differentiated once for all the groups and stages that call it."""
    wrap = functools.partial(tf.function, autograph=False) if traced else (lambda f: f)

    def make(name):
        def run(x, tables, op, sub, generator):
            draws = family_draws(name, generator, table, x.shape[0], x.shape[1], x.shape[2:])
            return _family(name, x, tables, op, sub, draws, sigma=sigma)
        return wrap(run)

    return {name: make(name) for name in FAMILIES if name == "identity" or name in table.present}


@tf.autograph.experimental.do_not_convert  # static Python control flow only
def apply_stage(images, table: OpTable, op, sub, generator, sigma: float, tables=None, functions=None):
    """One op per group of slots: `images` [G*K, batch, H, W, C] (G groups of K consecutive slots, a trajectory's),
    `op` int32 [G] (the group's pool index), `sub` int32 [G*K] (each slot's sub-copy). `tables` =
    table_constants(table) and `functions` = family_functions(...) are made here if not given. Each group runs only
    its op's family (tf.switch_case over the families present in the pool), which draws its random numbers from
    `generator` (groups in order)."""
    tables = table_constants(table) if tables is None else tables
    functions = family_functions(table, sigma, traced=False) if functions is None else functions
    groups = op.shape[0]
    size = images.shape[0] // groups
    present = list(functions)
    branch = tf.constant([present.index(f) if f in present else 0 for f in FAMILIES], tf.int32)
    out = []
    # tf.split: its gradient is one concat (slicing each block would back-propagate a whole-stack tensor per block).
    for group, (block, block_sub) in enumerate(zip(tf.split(images, groups), tf.split(sub, groups))):
        block_op = tf.fill([size], op[group])   # the trajectories (S of them), not the copies
        branches = [functools.partial(functions[name], block, tables, block_op, block_sub, generator)
                    for name in present]
        index = tf.gather(branch, tf.gather(tables["family"], op[group]))
        out.append(tf.switch_case(index, branches) if len(branches) > 1 else branches[0]())
    return tf.concat(out, 0)


# ----------------------------------------------------------------- the distribution

def sample_ops(logits, uniforms):
    """i.i.d. draws from softmax(logits) by the inverse CDF: `uniforms` [S, L] in [0, 1) -> int32 [S, L]."""
    cdf = tf.cumsum(tf.nn.softmax(logits))
    index = tf.searchsorted(cdf[None, :], tf.reshape(uniforms, [1, -1]), side="right", out_type=tf.int32)
    return tf.reshape(tf.minimum(index, logits.shape[0] - 1), tf.shape(uniforms))


def copy_plan(counts, copies: int, uniforms):
    """Which combination of sub-copies each of a trajectory's `copies` slots takes, and its weight.

    counts int32 [S, L] (copies of each op of each trajectory), uniforms float64 [S] -> sub int32 [S, copies, L]
    (sub-copy index of each op; op 0 is the least significant digit of the combination) and weights float32
    [S, copies] summing to 1 per trajectory. C = prod counts: if C <= copies, slot k takes k mod C with weight
    1 / (C * its repeats); else floor((k + u) * C / copies) (systematic sampling) with weight 1 / copies."""
    total = tf.reduce_prod(counts, -1)[:, None]                                      # [S, 1]
    slot = tf.range(copies)[None, :]
    small_index = slot % total
    repeats = copies // total + tf.cast(small_index < copies % total, tf.int32)
    small_weight = 1.0 / tf.cast(total * repeats, tf.float32)
    position = (tf.cast(slot, tf.float64) + uniforms[:, None]) * tf.cast(total, tf.float64) / copies
    large_index = tf.minimum(tf.cast(tf.floor(position), tf.int32), total - 1)
    small = total <= copies
    index = tf.where(small, small_index, large_index)
    weights = tf.where(small, small_weight, tf.fill(tf.shape(small_weight), 1.0 / copies))
    digits = []
    for stage in range(counts.shape[1]):
        digits.append(index % counts[:, stage:stage + 1])
        index //= counts[:, stage:stage + 1]
    return tf.stack(digits, -1), weights


def update_logits(logits, ops, losses, rate: float):
    """theta + rate * d/dtheta mean_i (prod_l softmax(theta)[ops[i, l]]) * losses[i] (losses held constant)."""
    probs = tf.nn.softmax(logits)
    product = tf.reduce_prod(tf.gather(probs, ops), -1)                              # [S]
    hits = tf.reduce_sum(tf.one_hot(ops, logits.shape[0]), 1)                        # [S, P]
    direction = hits - float(ops.shape[1]) * probs[None, :]
    return logits + rate * tf.reduce_mean((losses * product)[:, None] * direction, 0)


# ----------------------------------------------------------------- the estimator

@register
@dataclasses.dataclass(frozen=True)
class L2T(Estimator):
    """Learning to transform: each iteration draws `samples` trajectories of `length` ops from a learned
    distribution over the authors' pool of 98 transformation ops (rotations, scalings, resize-and-pad, block
    shuffles, admix, dropout, block masks, spectrum transforms, crops, translations), averages the gradient of
    their copies (chain rule through the ops) and moves the distribution's logits by gradient ascent on
    sum_i (prob of trajectory i) * (its mean loss over the batch), one distribution per batch as in the authors'
    code. Keeps the logits across steps: must be the outermost and only estimator; the config's transforms apply to
    L2T's copies, its filters to the result. Deviations from the authors' code: a fixed number of copies per
    trajectory (`copies`; the authors use all C_1*C_2 combinations of the ops' copies, 1 to 225), spread over the
    combinations by systematic sampling with weights (every combination, equally weighted, when they fit, otherwise
    an unbiased sample); random parameters drawn per copy and shared by the batch (the authors draw once per op call
    for the whole stack: e.g. one dim size for all of an op's copies); ide multiplies by its keep mask (the authors'
    dropout, then times 1 - q: equal up to rounding);
    admix mixes each image with another image of the batch (a random cyclic shift) rather than a random permutation
    of the whole transformed stack; affine's one exact half-pixel translation (affine0.5, last copy) shifts by one
    pixel, where torch's nearest sampling depends on float rounding; images need not be 224 x 224 or square (the
    authors hard-code 224 in ssm and crop and assume squares: sizes are taken per axis, dim's canvas is at least
    size + 1, blockshuffle falls back to cumulative rounding where its strips would get negative lengths)."""

    name = "l2t"
    budget_param = "samples"
    positional = "samples"
    paper = "Zhu et al., Learning to transform dynamically for better adversarial transferability, CVPR 2024"
    stateful = True
    samples: int = param(3, "Trajectories S drawn per iteration (authors' code: num_scale = 3).", low=1)
    length: int = param(2, "Ops L composed per trajectory, drawn i.i.d. with replacement (authors' code: "
                           "ops_num = 2).", low=1)
    copies: int = param(29, "Model inputs per trajectory and image (authors' code: all combinations of the ops' "
                            "copies, 1 to 225, 28.8 on average under the initial uniform distribution).", low=1)
    lr: float = param(0.01, "Learning rate of the distribution's logits (authors' code: learning_rate = 0.01).",
                      low=0.0)
    ops: Tuple[str, ...] = param(AUTHORS_OPS, "The op pool, joined by '+', any of " + OP_SYNTAX + " (authors' "
                                 "code: the 98 ops of their op_list, in order).")
    ssm_sigma: float = param(16 / 255, "ssm: standard deviation of its Gaussian noise (authors' code: 16/255).",
                             low=0.0)

    def validate(self):
        if not self.ops:
            raise self.error("ops must list at least one op")
        for name in self.ops:
            try:
                parse_op(name)
            except ValueError as error:
                raise self.error(str(error)) from None

    def evaluations(self) -> int:
        return self.samples * self.copies

    def stacked_points(self) -> int:
        return self.samples * self.copies

    def init(self, ctx):
        return {"logits": tf.zeros([len(self.ops)])}

    @tf.autograph.experimental.do_not_convert  # static Python control flow only
    def estimate(self, ctx, inner, point, x, state):
        from tfattack.attacks.loop import expand_copies  # the loop imports the estimators' registry

        if len(ctx.config.estimators) > 1 or ctx.groups(point) != 1:
            raise self.error("it computes its copies' objective itself: use it as the only estimator")
        batch, shape = ctx.batch, point.shape[1:]
        table = op_table(self.ops, shape[0], shape[1])
        samples, slots = self.samples, self.samples * self.copies
        ops = sample_ops(state["logits"], ctx.generator.uniform([samples, self.length]))
        # One traced function per family (faster tracing), except under XLA, which cannot compile the gradients of
        # batched gathers inside such nested functions.
        functions = family_functions(table, self.ssm_sigma, traced=not ctx.config.execution.jit_compile)
        tables = table_constants(table)
        sub, weights = copy_plan(tf.gather(tables["count"], ops), self.copies,
                                 ctx.generator.uniform([samples], dtype=tf.float64))
        slot_sub = tf.reshape(sub, [slots, self.length])
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(point)
            images = tf.tile(point[None], [slots, 1, 1, 1, 1])
            for stage in range(self.length):
                images = apply_stage(images, table, ops[:, stage], slot_sub[:, stage], ctx.generator, self.ssm_sigma,
                                     tables, functions)
            copies, count = expand_copies(tf.reshape(images, [slots * batch] + shape.as_list()), ctx.generator,
                                          ctx.config, batch, ctx.objective, ctx.clean)
            # d/dx of 1/S sum_i sum_k w_ik mean_c J(copy c of slot ik): each model input's weight.
            image_weights = tf.tile(tf.repeat(tf.reshape(weights, [-1]), batch), [count]) / float(count * samples)
            one_pass = not ctx.copies_per_pass or ctx.copies_per_pass >= count * slots
            if one_pass:
                values = ctx.objective(copies)
                total = tf.reduce_sum(values * image_weights)
        if one_pass:
            gradient = tape.gradient(total, point)
        else:
            values, copy_gradient = _chunked(ctx, copies, image_weights)
            gradient = tape.gradient(copies, point, output_gradients=copy_gradient)
        for op in ctx.config.filters:
            if not op.is_identity:
                gradient = op.apply(gradient)
        per_slot = tf.reduce_mean(tf.reshape(values, [count, samples, self.copies, batch]), axis=[0, 3])
        losses = tf.stop_gradient(tf.reduce_sum(per_slot * weights, -1))                # J_i, [S]
        return gradient, {"logits": update_logits(state["logits"], ops, losses, self.lr)}


def _chunked(ctx, copies, weights):
    """Objective values [n] and d sum(weights * values) / d copies, `ctx.copies_per_pass` copies of the batch per
    forward/backward pass, one pass after another (a sequential tf.while_loop; the last pass padded with
    zero-weight copies so that every pass has the same static shape)."""
    batch, per_pass = ctx.batch, ctx.copies_per_pass
    rows = copies.shape[0]
    passes = -(-rows // (per_pass * batch))
    pad = passes * per_pass * batch - rows
    padded = tf.concat([copies, copies[:pad]], 0)
    parts = tf.reshape(padded, [passes, per_pass * batch] + copies.shape[1:].as_list())
    part_weights = tf.reshape(tf.concat([weights, tf.zeros([pad])], 0), [passes, per_pass * batch])

    def one_pass(index, values, gradients):
        part = parts[index]
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(part)
            value = ctx.objective(part)
            total = tf.reduce_sum(value * part_weights[index])
        return index + 1, values.write(index, value), gradients.write(index, tape.gradient(total, part))

    values = tf.TensorArray(tf.float32, size=passes, element_shape=[per_pass * batch])
    gradients = tf.TensorArray(copies.dtype, size=passes, element_shape=parts.shape[1:])
    _, values, gradients = tf.while_loop(lambda index, *_: index < passes, one_pass,
                                         (tf.constant(0), values, gradients), parallel_iterations=1)
    flat = tf.reshape(gradients.stack(), padded.shape)
    return tf.reshape(values.stack(), [-1])[:rows], flat[:rows]
