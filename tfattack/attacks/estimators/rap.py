"""Reverse adversarial perturbation (RAP): the gradient taken at the worst point of a small ball around the iterate.

From iteration K_LS on (late start), per step:

    n_0     ~ U[-eps_n, eps_n]^d, x + n_0 clipped to [0, 1]
    n_{j+1} = clip(n_j - alpha_n * sign(grad_model(x + n_j)), -eps_n, eps_n), x + n clipped to [0, 1],  j < K_in
    grad    = grad(x + n_{K_in})                                   (before K_LS: n = 0)

(Qin et al. NeurIPS 2022 and the authors' code rap_attack.py: 400 iterations of 2/255, eps_n = 16/255,
K_in = 8 with alpha_n = eps_n / K_in, late start 100 for RAP-LS / 0 for RAP.)
"""

from __future__ import annotations

import dataclasses

import tensorflow as tf

from tfattack.attacks.components import Estimator, param, register
from tfattack.attacks.estimators import sampling
from tfattack.attacks.projection import project


@register
@dataclasses.dataclass(frozen=True)
class RAP(Estimator):
    """Reverse adversarial perturbation. The inner minimisation (a random start and K_in sign steps down the
    attack's objective, inside the eps_n ball around the point and the [0, 1] box) uses the model's gradient
    alone, without input transforms or filters, as the authors' code (its inner PGD calls the bare model); the
    returned gradient at point + n goes through `inner` (transforms, TI). The inner steps run in sequence (a
    tf.while_loop); before the late start no inner step runs and no random number is drawn. Under L2 the inner
    ball and steps are L2 ones."""

    name = "rap"
    positional = "late_start"
    paper = ("Qin et al., Boosting the transferability of adversarial attacks with reverse adversarial "
             "perturbation, NeurIPS 2022")
    late_start: int = param(100, "Iteration K_LS from which the reverse perturbation is used (paper's RAP-LS and "
                                 "TransferAttack: 100 of 400; 0 = RAP from the start). With fewer steps than "
                                 "this, nothing changes.", low=0)
    radius: float = param(1.0, "Radius eps_n of the reverse perturbation as a multiple of eps (code: 16/255 with "
                               "eps = 16/255, i.e. 1.0).", low=0.0)
    inner_steps: int = param(8, "Inner sign steps K_in of size eps_n / K_in (code: 8 steps of 2/255).", low=1)

    def evaluations(self) -> int:
        # Calls of `inner`; the K_in inner steps are extra bare-model passes (no copies) from the late start on.
        return 1

    def bare_passes(self, steps: int) -> int:
        return self.inner_steps * max(0, steps - self.late_start) if self.radius > 0 else 0

    def reverse(self, ctx, point):
        """n: the inner minimisation of the objective around `point` (a stack of any number of groups)."""
        radius = self.radius * ctx.eps
        step = radius / self.inner_steps

        def legal(candidate):
            return project(candidate, point, radius, ctx.norm) - point

        def descend(index, noise):
            gradient = sampling.objective_gradient(ctx, point + noise)
            return index + 1, legal(point + noise - step * _direction(gradient, ctx.norm))

        start = legal(point + sampling.uniform_offsets(ctx.generator, point, radius))
        _, noise = tf.while_loop(lambda index, _: index < self.inner_steps, descend, (tf.constant(0), start))
        return noise

    def estimate(self, ctx, inner, point, x, state):
        if self.radius == 0:
            return inner(point), state
        noise = tf.cond(ctx.step >= self.late_start, lambda: self.reverse(ctx, point), lambda: tf.zeros_like(point))
        return inner(point + noise), state


def _direction(gradient, norm: str):
    """sign(g) under L-inf, g / ||g||_2 under L2 (the norm's unit step)."""
    return tf.sign(gradient) if norm == "linf" else sampling.unit(gradient, "l2")
