"""AdaEA: members weighted by how well their own one-step examples fool the others (adaptive gradient modulation),
and pixels where the members' gradients disagree dropped (disparity-reduced filter).

    x_j      = clip_eps(x_t + alpha sign(g_j)),   g_j = grad J_j(x_t)                (each member's one step)
    s_j      = beta sum_{i != j} CE_i(x_j) / CE_i(x_i)                               (untargeted; targeted: CE_i(x_i) / CE_i(x_j))
    w        = softmax_j(s_j)
    c(p)     = mean over pairs i < j of cos(g_i(p), g_j(p)),   p a pixel, cos over its channels
    estimate = grad J(sum_j w_j z_j)(x_t) * [c >= threshold]
"""

from __future__ import annotations

import dataclasses

import tensorflow as tf

from tfattack.attacks.components import EnsembleStrategy, param, register
from tfattack.fixed_order import ordered_sum


def pixel_agreement(gradients):
    """Mean over member pairs i < j of the cosine between their gradients at each pixel (over its channels):
    [K, B, H, W, C] -> [B, H, W, 1]."""
    unit = tf.math.l2_normalize(gradients, axis=-1, epsilon=1e-16)
    count = gradients.shape[0]
    pairs = [tf.reduce_sum(unit[i] * unit[j], axis=-1, keepdims=True)
             for i in range(count) for j in range(i + 1, count)]
    return ordered_sum(pairs) / float(len(pairs))


@register
@dataclasses.dataclass(frozen=True)
class AdaEA(EnsembleStrategy):
    """Adaptive ensemble attack. The weights are per image (the authors' code scores whole batches, so an image's
    weights there depend on its batch mates); the filter averages every pair once (their code leaves the last
    member's row out of the mean)."""

    name = "adaea"
    positional = "beta"
    paper = ("Chen et al., An adaptive model ensemble adversarial attack for boosting adversarial transferability, "
             "ICCV 2023")
    beta: float = param(10.0, "Temperature of the adversarial-ability scores before the softmax (authors: 10).",
                        low=0.0)
    threshold: float = param(-0.3, "Pixels whose mean pairwise gradient cosine is below this are dropped (authors: "
                                   "-0.3; -1 keeps every pixel).", low=-1.0, high=1.0)

    def evaluations(self) -> int:
        # in whole-ensemble passes: every member's gradient, then the weighted ensemble's
        return 2

    def forward_only_passes(self, members: int) -> int:
        # the scores: every member on the K one-step examples, K ensemble passes
        return members

    def weights(self, ctx, point, gradients):
        """softmax_j of beta x the summed loss ratios of member j's one-step example on the other members: [B, K]."""
        count = ctx.members
        examples = tf.concat([ctx.project(point + ctx.ascent(g)) for g in gradients], axis=0)  # [K * B], j-major
        labels = ctx.labels if ctx.targets is None else ctx.targets
        labels = tf.tile(labels, [count])
        # losses[i, j, b]: member i's cross-entropy on member j's example of image b
        losses = tf.stack([
            tf.reshape(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, tf.stop_gradient(logits(examples))),
                       [count, -1])
            for logits in ctx.member_logits])
        own = tf.linalg.diag_part(tf.transpose(losses, [2, 0, 1]))  # [B, i]: CE_i(x_i)
        cross = tf.transpose(losses, [2, 0, 1])  # [B, i, j]
        ratio = (cross / own[:, :, None] if ctx.targets is None else own[:, :, None] / cross)
        off_diagonal = 1.0 - tf.eye(count)
        scores = self.beta * tf.reduce_sum(ratio * off_diagonal, axis=1)  # [B, j]
        return tf.nn.softmax(scores, axis=-1)

    def estimate(self, ctx, inner, point, x, state):
        gradients = [ctx.chain(ctx.member_objective(k))(point) for k in range(ctx.members)]
        weights = self.weights(ctx, point, gradients)
        keep = tf.cast(pixel_agreement(tf.stack(gradients)) >= self.threshold, point.dtype)
        return ctx.chain(ctx.weighted_objective(weights))(point) * keep, state
