"""Gradient relevance (GRA), the step half: momentum with a per-pixel decay indicator on the step size.

    g_{t+1} = mu * g_t + grad / mean|grad|
    M_{t+1} = M_t * (1 where sign(g_{t+1}) == sign(g_t), else eta),    M_0 = 1 / eta
    x_{t+1} = x_t + M_{t+1} * alpha * sign(g_{t+1})

(Zhu et al. ICCV 2023 and the authors' code GRA_v3.py: M_0 = 10/9.4, eta = 0.94.) The gradient half is the
estimator `gra`. With eta = 1 this is MI-FGSM.
"""

from __future__ import annotations

import dataclasses

import tensorflow as tf

from tfattack.attacks.components import param, register
from tfattack.attacks.updates.classic import MI


@register
@dataclasses.dataclass(frozen=True)
class GRAUpdate(MI):
    """MI with GRA's decay indicator: a pixel whose momentum sign flips has its step size multiplied by eta from
    then on (M starts at 1/eta, so the first step, whose previous momentum is 0, has M = 1). Under L2 the
    indicator scales the L2 step per pixel."""

    name = "gra"
    positional = "decay"
    paper = "Zhu et al., Boosting adversarial transferability via gradient relevance attack, ICCV 2023"
    eta: float = param(0.94, "Attenuation factor of the decay indicator (paper and code: 0.94).", above=0.0, high=1.0)

    def init(self, ctx):
        return {"momentum": tf.zeros_like(ctx.clean), "indicator": tf.fill(tf.shape(ctx.clean), 1.0 / self.eta)}

    def step(self, ctx, x, gradient, state):
        previous = state["momentum"]
        momentum = self.accumulate(previous, gradient)
        same = tf.equal(tf.sign(momentum), tf.sign(previous))
        indicator = state["indicator"] * tf.where(same, 1.0, self.eta)
        return x + indicator * ctx.ascent(momentum), {**state, "momentum": momentum, "indicator": indicator}
