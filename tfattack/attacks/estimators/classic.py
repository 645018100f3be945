"""Variance tuning (VT): the gradient corrected by the variance of the previous iterate's neighbourhood.

    current = grad(x_t) + v_t ;  v_{t+1} = mean_i grad(x_t + r_i) - grad(x_t),  r_i ~ U[-beta*eps, beta*eps]^d
"""

from __future__ import annotations

import dataclasses

import tensorflow as tf

from tfattack.attacks.components import Estimator, param, register
from tfattack.attacks.gradient_ops import vt_neighbour


@register
@dataclasses.dataclass(frozen=True)
class VT(Estimator):
    """Variance tuning. The variance is sampled around x_t, not the Nesterov look-ahead point, as in the
    authors' code; `grad` at the look-ahead point is the one corrected."""

    name = "vt"
    budget_param = "samples"
    positional = "samples"
    paper = "Wang & He, Enhancing the transferability of adversarial attacks through variance tuning, CVPR 2021"
    stateful = True
    samples: int = param(20, "Neighbours N (paper: 20).", low=1)
    beta: float = param(1.5, "Neighbourhood half-width as a multiple of eps (paper: 1.5).", low=0.0)

    def evaluations(self) -> int:
        return 1 + self.samples

    def init(self, ctx):
        return {"variance": tf.zeros_like(ctx.clean)}

    def estimate(self, ctx, inner, point, x, state):
        gradient = inner(point)
        current = gradient + state["variance"]
        total = tf.zeros_like(x)
        for _ in tf.range(self.samples):
            # The neighbours' gradients are independent: by default the executor overlaps up to 10 of them
            # (faster on idle cores, more memory); the memory-bounded mode (copies_per_pass > 0) runs them one
            # at a time.
            tf.autograph.experimental.set_loop_options(parallel_iterations=1 if ctx.copies_per_pass else 10)
            total += inner(vt_neighbour(x, ctx.generator, self.beta * ctx.eps))
        return current, {"variance": total / float(self.samples) - gradient}
