"""Backward policies: the forward pass never changes; each backward equals a NumPy transcription of its formula."""

import numpy as np
import pytest
import tensorflow as tf

import tfattack
from tfattack import backward
from tfattack.backward import Policy

POLICIES = [Policy(residual_gradient=0.2), Policy(relu="linear"), Policy(relu="silu", relu_temperature=0.5),
            Policy(max_pool="softmax", max_pool_temperature=10.0),
            Policy(relu="linear", residual_gradient=0.5, max_pool="softmax"),
            Policy(relu="linear", renormalize=True, linear_from="resnet_v2_50/block3/unit_1/bottleneck_v2")]


def gradient(fn, x, chosen):
    x = tf.constant(x)
    with backward.policy(chosen):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = fn(x)
    return y.numpy(), tape.gradient(y, x).numpy()


def sigmoid(z):
    return 1 / (1 + np.exp(-z))


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def test_relu_derivatives(rng):
    x = rng.normal(size=(2, 5, 5, 3)).astype(np.float32)
    w = rng.normal(size=x.shape).astype(np.float32)

    def f(v):
        return tf.reduce_sum(w * backward.relu(v))

    exact_value, exact = gradient(f, x, None)
    np.testing.assert_array_equal(exact, w * (x > 0))
    silu_slope = sigmoid(x) + x * sigmoid(x) * (1 - sigmoid(x))
    for chosen, slope in ((Policy(relu="linear"), np.ones_like(x)),
                          (Policy(relu="silu", relu_temperature=0.5), 0.5 * silu_slope)):
        value, grad = gradient(f, x, chosen)
        assert value == exact_value
        np.testing.assert_allclose(grad, w * slope, rtol=1e-5, atol=1e-7)


def test_relu6_keeps_its_flat_top(rng):
    x = (rng.normal(size=(50,)) * 5).astype(np.float32)
    _, grad = gradient(lambda v: tf.reduce_sum(backward.relu6(v)), x, Policy(relu="silu", relu_temperature=2.0))
    silu_slope = sigmoid(x) + x * sigmoid(x) * (1 - sigmoid(x))
    np.testing.assert_allclose(grad, 2.0 * silu_slope * (x < 6), rtol=1e-5, atol=1e-7)
    _, grad = gradient(lambda v: tf.reduce_sum(backward.relu6(v)), x, Policy(relu="linear"))
    np.testing.assert_array_equal(grad, (x < 6).astype(np.float32))


def test_residual_gradient_scales_only_the_residual_branch(rng):
    x = rng.normal(size=(3, 4)).astype(np.float32)
    w = rng.normal(size=x.shape).astype(np.float32)

    def f(v):  # skip = v, residual branch = v ** 3
        return tf.reduce_sum(w * backward.residual_add(v, v ** 3))

    value, grad = gradient(f, x, Policy(residual_gradient=0.25))
    assert value == gradient(f, x, None)[0]
    np.testing.assert_allclose(grad, w * (1 + 0.25 * 3 * x ** 2), rtol=1e-5)
    # a block whose shortcut is a projection keeps its gradient, as in SGM's code
    _, grad = gradient(lambda v: tf.reduce_sum(w * backward.residual_add(v, v ** 3, projected=True)), x,
                       Policy(residual_gradient=0.25))
    np.testing.assert_allclose(grad, w * (1 + 3 * x ** 2), rtol=1e-5)


def test_linear_from_starts_after_the_marked_end_point(rng):
    x = rng.normal(size=(40,)).astype(np.float32)

    def f(v):
        points = backward.EndPoints()
        first = backward.relu(v)
        points["A"] = first
        return tf.reduce_sum(backward.relu(first - 0.5))

    _, grad = gradient(f, x, Policy(relu="linear", linear_from="A"))
    np.testing.assert_array_equal(grad, (x > 0).astype(np.float32))  # the first ReLU stays exact
    _, grad = gradient(f, x, Policy(relu="linear"))
    np.testing.assert_array_equal(grad, np.ones_like(x))
    _, grad = gradient(f, x, None)
    np.testing.assert_array_equal(grad, ((x > 0) & (x > 0.5)).astype(np.float32))


def numpy_softmax_pool_gradient(x, dy, kernel, stride, pad, t, pad_value=0.0):
    """Each window sends dy * softmax(t * window) to its cells (BPA); `pad` = ((top, bottom), (left, right))
    cells hold `pad_value` (BPA's unfold: 0)."""
    n, h, w, c = x.shape
    padded = np.pad(x, ((0, 0), pad[0], pad[1], (0, 0)), constant_values=pad_value)
    grad = np.zeros_like(padded)
    for i in range(dy.shape[1]):
        for j in range(dy.shape[2]):
            rows, cols = slice(i * stride, i * stride + kernel), slice(j * stride, j * stride + kernel)
            window = padded[:, rows, cols, :]
            e = np.exp((window - window.max(axis=(1, 2), keepdims=True)) * t)
            grad[:, rows, cols, :] += e / e.sum(axis=(1, 2), keepdims=True) * dy[:, i:i + 1, j:j + 1, :]
    return grad[:, pad[0][0]:pad[0][0] + h, pad[1][0]:pad[1][0] + w, :]


@pytest.mark.parametrize("kernel, stride, padding, pad", [(2, 2, "VALID", ((0, 0), (0, 0))),
                                                          (3, 2, "SAME", ((0, 1), (0, 1))),  # TF pads the odd cell at the end
                                                          (3, 1, "VALID", ((0, 0), (0, 0)))])
def test_softmax_max_pool_gradient(rng, kernel, stride, padding, pad):
    x = rng.normal(size=(2, 6, 6, 3)).astype(np.float32)
    exact_out = tf.nn.max_pool2d(x, kernel, stride, padding).numpy()
    dy = rng.normal(size=exact_out.shape).astype(np.float32)

    def f(v):
        return tf.reduce_sum(dy * backward.max_pool(v, kernel, stride, padding))

    _, grad = gradient(f, x, Policy(max_pool="softmax", max_pool_temperature=3.0))
    np.testing.assert_allclose(grad, numpy_softmax_pool_gradient(x, dy, kernel, stride, pad, 3.0), rtol=1e-4,
                               atol=1e-6)
    _, exact = gradient(f, x, None)  # the window's maximum takes it all: the softmax's t -> infinity limit
    np.testing.assert_allclose(exact, numpy_softmax_pool_gradient(x, dy, kernel, stride, pad, 1e6, -np.inf),
                               atol=1e-6)
    with backward.policy(Policy(max_pool="softmax")):
        np.testing.assert_array_equal(backward.max_pool(tf.constant(x), kernel, stride, padding).numpy(), exact_out)


@pytest.mark.parametrize("name", ["efficientnet_lite0", "resnet_v2_50", "inception_resnet_v2", "vgg_16"])
def test_forward_is_bit_identical_under_every_policy(name):
    model = tfattack.models.load(name, random_weights=True)
    x = tf.constant(np.random.default_rng(1).uniform(size=(2, model.image_size, model.image_size, 3)), tf.float32)
    exact = model(x).numpy()
    gradients = []
    for chosen in POLICIES:
        with backward.policy(chosen):
            with tf.GradientTape() as tape:
                tape.watch(x)
                logits = model(x)
                loss = tf.reduce_sum(logits[:, 3])
        np.testing.assert_array_equal(logits.numpy(), exact)
        gradients.append(tape.gradient(loss, x).numpy())
    assert all(np.all(np.isfinite(g)) for g in gradients)


def test_sgm_changes_the_gradient_of_a_residual_network_and_not_of_a_plain_one():
    def input_gradient(model, chosen):
        x = tf.constant(np.random.default_rng(2).uniform(size=(1, model.image_size, model.image_size, 3)), tf.float32)
        with backward.policy(chosen):
            with tf.GradientTape() as tape:
                tape.watch(x)
                loss = tf.reduce_sum(model(x)[:, 0])
        return tape.gradient(loss, x).numpy()

    resnet = tfattack.models.load("resnet_v2_50", random_weights=True)
    assert not np.allclose(input_gradient(resnet, Policy(residual_gradient=0.2)), input_gradient(resnet, None))
    vgg = tfattack.models.load("vgg_16", random_weights=True)
    np.testing.assert_array_equal(input_gradient(vgg, Policy(residual_gradient=0.2)), input_gradient(vgg, None))


def test_bad_policies_are_one_line():
    with pytest.raises(ValueError, match="relu must be one of exact, linear, silu"):
        Policy(relu="leaky")
    with pytest.raises(ValueError, match="residual_gradient must be >= 0"):
        Policy(residual_gradient=-1)
    with pytest.raises(ValueError, match="relu_temperature must be > 0"):
        Policy(relu="silu", relu_temperature=0)


def test_linbp_unit_rescales_the_linear_branch_gradient_to_the_exact_norm(rng):
    """unit(x) = x + relu(x W1) W2: the skip keeps dy; the branch sends lam * (|G_true| / |G_lin|) G_lin."""
    x = rng.normal(size=(3, 5)).astype(np.float32)
    w1 = rng.normal(size=(5, 7)).astype(np.float32)
    w2 = rng.normal(size=(7, 5)).astype(np.float32)
    dy = rng.normal(size=(3, 5)).astype(np.float32)

    def f(v):
        return tf.reduce_sum(dy * backward.residual_unit(v, lambda u: u, lambda u: backward.relu(u @ w1) @ w2))

    value, grad = gradient(f, x, Policy(relu="linear", renormalize=True, residual_gradient=0.5))
    assert value == gradient(f, x, None)[0]
    g_true = ((dy @ w2.T) * (x @ w1 > 0)) @ w1.T
    g_linear = (dy @ w2.T) @ w1.T
    ratio = np.linalg.norm(g_true, axis=1, keepdims=True) / np.linalg.norm(g_linear, axis=1, keepdims=True)
    np.testing.assert_allclose(grad, dy + 0.5 * ratio * g_linear, rtol=1e-4, atol=1e-6)
    # under any other policy the unit is a plain residual addition
    _, exact = gradient(f, x, None)
    np.testing.assert_allclose(exact, dy + g_true, rtol=1e-5, atol=1e-6)
