"""Gradient relevance (GRA), the gradient half: the current gradient blended with its neighbourhood average by
their cosine similarity.

    g     = grad(p)
    g_bar = 1/N sum_i grad(p + r_i),      r_i ~ U[-beta*eps, beta*eps]^d
    s     = cos(g, g_bar)                 (per image)
    grad  = s * g + (1 - s) * g_bar

The step half (the decay indicator) is the update `gra` (tfattack.attacks.updates.gra); the GRA attack is both.
"""

from __future__ import annotations

import dataclasses

import tensorflow as tf

from tfattack.attacks.components import Estimator, param, register
from tfattack.attacks.estimators import sampling


def cosine_similarity(a, b):
    """Per-image cosine similarity `[N, 1, 1, 1]` of two `[N, H, W, C]` tensors (0 where either is zero)."""
    dot = tf.reduce_sum(a * b, axis=[1, 2, 3], keepdims=True)
    norms = tf.sqrt(tf.reduce_sum(tf.square(a), axis=[1, 2, 3], keepdims=True) *
                    tf.reduce_sum(tf.square(b), axis=[1, 2, 3], keepdims=True))
    return tf.math.divide_no_nan(dot, norms)


@register
@dataclasses.dataclass(frozen=True)
class GRA(Estimator):
    """Gradient relevance: s * g + (1 - s) * g_bar with s the cosine similarity of the gradient and the average
    gradient of N uniform neighbours. The point and its N neighbours go through `inner` as one stack (1 + N
    gradient evaluations). Neighbours are not clipped to [0, 1] (authors' code). Use with the update `gra` (the
    decay indicator) for the paper's attack; with `mi` it is GRA without the decay indicator."""

    name = "gra"
    budget_param = "samples"
    positional = "samples"
    paper = "Zhu et al., Boosting adversarial transferability via gradient relevance attack, ICCV 2023"
    samples: int = param(20, "Neighbours N (paper and code: 20).", low=1)
    beta: float = param(3.5, "Neighbourhood half-width as a multiple of eps (paper and code: 3.5).", low=0.0)

    def evaluations(self) -> int:
        return 1 + self.samples

    def stacked_points(self) -> int:
        return 1 + self.samples

    def estimate(self, ctx, inner, point, x, state):
        n = self.samples
        neighbours = sampling.tile(point, n)
        if self.beta > 0:
            neighbours = neighbours + sampling.uniform_offsets(ctx.generator, neighbours, self.beta * ctx.eps)
        both = sampling.groups(inner(tf.concat([point, neighbours], 0)), 1 + n)
        current, average = both[0], tf.reduce_mean(both[1:], axis=0)
        relevance = cosine_similarity(current, average)
        return relevance * current + (1.0 - relevance) * average, state
