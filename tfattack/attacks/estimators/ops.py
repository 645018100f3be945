"""OPS, operator-perturbation-based stochastic optimization (Guo et al., Boosting adversarial transferability
through augmentation in hypothesis space, CVPR 2025): the gradient averaged over random composite input operators
applied at random neighbours, plus the plain gradient.

    pool    (once per attack)   r_jk ~ U[-beta*eps*rho_j, beta*eps*rho_j]^d,  k = 1..N for each ratio rho_j
    per step                    r_1..r_N: N of the pool without replacement;
                                T_i1..T_iM: M of a fresh pool of composite operators without replacement, for each i
    grad  = ( grad J(p) + sum_{i=1..N} sum_{j=1..M} d/dp J(T_ij(p + r_i)) ) / (N*M + 1)

The derivative goes through the operator (chain rule), as in the authors' code. A composite operator of level k is
k basic operators drawn with replacement from the 31 of `tfattack.attacks.transforms.ops` (flips, cyclic shifts,
rotations, scalings x/s, resize-and-pad); the pool holds 31 composites of each level in `levels`.

Facts used: the authors' code (github.com/the-full/OPS, TransferAttack/transferattack/input_transformation/ops.py
and main_for_ops.py; identical in Trustworthy-AI-Group/TransferAttack, transferattack/input_transformation/ops.py):
beta = 2, ratios 0.25, 0.5, ..., 1.5 (N pool entries per ratio, drawn at the start of the attack), levels 2..4,
MI-FGSM with decay 1, eps 16/255, 10 steps of eps/10, neighbours not clipped to [0, 1]. The numbers of neighbours
and operators: the authors' class defaults are 10 and 20 and their command line's 20 and 20; their experiments
sweep both up to 30 (ops_10_30_30, also in their defence tables), and TransferAttack's "official arguments" were
set to 30 and 30 ("Fix OPS parameter settings", 2026); the defaults here are 30 and 30.

Deviations: the neighbour pool, its per-step selection and the operators (composition, shift steps, resize sizes)
are drawn per image (the authors' code draws one pool of [C, H, W] noises and each selection for the whole batch).
See `tfattack.attacks.transforms.ops` for the operators themselves.
"""

from __future__ import annotations

import dataclasses
from typing import Tuple

import tensorflow as tf

from tfattack.attacks.components import Estimator, param, register
from tfattack.attacks.transforms import ops as operator_pool

# Static Python control flow only: no autograph conversion needed (it costs seconds per process).
_static = tf.autograph.experimental.do_not_convert

_RATIOS = (0.25, 0.5, 0.75, 1.0, 1.25, 1.5)
_ANGLES = (5.0, -5.0, 15.0, -15.0, 45.0, -45.0, 90.0, -90.0, 180.0)
_SCALES = (2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0)
_RATES = (1.1, 1.3, 1.5, 1.7, 1.9, 2.1, 2.3, 2.5, 2.7, 2.9)


@register
@dataclasses.dataclass(frozen=True)
class OPS(Estimator):
    """Operator-perturbation-based stochastic optimization: (1 + N*M) gradient evaluations per step, the plain one
    and one per (neighbour, operator). Keeps the neighbour pool across steps, so it must be the outermost
    estimator. All copies of a step go through `inner` as one stack; with `copies_per_pass` > 0 they go in
    chunks of about copies_per_pass / (the config's input copies) copies, one after another, so that the
    operators' images are bounded too (every draw is made before the chunks: the result does not depend on
    the chunking). Neighbours are drawn around the point the update asks for (x_t, or NI's look-ahead). With
    neighbours = 0 or operators = 0 it is the plain gradient (authors' code). State: len(ratios) * N noise images
    per image of the batch (180 at the defaults). The config's transforms and filters (TI) act inside `inner`, on
    each operator copy, before its gradient is carried back through the operator."""

    name = "ops"
    budget_param = "neighbours"
    positional = "neighbours"
    paper = ("Guo et al., Boosting adversarial transferability through augmentation in hypothesis space, "
             "CVPR 2025")
    stateful = True
    neighbours: int = param(30, "Neighbours N sampled per step (TransferAttack's official arguments and the authors' "
                                "largest setting: 30; authors' class default 10).", low=0)
    operators: int = param(30, "Composite operators M per neighbour (TransferAttack's official arguments and the "
                               "authors' largest setting: 30; authors' class default 20).", low=0)
    beta: float = param(2.0, "Neighbourhood scale: radii beta * eps * ratio (authors' code: 2).", low=0.0)
    ratios: Tuple[float, ...] = param(_RATIOS, "Radius ratios; the pool holds N noises per ratio, drawn once per "
                                               "attack (authors' code: 0.25+0.5+0.75+1+1.25+1.5).")
    levels: Tuple[int, ...] = param((2, 3, 4), "Composition levels; the operator pool holds one composite per basic "
                                               "operator at each level, level k = k basic operators drawn with "
                                               "replacement, level 1 = each basic operator once (authors' code: "
                                               "2+3+4).")
    simple: Tuple[str, ...] = param(operator_pool.SIMPLE_OPERATORS,
                                    "Parameter-free basic operators (authors' code: identity+vflip+hflip+vshift+"
                                    "hshift; the shifts are cyclic by a uniform step).",
                                    items=operator_pool.SIMPLE_OPERATORS)
    angles: Tuple[float, ...] = param(_ANGLES, "Rotation operators, degrees counter-clockwise, nearest, zero fill "
                                               "(authors' code: +-5, +-15, +-45, +-90, 180).")
    scales: Tuple[float, ...] = param(_SCALES, "Scaling operators x / s (authors' code: 2..8).")
    dim_rates: Tuple[float, ...] = param(_RATES, "Resize-and-pad operators: resize to a size uniform in [size, "
                                                 "size*r), pad to size*r, resize back, bilinear (authors' code: "
                                                 "1.1, 1.3, ..., 2.9).")

    def validate(self):
        if len(set(self.simple)) != len(self.simple):
            raise self.error(f"simple lists an operator twice: {'+'.join(self.simple)}")
        if any(level < 1 for level in self.levels):
            raise self.error(f"levels must be >= 1, got {'+'.join(map(str, self.levels))}")
        if any(ratio < 0 for ratio in self.ratios):
            raise self.error("ratios must be >= 0")
        if any(not scale > 0 for scale in self.scales):
            raise self.error("scales must be > 0")
        if any(not rate > 1 for rate in self.dim_rates):
            raise self.error("dim_rates must be > 1")
        if not self.samples:
            return
        if not self.ratios:
            raise self.error("ratios must list at least one ratio when neighbours > 0")
        basic = len(self.basic_operators())
        if not basic or not self.levels:
            raise self.error("the operator pool is empty: give levels and at least one basic operator")
        if self.operators > basic * len(self.levels):
            raise self.error(f"operators must be <= the pool of {basic * len(self.levels)} composites "
                             f"({basic} basic operators x {len(self.levels)} levels), got {self.operators}")

    @property
    def samples(self) -> int:
        """Neighbour-operator pairs per step (0: the plain gradient)."""
        return self.neighbours * self.operators

    @_static
    def basic_operators(self):
        return operator_pool.basic_operators(self.simple, self.angles, self.scales, self.dim_rates)

    def evaluations(self) -> int:
        return 1 + self.samples

    def stacked_points(self) -> int:
        return 1 + self.samples

    # ----- the pool of neighbours (state) and the per-step draws

    def init(self, ctx):
        if not self.samples:
            return {}
        return {"pool": self.neighbour_pool(ctx.generator, ctx.clean, ctx.eps)}

    @_static
    def neighbour_pool(self, generator, clean, eps):
        """[len(ratios) * N * batch, H, W, C], entry (j*N + k)*batch + b uniform in +-beta*eps*ratios[j]."""
        count, shape = len(self.ratios), clean.shape.as_list()
        unit = generator.uniform([count, self.neighbours] + shape, -1.0, 1.0, dtype=clean.dtype)
        radii = tf.constant(self.ratios, clean.dtype) * (self.beta * eps)
        noise = unit * tf.reshape(radii, [count, 1, 1, 1, 1, 1])
        return tf.reshape(noise, [-1] + shape[1:])

    @_static
    def step_draws(self, generator, batch: int):
        """The random numbers of one step: `chosen` int32 [N, batch] (pool entries, per image without
        replacement), `ops` int32 [N, M, batch, L] and `uniforms` [N, M, batch, L, 4] (see
        `transforms.ops.draw_composites`)."""
        pool = len(self.ratios) * self.neighbours
        keys = generator.uniform([batch, pool])
        chosen = tf.transpose(tf.math.top_k(keys, self.neighbours).indices)
        ops, uniforms = operator_pool.draw_composites(generator, [self.neighbours, batch], self.basic_operators(),
                                                      self.levels, self.operators)
        return dict(chosen=chosen, ops=tf.transpose(ops, [0, 2, 1, 3]),
                    uniforms=tf.transpose(uniforms, [0, 2, 1, 3, 4]))

    # ----- the estimate

    @_static
    def chunk_size(self, ctx) -> int:
        """Copies of the batch per `inner` call: all 1 + N*M at once, or about copies_per_pass / input copies."""
        total = 1 + self.samples
        per_pass = ctx.copies_per_pass
        if not per_pass:
            return total
        return max(1, min(total, per_pass // max(1, ctx.config.copies)))

    def estimate(self, ctx, inner, point, x, state):
        if not self.samples:
            return inner(point), state
        batch, n, m = ctx.batch, self.neighbours, self.operators
        operators = self.basic_operators()
        depth = max(self.levels)
        draws = self.step_draws(ctx.generator, batch)

        # One group per copy of the batch: group 0 is the plain term (no noise, no operator), group 1 + i*M + j is
        # neighbour i with operator j; padded with weight-0 plain groups to whole chunks.
        total = 1 + n * m
        size = self.chunk_size(ctx)
        chunks = -(-total // size)
        pad = chunks * size - total
        batch_index = tf.range(batch)[None, :]
        sources = (draws["chosen"][:, None, :] * batch + batch_index[None]) * tf.ones([1, m, 1], tf.int32)
        sources = tf.concat([tf.zeros([1, batch], tf.int32), tf.reshape(sources, [n * m, batch]),
                             tf.zeros([pad, batch], tf.int32)], 0)
        noisy = tf.constant([0.0] + [1.0] * (n * m) + [0.0] * pad)
        weight = tf.constant([1.0] * total + [0.0] * pad)
        skip = operator_pool.skip_id(operators)
        ops = tf.concat([tf.fill([1, batch, depth], skip), tf.reshape(draws["ops"], [n * m, batch, depth]),
                         tf.fill([pad, batch, depth], skip)], 0)
        uniforms = tf.concat([tf.zeros([1, batch, depth, operator_pool.UNIFORMS]),
                              tf.reshape(draws["uniforms"], [n * m, batch, depth, operator_pool.UNIFORMS]),
                              tf.zeros([pad, batch, depth, operator_pool.UNIFORMS])], 0)

        def by_chunk(values):
            return tf.reshape(values, [chunks, size] + values.shape[1:].as_list())

        sources, noisy, weight, ops, uniforms = map(by_chunk, (sources, noisy, weight, ops, uniforms))
        pool = state["pool"]

        def chunk_gradient(index):
            noise = tf.gather(pool, tf.reshape(sources[index], [-1]))
            noise *= tf.repeat(noisy[index], batch)[:, None, None, None]
            with tf.GradientTape(watch_accessed_variables=False) as tape:
                tape.watch(point)
                near = tf.tile(point, [size, 1, 1, 1]) + noise
                images = operator_pool.apply_operators(
                    near, tf.reshape(ops[index], [size * batch, depth]),
                    tf.reshape(uniforms[index], [size * batch, depth, operator_pool.UNIFORMS]), operators)
            gradients = inner(images)
            if pad:
                gradients *= tf.repeat(weight[index], batch)[:, None, None, None]
            return tape.gradient(images, point, output_gradients=gradients)

        if chunks == 1:
            summed = chunk_gradient(0)
        else:
            def body(index, summed):
                return index + 1, summed + chunk_gradient(index)

            # One chunk at a time (parallel_iterations=1): bounding memory is why there are chunks.
            _, summed = tf.while_loop(lambda index, _: index < chunks, body, (tf.constant(0), tf.zeros_like(point)),
                                      parallel_iterations=1)
        return summed / float(total), state
