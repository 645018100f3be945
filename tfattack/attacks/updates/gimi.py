"""Global momentum initialization (GI-MI / GI-NI): the momentum is pre-converged before the attack.

    pre-phase, from x_0 = clean, g_0 = 0, for t < P:
        g_{t+1} = mu * g_t + grad(x_t) / mean|grad(x_t)|
        x_{t+1} = project(x_t + s * alpha * sign(g_{t+1}))
    then the attack restarts from x_0 with g = g_P and runs T MI (or NI) steps of size alpha.

(Wang et al., arXiv 2211.11236; TransferAttack gradient/gifgsm.py and the authors' code gi_mi_fgsm.py /
gi_ni_fgsm.py: P = 5 pre-steps, global search factor s = 10, mu = 1.) With P = 0 this is MI-FGSM (NI-FGSM).
"""

from __future__ import annotations

import dataclasses

import tensorflow as tf

from tfattack.attacks.components import param, register
from tfattack.attacks.updates.classic import MI, nesterov_point


@register
@dataclasses.dataclass(frozen=True)
class GIMI(MI):
    """MI (or NI with nesterov=true) whose momentum starts from a pre-phase of P steps of size s * alpha, run in
    `init` (a sequential tf.while_loop of P gradient evaluations, once per run, before step 0). The pre-phase
    starts from the clean images and uses the plain gradient `ctx.gradient` (input transforms and TI, but not
    the estimator chain); the P evaluations come on top of the T steps'."""

    name = "gimi"
    positional = "pre_steps"
    paper = ("Wang et al., Boosting the transferability of adversarial attacks with global momentum "
             "initialization, arXiv 2211.11236")
    pre_steps: int = param(5, "Pre-convergence iterations P (paper and code: 5).", low=0)
    factor: float = param(10.0, "Global search factor s: the pre-phase step is s * alpha (paper and code: 10).",
                          above=0.0)
    nesterov: bool = param(False, "Take each gradient at NI's look-ahead x + alpha * mu * g (GI-NI, authors' "
                                  "gi_ni_fgsm.py), in the pre-phase and in the attack.")

    def init_evaluations(self) -> int:
        return self.pre_steps

    def lookahead(self, ctx, x, state):
        return nesterov_point(ctx, x, state["momentum"], self.decay) if self.nesterov else x

    def init(self, ctx):
        momentum = tf.zeros_like(ctx.clean)
        if self.pre_steps == 0:
            return {"momentum": momentum}

        def pre_step(index, x, momentum):
            gradient = ctx.gradient(self.lookahead(ctx, x, {"momentum": momentum}))
            momentum = self.accumulate(momentum, gradient)
            return index + 1, ctx.project(x + self.factor * ctx.ascent(momentum)), momentum

        _, _, momentum = tf.while_loop(lambda index, *_: index < self.pre_steps, pre_step,
                                       (tf.constant(0), ctx.clean, momentum))
        return {"momentum": momentum}
