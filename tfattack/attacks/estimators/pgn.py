"""Penalizing gradient norm (PGN): the gradient averaged over random neighbours and one look-ahead step of each.

    x'_i  = p + r_i,                      r_i ~ U[-zeta*eps, zeta*eps]^d,  i = 1..N
    g1_i  = grad(x'_i)
    x*_i  = x'_i - alpha * g1_i / mean|g1_i|
    g2_i  = grad(x*_i)
    grad  = 1/N sum_i (1 - delta) * g1_i + delta * g2_i

The finite-difference approximation of the gradient of J(x) + lambda * ||grad J(x)|| (Ge et al., Algorithm 1, and
the authors' code Incv3_PGN_Attack.py). With delta = 0 and zeta = 0 it is the plain gradient.
"""

from __future__ import annotations

import dataclasses

from tfattack.attacks.components import Estimator, param, register
from tfattack.attacks.estimators import sampling


@register
@dataclasses.dataclass(frozen=True)
class PGN(Estimator):
    """Penalizing gradient norm. The N neighbours go through `inner` as one stack, then their N look-ahead points
    as a second stack (2N gradient evaluations; N when delta = 0). Neighbours are drawn around the point the
    update asks for (x_t, or NI's look-ahead) and are not clipped to [0, 1], as in the authors' code. The
    look-ahead step is alpha * g / mean|g| (authors' code) under L-inf, alpha * g / ||g||_2 under L2."""

    name = "pgn"
    budget_param = "samples"
    positional = "samples"
    paper = "Ge et al., Boosting adversarial transferability by achieving flat local maxima, NeurIPS 2023"
    samples: int = param(20, "Neighbours N (paper and code: 20).", low=1)
    zeta: float = param(3.0, "Neighbourhood half-width as a multiple of eps (paper and code: 3.0).", low=0.0)
    delta: float = param(0.5, "Balance coefficient: weight of the look-ahead gradient (paper and code: 0.5).",
                         low=0.0, high=1.0)

    def evaluations(self) -> int:
        return self.samples * (1 if self.delta == 0 else 2)

    def stacked_points(self) -> int:
        return self.samples

    def estimate(self, ctx, inner, point, x, state):
        n = self.samples
        near = sampling.tile(point, n)
        if self.zeta > 0:
            near = near + sampling.uniform_offsets(ctx.generator, near, self.zeta * ctx.eps)
        first = inner(near)
        if self.delta == 0:
            return sampling.group_mean(first, n), state
        ahead = near - ctx.alpha * sampling.unit(first, ctx.norm)
        second = inner(ahead)
        return sampling.group_mean((1.0 - self.delta) * first + self.delta * second, n), state
