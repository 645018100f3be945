"""A batch norm after a convolution is folded into the convolution: same values and input gradients as the two ops
one after the other (up to float rounding), and no elementwise multiply left over the activations."""

import numpy as np
import pytest
import tensorflow as tf

import tfattack.models
from tfattack.models import feature_denoising, layers, torch_layers


def _store_with_statistics(seed=0):
    """A store whose batch-norm statistics are not the identity's (an unloaded store's are)."""
    store = layers.VariableStore("net", seed=seed)
    rng = np.random.default_rng(seed + 1)
    original_get = store.get

    def get(name, shape, init="he"):
        created = name not in store.by_name
        var = original_get(name, shape, init)
        if created and any(name.endswith(s) for s in (".weight", ".bias", ".running_mean", "/bn/gamma", "/bn/beta",
                                                      "/bn/mean/EMA")) and len(shape) == 1:
            var.assign(rng.normal(0.0, 0.5, shape).astype(np.float32))
        if created and name.endswith((".running_var", "/bn/variance/EMA")):
            var.assign(rng.uniform(0.2, 3.0, shape).astype(np.float32))
        return var

    store.get = get
    return store


def _unfolded_conv(store, x, name, filters, kernel, stride, padding, groups, bias, bn, epsilon):
    """The convolution, its bias and its batch norm as separate ops, from the same variables."""
    weights = store.by_name[f"{name}.weight"]
    padded, tf_padding = torch_layers._padded(x, padding)
    if groups == 1:
        y = tf.nn.conv2d(padded, weights, stride, tf_padding)
    else:
        y = torch_layers.grouped_conv2d(padded, weights, stride, groups)
    if bias:
        y = y + store.by_name[f"{name}.bias"]
    return torch_layers.batch_norm(store, y, bn, epsilon)


def _value_and_input_gradient(fn, x):
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = fn(x)
        weights = tf.random.stateless_normal(tf.shape(y), seed=[7, 8])  # a gradient that is not uniform
        loss = tf.reduce_sum(y * weights)
    return y.numpy(), tape.gradient(loss, x).numpy()


def _compare(folded, unfolded, x):
    y_folded, g_folded = _value_and_input_gradient(folded, x)
    y_unfolded, g_unfolded = _value_and_input_gradient(unfolded, x)
    scale = np.abs(y_unfolded).max()
    np.testing.assert_allclose(y_folded, y_unfolded, rtol=0, atol=1e-5 * scale)
    np.testing.assert_allclose(g_folded, g_unfolded, rtol=0, atol=1e-5 * np.abs(g_unfolded).max())
    assert np.abs(y_unfolded).max() > 0 and np.abs(g_unfolded).max() > 0


@pytest.mark.parametrize("kernel,stride,padding,groups,bias", [
    (3, 1, 1, 1, False), (3, 2, "SAME", 1, False), (1, 1, 0, 1, True), (3, 2, 1, 4, False), (7, 2, 3, 1, True)])
def test_conv2d_with_batch_norm_equals_the_two_ops(kernel, stride, padding, groups, bias):
    store = _store_with_statistics()
    x = tf.random.stateless_normal([2, 13, 11, 8], seed=[1, 2])
    args = ("conv", 12, kernel, stride, padding, groups)
    folded = lambda v: torch_layers.conv2d(store, v, *args, bias=bias, bn="bn", epsilon=1e-3)
    folded(x)  # creates the variables (conv weight, [bias], then the batch norm's, in the state dict's order)
    expected_order = ["conv.weight"] + (["conv.bias"] if bias else []) + [
        "bn.weight", "bn.bias", "bn.running_mean", "bn.running_var"]
    assert list(store.by_name) == expected_order
    _compare(folded, lambda v: _unfolded_conv(store, v, *args, bias, "bn", 1e-3), x)


@pytest.mark.parametrize("stride,padding", [(1, "SAME"), (2, "SAME"), (2, 1)])
def test_depthwise_conv2d_with_batch_norm_equals_the_two_ops(stride, padding):
    store = _store_with_statistics()
    x = tf.random.stateless_normal([2, 12, 12, 6], seed=[3, 4])
    folded = lambda v: torch_layers.depthwise_conv2d(store, v, "dw", 3, stride, padding, bn="bn", epsilon=1e-5)
    folded(x)

    def unfolded(v):
        padded, tf_padding = torch_layers._padded(v, padding)
        y = tf.nn.depthwise_conv2d(padded, store.by_name["dw.weight"], [1, stride, stride, 1], tf_padding)
        return torch_layers.batch_norm(store, y, "bn", 1e-5)

    _compare(folded, unfolded, x)


@pytest.mark.parametrize("groups", [1, 4])
def test_feature_denoising_conv_folds_tensorpacks_batch_norm(groups):
    store = _store_with_statistics()
    x = tf.random.stateless_normal([1, 9, 9, 8], seed=[5, 6])
    folded = lambda v: feature_denoising.conv(store, v, "res2/block0/conv1", 8, 3, 2, groups)
    folded(x)

    def unfolded(v):
        weights = store.by_name["res2/block0/conv1/W"]
        if groups == 1:
            y = tf.nn.conv2d(v, weights, 2, "SAME")
        else:
            y = torch_layers.grouped_conv2d(feature_denoising.same_padding(v, 3, 2), weights, 2, groups)
        multiplier, offset = feature_denoising.batch_norm_scale_offset(store, "res2/block0/conv1", 8)
        return y * multiplier + offset

    _compare(folded, unfolded, x)


def test_grouped_convolution_with_same_padding_is_refused():
    store = layers.VariableStore("net")
    with pytest.raises(ValueError, match="conv: grouped convolutions take symmetric padding"):
        torch_layers.conv2d(store, tf.zeros([1, 8, 8, 8]), "conv", 8, 3, 1, "SAME", groups=2)


@pytest.mark.parametrize("name", ["efficientnet_lite0", "tv_mobilenet_v2", "tv_resnet50", "tv_inception_v3",
                                  "tv_vgg16_bn"])
def test_no_batch_norm_multiply_is_left_over_the_activations(name):
    """Every batch norm of these networks follows a convolution: their traced forward pass has no elementwise
    multiply of feature maps (the input's normalisation, 3 channels, is not one)."""
    model = tfattack.models.load(name, random_weights=True)
    size = model.spec.image_size
    batch = 17  # feature maps have it first; kernels (scaled by the folding) do not
    graph = tf.function(model).get_concrete_function(tf.TensorSpec([batch, size, size, 3], tf.float32)).graph
    multiplies = [op.name for op in graph.get_operations()
                  if op.type == "Mul" and op.outputs[0].shape.rank == 4 and op.outputs[0].shape[0] == batch
                  and op.outputs[0].shape[-1] > 3]
    assert multiplies == []
