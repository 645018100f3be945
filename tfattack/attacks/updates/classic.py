"""The sign step (I-FGSM), momentum (MI-FGSM) and Nesterov momentum (NI-FGSM).

    I-FGSM:  x_{t+1} = x_t + alpha * sign(grad)                                   (Kurakin et al. 2017)
    MI-FGSM: g_{t+1} = mu * g_t + grad / mean|grad| ;  x_{t+1} = x_t + alpha * sign(g_{t+1})   (Dong et al. 2018)
    NI-FGSM: the gradient is taken at x_t + alpha * mu * g_t                       (Lin et al. ICLR 2020)

`ctx.ascent(d)` is alpha * sign(d) under L-inf and alpha * d / ||d||_2 under L2.
"""

from __future__ import annotations

import dataclasses

import tensorflow as tf

from tfattack.attacks.components import Update, param, register
from tfattack.attacks.gradient_ops import normalize_l1


@register
@dataclasses.dataclass(frozen=True)
class Sign(Update):
    """No accumulation: each step follows the current gradient (FGSM with one step, I-FGSM / BIM with many)."""

    name = "sign"
    paper = "Kurakin et al., Adversarial examples in the physical world, ICLR-W 2017"

    def step(self, ctx, x, gradient, state):
        return x + ctx.ascent(gradient), state


@register
@dataclasses.dataclass(frozen=True)
class MI(Update):
    """Momentum on L1-normalised gradients (the mean of |grad|, as the authors' code; the sign step ignores
    the constant between mean and sum)."""

    name = "mi"
    positional = "decay"
    paper = "Dong et al., Boosting adversarial attacks with momentum, CVPR 2018"
    decay: float = param(1.0, "Momentum decay mu (paper: 1.0).", low=0.0)

    def init(self, ctx):
        return {"momentum": tf.zeros_like(ctx.clean)}

    def accumulate(self, momentum, gradient):
        """g_{t+1} = mu * g_t + grad / mean|grad|."""
        return self.decay * momentum + normalize_l1(gradient)

    def step(self, ctx, x, gradient, state):
        momentum = self.accumulate(state["momentum"], gradient)
        return x + ctx.ascent(momentum), {**state, "momentum": momentum}


@register
@dataclasses.dataclass(frozen=True)
class NI(MI):
    """Nesterov momentum: MI with the gradient taken at the look-ahead point x + alpha * mu * g."""

    name = "ni"
    paper = "Lin et al., Nesterov accelerated gradient and scale invariance for adversarial attacks, ICLR 2020"

    def lookahead(self, ctx, x, state):
        return nesterov_point(ctx, x, state["momentum"], self.decay)


def nesterov_point(ctx, x, momentum, decay: float):
    """NI's look-ahead x + alpha * mu * g (Lin et al. ICLR 2020, eq. 8); x itself when mu = 0."""
    if decay == 0:
        return x
    return x + (ctx.alpha * decay) * momentum
