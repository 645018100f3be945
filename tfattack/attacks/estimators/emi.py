"""Enhanced momentum (EMI): the gradient averaged over points along the previous average gradient's direction.

    grad_t   = 1/N sum_i grad(p_t + c_i * alpha * g_bar_{t-1})
    g_bar_t  = grad_t / mean|grad_t|,            g_bar_{-1} = 0
    c_i      = linspace(-eta, eta, N)            (or N draws, uniform in [-eta, eta] / clipped Gaussian)

(Wang et al. BMVC 2021, the authors' code emi_fgsm.py: N = 11, eta = 7, linear sampling.) With MI on top this is
EMI-FGSM. With eta = 0 it is the plain gradient.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow as tf

from tfattack.attacks.components import Estimator, param, register
from tfattack.attacks.estimators.sampling import group_mean, tile, unit

SAMPLINGS = ("linear", "uniform", "gaussian")


@register
@dataclasses.dataclass(frozen=True)
class EMI(Estimator):
    """Enhanced momentum. The N sampled points go through `inner` as one stack (N gradient evaluations). The
    direction kept across steps is the previous estimate normalised (mean |.| under L-inf, as the authors' code;
    L2 length under L2); at the first step it is 0, so all N points are p_0. Sampled around the point the update
    asks for; not clipped (authors' code). Keeps state: must be the outermost estimator."""

    name = "emi"
    budget_param = "samples"
    positional = "samples"
    paper = "Wang et al., Boosting adversarial transferability through enhanced momentum, BMVC 2021"
    stateful = True
    samples: int = param(11, "Sampled points N (paper and code: 11).", low=1)
    radius: float = param(7.0, "Sampling interval eta: the points span [-eta, eta] steps of size alpha along the "
                               "previous direction (paper and code: 7).", low=0.0)
    sampling: str = param("linear", "Coefficients c_i: linear (evenly spaced, paper's default), uniform (U[-eta, "
                                    "eta]) or gaussian (clip(N(0,1)/3, -1, 1) * eta), the latter two drawn per step.",
                          choices=SAMPLINGS)

    def evaluations(self) -> int:
        return self.samples if self.radius > 0 else 1

    def stacked_points(self) -> int:
        return self.samples

    def init(self, ctx):
        return {"direction": tf.zeros_like(ctx.clean)}

    def coefficients(self, generator):
        """c_i, `[N]` float32 (the random ones drawn from `generator`)."""
        n, eta = self.samples, self.radius
        if self.sampling == "linear":
            return tf.constant(np.linspace(-eta, eta, n), tf.float32)
        if self.sampling == "uniform":
            return generator.uniform([n], -eta, eta)
        return tf.clip_by_value(generator.normal([n]) / 3.0, -1.0, 1.0) * eta

    def estimate(self, ctx, inner, point, x, state):
        n = self.samples
        if self.radius == 0:
            gradient = inner(point)
        else:
            steps = tf.repeat(self.coefficients(ctx.generator) * ctx.alpha, tf.shape(point)[0])
            points = tile(point, n) + steps[:, None, None, None] * tile(state["direction"], n)
            gradient = group_mean(inner(points), n)
        return gradient, {"direction": unit(gradient, ctx.norm)}
