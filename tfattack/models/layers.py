"""TF-slim-compatible building blocks in plain TF2 (tf.nn), no legacy Keras.

A network is written as a function `forward(store, x) -> (logits, end_points)` that asks a
`VariableStore` for each variable by its *official checkpoint name* (relative to the model scope),
e.g. `store.get("Mixed_6b/Branch_1/Conv2d_0b_1x7/weights", shape)`. The first call (made eagerly by
`SlimNetwork` at construction) creates the variables in the order the official graph creates them;
every later call, traced or eager, only reads them. So the forward code is the single source of the
variable list, and the scope and end-point names stay visible in it as the contract with checkpoints.

Batch norm runs in inference mode from the checkpoint's moving statistics; it is folded into the
preceding convolution's weights on each call (a per-channel multiply of the kernel, cheap next to the
convolution), which is exactly slim's `y = (conv(x) - mean) * gamma / sqrt(var + eps) + beta`.

A network runs in the dtype of its input: given bfloat16 (or float16) activations, `SlimNetwork` hands
the forward function a view of the store whose variables are cast to that dtype on each call, so the
convolutions run in reduced precision (AVX-512 BF16 / AMX CPUs, TPUs and tensor-core GPUs compute them
about twice as fast) while the variables and the checkpoint stay float32.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import numpy as np
import tensorflow as tf

from tfattack import backward, edits


class VariableStore(tf.Module):
    """Variables of one network keyed by their checkpoint names relative to the top-level scope."""

    def __init__(self, scope: str, seed: int = 0, name: Optional[str] = None):
        super().__init__(name=name)
        self.scope = scope
        self.by_name = {}           # relative name -> tf.Variable, in creation order
        self._frozen = False
        self._rng = np.random.default_rng(seed)

    def get(self, name: str, shape: Sequence[int], init: str = "he") -> tf.Variable:
        shape = tuple(int(s) for s in shape)
        var = self.by_name.get(name)
        if var is not None:
            if tuple(var.shape) != shape:
                raise ValueError(f"{self.scope}/{name}: asked for shape {shape}, variable has {tuple(var.shape)}")
            return var
        if self._frozen:
            raise KeyError(f"{self.scope}/{name} was not created when the network was built")
        self.by_name[name] = tf.Variable(self._initial_value(shape, init), trainable=False,
                                         name=f"{self.scope}/{name}".replace(":", "_"))
        return self.by_name[name]

    def freeze(self):
        self._frozen = True

    def full_names(self):
        return {f"{self.scope}/{rel}": var for rel, var in self.by_name.items()}

    def _initial_value(self, shape, init):
        # Random but well-scaled, so that an unloaded net still gives finite, varied logits (tests and
        # speed benchmarks use such nets; real use always restores a checkpoint over them).
        if init == "zeros":
            return np.zeros(shape, np.float32)
        if init == "ones":
            return np.ones(shape, np.float32)
        if init == "he":
            fan_in = int(np.prod(shape[:-1])) if len(shape) > 1 else 1
            return (self._rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)
        if init == "small":
            return (self._rng.standard_normal(shape) * 0.05).astype(np.float32)
        raise ValueError(f"unknown initialiser {init!r}")


def batch_norm_multiplier_offset(gamma, beta, mean, variance, epsilon: float):
    """Batch norm with fixed statistics, (x - mean) / sqrt(variance + eps) * gamma + beta, as x * multiplier + offset;
    returns (multiplier, offset)."""
    multiplier = gamma * tf.math.rsqrt(variance + epsilon)
    return multiplier, beta - mean * multiplier


def inference_batch_norm(x, gamma, beta, mean, variance, epsilon: float):
    """Batch norm with fixed statistics as one multiply-add (for a batch norm that no convolution precedes)."""
    multiplier, offset = batch_norm_multiplier_offset(gamma, beta, mean, variance, epsilon)
    return x * multiplier + offset


def fold_into_kernel(kernel, multiplier, depthwise: bool = False):
    """The kernel K' with conv(x, K') = conv(x, K) * multiplier, up to float rounding: a per-output-channel scale
    after a convolution (an inference batch norm's) is the same convolution with each output channel's weights
    scaled. Folded, a batch norm costs no elementwise pass over the activations, forward or backward, and what is
    left of it, a bias add, oneDNN fuses into the convolution. A depthwise kernel [k, k, C, M] has output channel
    c * M + m at [:, :, c, m]."""
    return kernel * (tf.reshape(multiplier, kernel.shape[2:]) if depthwise else multiplier)


def batch_norm_scale_offset(store: VariableStore, name: str, channels: int, scale: bool, epsilon: float):
    """Returns (multiplier, offset) such that inference-mode BN(y) = y * multiplier + offset.

    Variables in slim's creation order: [gamma], beta, moving_mean, moving_variance (the official
    variable lists put gamma first where batch norm has a learned scale).
    """
    gamma = store.get(f"{name}/gamma", [channels], "ones") if scale else None
    beta = store.get(f"{name}/beta", [channels], "zeros")
    mean = store.get(f"{name}/moving_mean", [channels], "zeros")
    variance = store.get(f"{name}/moving_variance", [channels], "ones")
    return batch_norm_multiplier_offset(1.0 if gamma is None else gamma, beta, mean, variance, epsilon)


def batch_norm(store: VariableStore, x, name: str, *, scale: bool, epsilon: float,
               activation: Optional[Callable] = None):
    multiplier, offset = batch_norm_scale_offset(store, name, x.shape[-1], scale, epsilon)
    y = x * multiplier + offset
    return activation(y) if activation is not None else y


def conv2d(store: VariableStore, x, name: str, filters: int, kernel, stride: int = 1, *,
           padding: str = "SAME", rate: int = 1, batch_norm: bool = True, bn_scale: bool = False,
           bn_epsilon: float = 0.001, activation: Optional[Callable] = backward.relu):
    """slim.conv2d: weights [kh, kw, cin, cout]; BN (no biases) or biases; then the activation.

    `padding` is "SAME" or "VALID" with TensorFlow's semantics, as in slim.
    """
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    cin = x.shape[-1]
    weights = store.get(f"{name}/weights", [kh, kw, cin, filters], "he")
    if batch_norm:
        multiplier, offset = batch_norm_scale_offset(store, f"{name}/BatchNorm", filters, bn_scale, bn_epsilon)
        weights = fold_into_kernel(weights, multiplier)
    else:
        offset = store.get(f"{name}/biases", [filters], "zeros")
    y = tf.nn.conv2d(x, weights, strides=stride, padding=padding, dilations=rate)
    y = edits.layer_output(tf.nn.bias_add(y, offset))
    return activation(y) if activation is not None else y


def conv2d_same(store: VariableStore, x, name: str, filters: int, kernel: int, stride: int, **kwargs):
    """slim's resnet_utils.conv2d_same: explicit symmetric padding for stride > 1, then VALID."""
    if stride == 1:
        return conv2d(store, x, name, filters, kernel, 1, padding="SAME", **kwargs)
    pad_total = kernel - 1
    pad_beg = pad_total // 2
    pad_end = pad_total - pad_beg
    x = tf.pad(x, [[0, 0], [pad_beg, pad_end], [pad_beg, pad_end], [0, 0]])
    return conv2d(store, x, name, filters, kernel, stride, padding="VALID", **kwargs)


def max_pool(x, kernel: int, stride: int, padding: str = "VALID"):
    return backward.max_pool(x, kernel, stride, padding)


def avg_pool(x, kernel, stride: int, padding: str = "VALID"):
    # TensorFlow's SAME average pooling divides by the count of real (unpadded) inputs, as slim does.
    return tf.nn.avg_pool2d(x, kernel, stride, padding)


def global_avg_pool(x, keepdims: bool = True):
    return tf.reduce_mean(x, axis=[1, 2], keepdims=keepdims)


class CastingStore:
    """Read-only view of a frozen `VariableStore` handing out its variables cast to `dtype`."""

    def __init__(self, store: VariableStore, dtype):
        self.store, self.dtype = store, tf.as_dtype(dtype)

    def get(self, name: str, shape: Sequence[int], init: str = "he"):
        return tf.cast(self.store.get(name, shape, init), self.dtype)


# The activation dtypes a store-based network computes in (the input's dtype decides).
COMPUTE_DTYPES = ("float32", "bfloat16", "float16")


class SlimNetwork(tf.Module):
    """A TF-slim architecture whose variables carry the official checkpoint names.

    `forward(store, x)` returns `(logits, end_points)`; `end_points` maps slim's end-point names
    (e.g. "Mixed_7c", "AuxLogits", "Logits") to tensors. Construction runs `forward` once, eagerly, on
    a zero image to create the variables; `checkpoint.restore_slim` then fills them from a file.
    """

    differentiable = True
    compute_dtypes = COMPUTE_DTYPES

    def __init__(self, forward: Callable, scope: str, image_size: int, *, seed: int = 0,
                 name: Optional[str] = None):
        super().__init__(name=name or scope)
        self.scope = scope
        self.image_size = image_size
        self._forward = forward
        self.store = VariableStore(scope, seed=seed)
        forward(self.store, tf.zeros([1, image_size, image_size, 3]))
        self.store.freeze()

    def __call__(self, x):
        """`(logits, end_points)` in the dtype of `x` (float32, bfloat16 or float16)."""
        if x.dtype == tf.float32:
            return self._forward(self.store, x)
        if x.dtype.name not in self.compute_dtypes:
            raise ValueError(f"network {self.name!r} computes in {', '.join(self.compute_dtypes)}, got {x.dtype.name} input")
        return self._forward(CastingStore(self.store, x.dtype), x)

    @property
    def variables_by_name(self):
        """Full checkpoint name -> variable (official scope)."""
        return self.store.full_names()
