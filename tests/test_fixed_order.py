"""Ensemble sums in a fixed floating-point order (`tfattack.fixed_order`): no attack graph on three or more members
adds their gradients or outputs with a wide `AddN` (whose order TensorFlow's scheduling can change), and the
replacements compute the same numbers."""

import numpy as np
import pytest
import tensorflow as tf

from analytic import LinearModel
from tfattack.attacks import build
from tfattack.fixed_order import fan_out, ordered_sum
from tfattack.models.ensemble import Ensemble

SHAPE = (6, 6, 3)


def add_n_widths(concrete) -> list:
    """The number of data inputs of every `AddN` in a concrete function, its while-loop bodies and gradients."""
    graph = concrete.graph.as_graph_def()
    nodes = list(graph.node) + [node for function in graph.library.function for node in function.node_def]
    return [sum(not name.startswith("^") for name in node.input) for node in nodes if node.op == "AddN"]


@pytest.mark.parametrize("preset,fuse", [("mi_fgsm", "logits"), ("ti_di_mi_fgsm", "logits"), ("mi_fgsm", "probs"),
                                         ("mi_fgsm", "loss"), ("adaea", "logits")])
def test_no_attack_on_three_members_adds_them_with_a_wide_add_n(preset, fuse):
    ensemble = Ensemble([LinearModel(SHAPE, seed=k) for k in range(3)], fuse=fuse)
    x = np.random.default_rng(0).uniform(0.2, 0.8, (2,) + SHAPE).astype(np.float32)
    labels = tf.constant([1, 2])
    attack = build(preset, eps=8 / 255, steps=2)
    compiled = attack.compiled_for(ensemble)
    concrete = compiled.get_concrete_function(tf.constant(x), labels, labels, tf.random.Generator.from_seed(0), False)
    assert all(width <= 2 for width in add_n_widths(concrete)), add_n_widths(concrete)


def test_fan_out_sums_the_copies_gradients_and_ordered_sum_equals_numpy():
    rng = np.random.default_rng(1)
    x = tf.constant(rng.normal(size=(2, 5)).astype(np.float32))
    scales = rng.normal(size=(4, 2, 5)).astype(np.float32)
    with tf.GradientTape() as tape:
        tape.watch(x)
        copies = fan_out(x, 4)
        total = ordered_sum([tf.reduce_sum(c * s) for c, s in zip(copies, scales)])
    np.testing.assert_allclose(tape.gradient(total, x).numpy(), scales.sum(axis=0), rtol=1e-6)
    np.testing.assert_allclose(total.numpy(), (x.numpy() * scales).sum(), rtol=1e-5)
    assert fan_out(x, 2) == [x, x]  # two consumers: TensorFlow's two-input sum is exact in either order
    parts = [tf.constant(p) for p in rng.normal(size=(5, 3, 4)).astype(np.float32)]
    np.testing.assert_allclose(ordered_sum(parts).numpy(), np.sum([p.numpy() for p in parts], axis=0), rtol=1e-6)
    with pytest.raises(ValueError, match="at least one"):
        ordered_sum([])


def test_a_member_left_out_of_the_objective_gets_a_zero_gradient():
    """An unused copy (an ensemble strategy reading one member) contributes zeros, not an error."""
    x = tf.constant(np.ones((1, 3), np.float32))
    with tf.GradientTape() as tape:
        tape.watch(x)
        first, _, third = fan_out(x, 3)
        total = tf.reduce_sum(2.0 * first + 5.0 * third)
    np.testing.assert_array_equal(tape.gradient(total, x).numpy(), np.full((1, 3), 7.0, np.float32))
