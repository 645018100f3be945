"""Stacks of neighbours for the sampling estimators (PGN, GRA, EMI, MEF, MIG, RAP).

A stack holds `n` groups of the same `[M, H, W, C]` points, group major (`stack[k*M:(k+1)*M]` is group k), which is
the layout `inner` / `ctx.gradient` take: the neighbours of one estimate go through the model in one call.
"""

from __future__ import annotations

import tensorflow as tf

from tfattack.attacks.gradient_ops import normalize_l1


def tile(points, n: int):
    """`n` copies of `points`, group major: `[n*M, ...]`."""
    return tf.tile(points, [n] + [1] * (len(points.shape) - 1))


def groups(stack, n: int):
    """`[n*M, ...]` -> `[n, M, ...]`."""
    tail = stack.shape[1:]
    if tail.is_fully_defined():
        return tf.reshape(stack, [n, -1] + tail.as_list())
    return tf.reshape(stack, tf.concat([[n, -1], tf.shape(stack)[1:]], 0))


def group_mean(stack, n: int):
    """The mean over the `n` groups of a stack: `[n*M, ...]` -> `[M, ...]`."""
    return tf.reduce_mean(groups(stack, n), axis=0)


def uniform_offsets(generator, like, radius: float):
    """One draw of U[-radius, radius] of the shape of `like` (one tensor for the whole stack)."""
    return generator.uniform(tf.shape(like), -radius, radius, dtype=like.dtype)


def unit(gradient, norm: str):
    """The norm's unit direction per image: g / mean|g| under L-inf (the MI-FGSM normalisation the authors'
    codes use for their look-ahead and sampling points), g / ||g||_2 under L2."""
    if norm == "linf":
        return normalize_l1(gradient)
    length = tf.sqrt(tf.reduce_sum(tf.square(gradient), axis=[1, 2, 3], keepdims=True))
    return tf.math.divide_no_nan(gradient, length)


def objective_gradient(ctx, images):
    """d objective / d images of the model alone (no input transforms, no filters), per image of a stack."""
    with tf.GradientTape(watch_accessed_variables=False) as tape:
        tape.watch(images)
        total = tf.reduce_sum(ctx.objective(images))
    return tape.gradient(total, images)
