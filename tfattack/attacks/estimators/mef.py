"""Maximin expected flatness (MEF): neighbourhood-conditional sampling guided by each neighbour's previous gradients.

    x_i    = p_t + r_i + xi * eps * h_i,      r_i ~ U[-gamma*eps, gamma*eps]^d,  i = 1..N
    g_i    = grad(x_i)
    h_i   <- g_i / mean|g_i| - mu_in * h_i                  (previous gradient inversion approximation, h_i = 0 at t=0)
    grad   = 1/N sum_i g_i

and the outer update is MI with decay mu_out = 0.5 (Qiu et al. 2024, arXiv 2405.16181; the authors' code
MEFAttack/main.py and TransferAttack gradient/mef.py: N = 20, gamma = 2, xi ("kesai") = 0.15, mu_in = 0.9,
mu_out = 0.5, 20 iterations of 1.6/255). With gamma = 0 and xi = 0 it is the plain gradient.
"""

from __future__ import annotations

import dataclasses

import tensorflow as tf

from tfattack.attacks.components import Estimator, param, register
from tfattack.attacks.estimators import sampling


@register
@dataclasses.dataclass(frozen=True)
class MEF(Estimator):
    """Maximin expected flatness, the gradient half (the outer momentum is the update: `mi:0.5`). Each of the N
    neighbours keeps its own inner accumulator h_i across steps (state `[N*batch, ...]`), so MEF must be the
    outermost estimator. The N points go through `inner` as one stack (N gradient evaluations); fresh uniform
    offsets every step; not clipped (authors' code). h_i is normalised per neighbour and image by mean |g|
    (authors' code) under L-inf, by the L2 length under L2."""

    name = "mef"
    budget_param = "samples"
    positional = "samples"
    paper = ("Qiu et al., Boosting adversarial transferability with low-cost optimization via maximin expected "
             "flatness, arXiv 2405.16181, 2024")
    stateful = True
    samples: int = param(20, "Neighbours N (paper and code: 20).", low=1)
    gamma: float = param(2.0, "Neighbourhood half-width as a multiple of eps (paper and code: 2.0).", low=0.0)
    xi: float = param(0.15, "Weight of the inner accumulator in the sampled points, times eps (code: kesai = 0.15).",
                      low=0.0)
    inner_decay: float = param(0.9, "Decay of the inner accumulator, subtracted (code: inner_mu = 0.9).", low=0.0)

    def evaluations(self) -> int:
        return self.samples

    def stacked_points(self) -> int:
        return self.samples

    def init(self, ctx):
        return {"inner": sampling.tile(tf.zeros_like(ctx.clean), self.samples)}

    def estimate(self, ctx, inner, point, x, state):
        n = self.samples
        points = sampling.tile(point, n)
        if self.gamma > 0:
            points = points + sampling.uniform_offsets(ctx.generator, points, self.gamma * ctx.eps)
        points = points + (self.xi * ctx.eps) * state["inner"]
        gradients = inner(points)
        accumulated = sampling.unit(gradients, ctx.norm) - self.inner_decay * state["inner"]
        return sampling.group_mean(gradients, n), {"inner": accumulated}
