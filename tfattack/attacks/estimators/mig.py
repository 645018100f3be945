"""Momentum integrated gradients (MIG): the integrated gradient of the label's softmax probability, then MI.

    x_k   = x' + k/S * (p - x'),  k = 1..S                 (x' = black baseline)
    grad  = (p - x') * 1/S * sum_k k/S * grad(x_k)

grad(x_k) is the objective's gradient at x_k; the factor k/S is the chain rule of d J(x' + k/S (p - x')) / d p,
which TransferAttack's gradient/mig.py (autograd through the scaled copies) includes; the paper's objective is the
softmax probability of the label (the objective `prob` below). TransferAttack: S = 20, 25 iterations of
eps/25, mu = 1 (Ma et al. ICCV 2023; no authors' code is public). torchattack's MIG (1.7.2) is no reference for
the untargeted attack: it negates the label's probability only when targeted, so its untargeted steps raise that
probability.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow as tf

from tfattack.attacks.components import Estimator, param, register
from tfattack.attacks.estimators import sampling


@register
@dataclasses.dataclass(frozen=True)
class MIG(Estimator):
    """Integrated gradients along the straight path from a constant baseline to the point, Riemann sum of S
    points (k/S, k = 1..S, as TransferAttack), pushed through `inner` as one stack (S gradient evaluations). Pair
    it with the objective `prob` for the paper's attack."""

    name = "mig"
    budget_param = "samples"
    positional = "samples"
    paper = ("Ma et al., Transferable adversarial attack for both vision transformers and convolutional networks "
             "via momentum integrated gradients, ICCV 2023")
    samples: int = param(20, "Integration points S (TransferAttack: 20).", low=1)
    baseline: float = param(0.0, "Constant baseline image x' in [0, 1] (TransferAttack: 0, a black image).",
                            low=0.0, high=1.0)

    def evaluations(self) -> int:
        return self.samples

    def stacked_points(self) -> int:
        return self.samples

    def estimate(self, ctx, inner, point, x, state):
        s = self.samples
        fractions = tf.constant(np.arange(1, s + 1, dtype=np.float32) / s)
        difference = point - self.baseline
        along = tf.repeat(fractions, tf.shape(point)[0])[:, None, None, None]
        gradients = inner(self.baseline + along * sampling.tile(difference, s))
        integral = tf.reduce_sum(fractions[:, None, None, None, None] * sampling.groups(gradients, s), axis=0)
        return difference * integral / float(s), state
