"""SVRE: the ensemble gradient with its variance across members reduced by an inner loop of single-member steps.

    g_ens = grad J_ens(x_t);   x~_0 = x_t,  G~_0 = 0
    for m = 0 .. M-1  (M = 4K, k drawn uniformly among the K members):
        g~_m     = grad J_k(x~_m) - (grad J_k(x_t) - g_ens)
        G~_{m+1} = mu G~_m + g~_m / ||g~_m||_1
        x~_{m+1} = clip_eps(x~_m + beta sign(G~_{m+1}))
    the estimate is G~_M (the update then accumulates it with MI-FGSM's momentum)
"""

from __future__ import annotations

import dataclasses

import tensorflow as tf

from tfattack.attacks.components import EnsembleStrategy, param, register
from tfattack.attacks.gradient_ops import ascent, normalize_l1


@register
@dataclasses.dataclass(frozen=True)
class SVRE(EnsembleStrategy):
    """Stochastic variance-reduced ensemble. Each member's gradient at x_t is taken once per step (the authors'
    code re-takes it at every inner step: the same value without random transforms); one member is drawn per
    inner step for the whole batch, as in their code."""

    name = "svre"
    budget_param = "inner_per_member"
    positional = "inner_per_member"
    paper = ("Xiong et al., Stochastic variance reduced ensemble adversarial attack for boosting the adversarial "
             "transferability, CVPR 2022")
    inner_per_member: int = param(4, "Inner steps per member: M = inner_per_member x K (paper and code: M = 4K).",
                                  low=1)
    inner_decay: float = param(1.0, "Momentum decay of the inner loop (paper: 1.0).", low=0.0)
    inner_step: float = param(0.0, "Inner step size beta; 0 = the attack's step alpha (paper and code).", low=0.0)

    def evaluations(self) -> int:
        # in whole-ensemble passes: the fused gradient, every member once at x_t, and M = 4K single-member steps
        return 2 + self.inner_per_member

    def estimate(self, ctx, inner, point, x, state):
        fused = inner(point)
        at_point = tf.stack([ctx.chain(ctx.member_objective(k))(point) for k in range(ctx.members)])
        steps = self.inner_per_member * ctx.members
        drawn = ctx.generator.uniform([steps], 0, ctx.members, dtype=tf.int32)
        beta = self.inner_step or ctx.alpha
        moved, momentum = point, tf.zeros_like(point)
        for m in tf.range(steps):
            k = drawn[m]
            reduced = ctx.chain(ctx.member_objective(k))(moved) - (tf.gather(at_point, k) - fused)
            momentum = self.inner_decay * momentum + normalize_l1(reduced)
            moved = ctx.project(moved + ascent(momentum, beta, ctx.norm))
        return momentum, state
