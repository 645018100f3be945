"""Grouped convolutions (ResNeXt, Visformer, the feature-denoising ResNeXt): TensorFlow has no CPU gradient for
them, `torch_layers.grouped_conv2d` supplies one; it must equal the gradient of the same convolution computed group
by group with ungrouped ops."""

import numpy as np
import pytest
import tensorflow as tf

from tfattack.models import torch_layers


def _group_by_group(x, kernel, stride, groups):
    """The grouped convolution as `groups` ordinary ones on channel slices (TensorFlow differentiates these)."""
    inputs = tf.split(x, groups, axis=-1)
    kernels = tf.split(kernel, groups, axis=-1)
    return tf.concat([tf.nn.conv2d(i, k, stride, "VALID") for i, k in zip(inputs, kernels)], axis=-1)


def _value_and_gradient(fn, x, cotangent_seed):
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = fn(x)
        loss = tf.reduce_sum(y * tf.random.stateless_normal(tf.shape(y), seed=cotangent_seed))
    return y.numpy(), tape.gradient(loss, x).numpy()


@pytest.mark.parametrize("size,kernel_size,stride,groups,channels_in,channels_out", [
    ((9, 9), 3, 1, 4, 8, 12), ((10, 11), 3, 2, 2, 4, 6), ((13, 12), 7, 2, 4, 8, 8), ((8, 8), 1, 2, 8, 16, 8),
    ((12, 9), 3, 3, 32, 64, 64), ((5, 6), 1, 1, 2, 4, 4)])
def test_grouped_input_gradient_equals_the_group_by_group_gradient(size, kernel_size, stride, groups, channels_in,
                                                                   channels_out):
    x = tf.random.stateless_normal([2, *size, channels_in], seed=[1, 2])
    kernel = tf.random.stateless_normal([kernel_size, kernel_size, channels_in // groups, channels_out], seed=[3, 4])
    y, dx = _value_and_gradient(lambda v: torch_layers.grouped_conv2d(v, kernel, stride, groups), x, [5, 6])
    y_ref, dx_ref = _value_and_gradient(lambda v: _group_by_group(v, kernel, stride, groups), x, [5, 6])
    np.testing.assert_allclose(y, y_ref, rtol=0, atol=1e-5 * np.abs(y_ref).max())
    np.testing.assert_allclose(dx, dx_ref, rtol=0, atol=1e-5 * np.abs(dx_ref).max())
    assert dx.shape == x.shape and np.abs(dx_ref).max() > 0


def test_grouped_input_gradient_in_a_traced_function_with_an_unknown_batch():
    kernel = tf.random.stateless_normal([3, 3, 2, 8], seed=[7, 8])

    @tf.function(input_signature=[tf.TensorSpec([None, 11, 11, 8])])
    def gradient(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(tf.square(torch_layers.grouped_conv2d(x, kernel, 2, 4)))
        return tape.gradient(loss, x)

    x = tf.random.stateless_normal([3, 11, 11, 8], seed=[9, 10])
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = tf.reduce_sum(tf.square(_group_by_group(x, kernel, 2, 4)))
    expected = tape.gradient(loss, x).numpy()
    np.testing.assert_allclose(gradient(x).numpy(), expected, rtol=0, atol=1e-5 * np.abs(expected).max())
