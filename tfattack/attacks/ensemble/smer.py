"""SMER: stochastic mini-batch steps over the members in shuffled order, with ensemble weights learned during the
attack so that the weighted ensemble's loss stays high.

    per step, from x~ = x_t, G~ = 0; for each of `rounds` shuffled passes over the K members, member k:
        g~ = grad J(w_k z_k)(x~)                                   (member k alone, its logits scaled by w_k)
        w  = w - lr (grad_w L(w) + decay w),   L(w) = -log CE(sum_i w_i z_i(x~) / K)   (targeted: +log CE_target)
        G~ = mu G~ + g~ / ||g~||_1,   x~ = clip_eps(x~ + alpha sign(G~))
    the estimate is G~ after the last member (the update then accumulates it with MI-FGSM's momentum)
"""

from __future__ import annotations

import dataclasses

import tensorflow as tf

from tfattack.attacks.components import EnsembleStrategy, param, register
from tfattack.attacks.gradient_ops import normalize_l1


@register
@dataclasses.dataclass(frozen=True)
class SMER(EnsembleStrategy):
    """Stochastic mini-batch ensemble with reweighing. The weights start at 1, are kept per image for one attack
    call and carried over its steps (the authors' code keeps one set for the batch, and its optimiser runs on across
    batches); the orders are drawn per step for the whole batch."""

    name = "smer"
    budget_param = "rounds"
    positional = "rounds"
    paper = "Tang et al., Ensemble diversity facilitates adversarial transferability, CVPR 2024"
    stateful = True
    rounds: int = param(4, "Shuffled passes over the members per step (code: 4, i.e. 4K inner steps).", low=1)
    learning_rate: float = param(2e-2, "SGD learning rate of the ensemble weights (code: 0.02).", low=0.0)
    weight_decay: float = param(2e-3, "SGD weight decay of the ensemble weights (code: 0.002).", low=0.0)
    inner_decay: float = param(1.0, "Momentum decay of the inner loop (code: 1.0).", low=0.0)

    def evaluations(self) -> int:
        # in whole-ensemble passes: 4K single-member gradients
        return self.rounds

    def forward_only_passes(self, members: int) -> int:
        # each of the 4K inner steps reweighs the members on every member's logits: 4K ensemble passes
        return self.rounds * members

    def init(self, ctx):
        return {"weights": tf.ones(tf.stack([tf.shape(ctx.clean)[0], ctx.members]))}

    def reweigh(self, ctx, weights, images):
        """One SGD step of the weights on -log CE of the weighted mean logits (targeted: +log CE of the target)."""
        logits = tf.stack([tf.stop_gradient(logits(images)) for logits in ctx.member_logits], axis=1)  # [B, K, C]
        labels = ctx.labels if ctx.targets is None else ctx.targets
        sign = -1.0 if ctx.targets is None else 1.0
        with tf.GradientTape() as tape:
            tape.watch(weights)
            mean = tf.reduce_sum(weights[:, :, None] * logits, axis=1) / float(ctx.members)
            loss = tf.reduce_sum(sign * tf.math.log(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, mean)))
        gradient = tape.gradient(loss, weights)
        return weights - self.learning_rate * (gradient + self.weight_decay * weights)

    def estimate(self, ctx, inner, point, x, state):
        count = ctx.members
        order = tf.reshape(tf.argsort(ctx.generator.uniform([self.rounds, count]), axis=1), [-1])
        weights = state["weights"]
        moved, momentum = point, tf.zeros_like(point)
        for index in tf.range(self.rounds * count):
            k = order[index]
            gradient = ctx.chain(ctx.member_objective(k, scale=tf.gather(weights, k, axis=1)))(moved)
            weights = self.reweigh(ctx, weights, moved)
            momentum = self.inner_decay * momentum + normalize_l1(gradient)
            moved = ctx.project(moved + ctx.ascent(momentum))
        return momentum, {"weights": weights}
