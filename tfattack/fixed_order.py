"""Sums of several tensors whose floating-point order does not depend on how TensorFlow schedules the graph.

TensorFlow's CPU `AddN` adds its inputs in list order unless it can reuse the buffer of a later input (one no
other op still holds), in which case that input is added first. Whether a buffer is free at that moment depends on
which ops the executor happened to run first, so an `AddN` of three or more float tensors can round differently
from one call to the next when ops run concurrently (more than one inter-op thread). `enable_op_determinism`
does not cover it. Two inputs are safe (`a + b == b + a` exactly). The places where this changes an attack:

- a tensor read by three or more members of an ensemble: backpropagation sums the members' gradients into it
  with one `AddN` (`fan_out` gives each member its own copy and sums their gradients with `ordered_sum`);
- the fused logits or losses of three or more members (`ordered_sum`).

`ordered_sum` stacks the tensors and reduces the stack: one reduction, which TensorFlow's graph optimizer does not
rewrite into an `AddN` (it does merge chains of binary additions into one).
"""

from __future__ import annotations

from typing import Sequence

import tensorflow as tf


def ordered_sum(tensors: Sequence):
    """The sum of `tensors` (same shape and dtype), rounded the same way at every call."""
    tensors = list(tensors)
    if not tensors:
        raise ValueError("ordered_sum needs at least one tensor")
    if len(tensors) == 1:
        return tensors[0]
    if len(tensors) == 2:
        return tensors[0] + tensors[1]
    return tf.reduce_sum(tf.stack(tensors), axis=0)


def fan_out(tensor, count: int) -> list:
    """`count` copies of `tensor` for `count` consumers; the gradient of `tensor` is the `ordered_sum` of the
    copies' gradients, in list order, instead of TensorFlow's `AddN`."""
    if count < 3:
        return [tensor] * count

    @tf.custom_gradient
    def copies(value):
        def gradient(*upstream):
            return ordered_sum([tf.zeros_like(value) if g is None else g for g in upstream])

        return [tf.identity(value) for _ in range(count)], gradient

    return copies(tensor)
