"""CWA (common weakness attack): a sharpness-aware reverse step on the ensemble, then one step per member along
an L2-normalised inner momentum, so that the update points where all members are weak together.

    x^r   = clip_eps(x_t - r sign(grad J_ens(x_t)))                    (reverse step: sharpness)
    for k = 1 .. K:  m = mu m + grad J_k(x^r) / ||grad J_k(x^r)||_2,   x^r = clip_eps(x^r + beta m)
    the estimate is x^r - x_t (the update then accumulates it with MI-FGSM's momentum)
"""

from __future__ import annotations

import dataclasses

import tensorflow as tf

from tfattack.attacks.components import EnsembleStrategy, param, register
from tfattack.attacks.gradient_ops import ascent, normalize_l2


@register
@dataclasses.dataclass(frozen=True)
class CWA(EnsembleStrategy):
    """Common weakness attack (MI-CWA). The inner momentum carries over from step to step, as in the authors' code;
    the outer momentum normalises the estimate per image (their code divides by the L1 norm of the whole batch)."""

    name = "cwa"
    positional = "inner_step"
    paper = "Chen et al., Rethinking model ensemble in transfer-based adversarial attacks, ICLR 2024"
    stateful = True
    inner_step: float = param(250.0, "Inner step beta along the L2-normalised inner momentum, in [0, 1] pixel units "
                                     "(authors' code: 250).", above=0.0)
    reverse_step: float = param(1 / 15, "Reverse (sharpness) step r as a multiple of eps (authors' code: 16/255/15 "
                                        "at eps 16/255).", low=0.0)
    inner_decay: float = param(1.0, "Momentum decay of the inner loop (authors' code: 1.0).", low=0.0)

    def evaluations(self) -> int:
        return 2  # the fused gradient and one gradient of every member

    def init(self, ctx):
        return {"inner_momentum": tf.zeros_like(ctx.clean)}

    def estimate(self, ctx, inner, point, x, state):
        moved = ctx.project(point - ascent(inner(point), self.reverse_step * ctx.eps, ctx.norm))
        momentum = state["inner_momentum"]
        for k in range(ctx.members):
            gradient = ctx.chain(ctx.member_objective(k))(moved)
            momentum = self.inner_decay * momentum + normalize_l2(gradient)
            moved = ctx.project(moved + self.inner_step * momentum)
        return moved - point, {"inner_momentum": momentum}
