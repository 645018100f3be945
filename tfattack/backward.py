"""Backward policies: how an input gradient flows back through ReLUs, residual additions and max pools.

Model-related transfer attacks keep the surrogate's forward pass and change its backward pass:

  SGM (Wu et al. ICLR 2020)         the gradient through a residual block's residual branch is scaled by
                                    gamma < 1 (the skip connection's is not), favouring low-level features.
  LinBP (Guo et al. NeurIPS 2020)   from a chosen layer on, the ReLUs of residual branches back-propagate as
                                    the identity (derivative 1), and each such branch's input gradient is
                                    rescaled to the norm the exact backward would give it.
  BPA (Wang et al. NeurIPS 2023)    the ReLU's step derivative is replaced by t times SiLU's derivative,
                                    sigma(x) + x sigma(x) (1 - sigma(x)), and max pooling's one-hot
                                    derivative by softmax(t * window) over each pooling window.

Every native network (the slim ports, EfficientNet-Lite, the TF.js and TFLite rebuilds) calls the
primitives here instead of `tf.nn.relu`, `+` on a residual and `tf.nn.max_pool2d`. Under the default
policy they *are* those ops (nothing is wrapped, so graphs and numbers are unchanged); under another
policy, set for a trace with `with policy(Policy(...)):`, they are `tf.custom_gradient` functions whose
forward value is the same op on the same inputs, bit for bit, and whose backward follows the policy.

The policy is read when a network is traced, so an attack sets it inside its own `tf.function`.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import threading
from typing import Callable, Iterator, Optional, Tuple

import tensorflow as tf

from tfattack import edits

RELU_MODES = ("exact", "linear", "silu")
MAX_POOL_MODES = ("exact", "softmax")


@dataclasses.dataclass(frozen=True)
class Policy:
    """How the primitives back-propagate (the defaults are plain autodiff).

    residual_gradient: factor on the gradient into the residual branch of blocks whose shortcut is the
      identity (SGM's gamma; the official code leaves the blocks with a projection shortcut alone); the
      skip path keeps 1.
    relu: "exact" (step derivative), "linear" (derivative 1: LinBP) or "silu" (relu_temperature times the
      derivative of SiLU, sigma(x) + x sigma(x) (1 - sigma(x)): BPA).
    relu_temperature: BPA's factor t on that derivative (its code's "temperature", default 1).
    linear_from: with relu="linear" or "silu", end points (names the networks mark, e.g. slim's
      "resnet_v2_50/block3/unit_1/bottleneck_v2"; one per family of an ensemble) after which, in each
      network's forward order, ReLUs follow `relu`; the ones before stay exact. Empty: every ReLU.
    max_pool: "exact" (the gradient goes to the window's maximum) or "softmax" (spread over the window
      with weights softmax(max_pool_temperature * window): BPA; padding cells enter as 0, as in its code).
    max_pool_temperature: BPA's t in that softmax (10 for ResNet-50's stem pool in its code).
    renormalize: LinBP's rescaling, in `residual_unit`s where the policy's ReLU mode is active: the branch's
      input gradient G_lin (linear ReLUs) becomes (||G_true|| / ||G_lin||) G_lin per image, G_true being the
      exact backward's; with it, the ReLUs outside residual branches stay exact.
    """

    residual_gradient: float = 1.0
    relu: str = "exact"
    relu_temperature: float = 1.0
    linear_from: Tuple[str, ...] = ()
    max_pool: str = "exact"
    max_pool_temperature: float = 1.0
    renormalize: bool = False

    def __post_init__(self):
        if isinstance(self.linear_from, str):
            object.__setattr__(self, "linear_from", (self.linear_from,))
        object.__setattr__(self, "linear_from", tuple(self.linear_from or ()))
        if self.relu not in RELU_MODES:
            raise ValueError(f"backward policy: relu must be one of {', '.join(RELU_MODES)}, got {self.relu!r}")
        if self.max_pool not in MAX_POOL_MODES:
            raise ValueError(f"backward policy: max_pool must be one of {', '.join(MAX_POOL_MODES)}, "
                             f"got {self.max_pool!r}")
        if not self.residual_gradient >= 0:
            raise ValueError(f"backward policy: residual_gradient must be >= 0, got {self.residual_gradient}")
        for name in ("relu_temperature", "max_pool_temperature"):
            if not getattr(self, name) > 0:
                raise ValueError(f"backward policy: {name} must be > 0, got {getattr(self, name)}")

    @property
    def is_exact(self) -> bool:
        return self == Policy()


EXACT = Policy()


class _TraceState(threading.local):
    def __init__(self):
        self.policy = EXACT
        self.relu_active = True   # False until `linear_from` has been passed in this forward
        self.marked = []          # end points seen in this forward (for the error when linear_from never shows)
        self.counts = None        # primitive -> calls, while `counting()`


_STATE = _TraceState()


@contextlib.contextmanager
def policy(chosen: Optional[Policy]) -> Iterator[Policy]:
    """Networks traced inside this block back-propagate by `chosen` (None: the exact policy)."""
    chosen = chosen or EXACT
    saved = (_STATE.policy, _STATE.relu_active, _STATE.marked)
    _STATE.policy, _STATE.relu_active, _STATE.marked = chosen, not chosen.linear_from, []
    try:
        yield chosen
    finally:
        _STATE.policy, _STATE.relu_active, _STATE.marked = saved


@contextlib.contextmanager
def counting() -> Iterator[collections.Counter]:
    """Counts the primitives ("relu", "residual_add", "dense_concat", "residual_unit", "max_pool") a forward pass
    inside the block calls: what a policy can act on in that network."""
    saved, _STATE.counts = _STATE.counts, collections.Counter()
    try:
        yield _STATE.counts
    finally:
        _STATE.counts = saved


def count(kind: str) -> None:
    """Counts one call of a primitive `kind` while `counting()` (also `tfattack.edits`' layer outputs)."""
    if _STATE.counts is not None:
        _STATE.counts[kind] += 1


def begin_forward() -> None:
    """Called as a network's forward starts: each member of an ensemble reaches its own `linear_from`."""
    _STATE.relu_active = not _STATE.policy.linear_from


def current() -> Policy:
    return _STATE.policy


def mark(name: str) -> None:
    """Called by a network as its forward pass reaches the end point `name`: LinBP starts after it."""
    _STATE.marked.append(name)
    if name in _STATE.policy.linear_from:
        _STATE.relu_active = True


class EndPoints(dict):
    """A network's end-point dict: storing an end point marks it (`mark`), in forward order, under the name
    the network finally reports it by (`prefix` + key, e.g. slim ResNet's "resnet_v2_50/" + "block3")."""

    def __init__(self, prefix: str = ""):
        super().__init__()
        self.prefix = prefix

    def __setitem__(self, name, value):
        mark(self.prefix + name)
        super().__setitem__(name, value)


def marked() -> list:
    """The end points the last forward under the current policy marked, in order."""
    return list(_STATE.marked)


# --- ReLU -------------------------------------------------------------------------------------------


def _relu_mode() -> str:
    chosen = _STATE.policy
    if chosen.renormalize:  # LinBP: residual_unit linearises its branches itself; every other ReLU stays exact
        return "exact"
    return chosen.relu if chosen.relu != "exact" and _STATE.relu_active else "exact"


def _relu_derivative(x, mode: str, temperature: float, upper=None):
    """d relu / dx under `mode`, in x's dtype; `upper` caps it (ReLU6: derivative 0 above 6, as the op's)."""
    if mode == "linear":
        slope = tf.ones_like(x)
    else:  # silu: t * d/dx (x sigmoid(x))
        sigma = tf.sigmoid(x)
        slope = tf.cast(temperature, x.dtype) * (sigma + x * sigma * (1 - sigma))
    if upper is not None:
        slope = slope * tf.cast(x < upper, x.dtype)
    return slope


def _custom_relu(op, x, mode: str, temperature: float, upper=None):
    @tf.custom_gradient
    def wrapped(inputs):
        def backward(dy):
            return dy * _relu_derivative(inputs, mode, temperature, upper)
        return op(inputs), backward
    return wrapped(x)


def relu(x, name: Optional[str] = None):
    """`tf.nn.relu(x)`, back-propagating by the current policy."""
    count("relu")
    mode = _relu_mode()
    if mode == "exact":
        return tf.nn.relu(x, name=name)
    return _custom_relu(tf.nn.relu, x, mode, _STATE.policy.relu_temperature)


def relu6(x, name: Optional[str] = None):
    """`tf.nn.relu6(x)`; the policy replaces the derivative at 0, and keeps it 0 above 6 where the op is flat."""
    count("relu")
    mode = _relu_mode()
    if mode == "exact":
        return tf.nn.relu6(x, name=name)
    return _custom_relu(tf.nn.relu6, x, mode, _STATE.policy.relu_temperature, upper=6.0)


# --- residual additions -----------------------------------------------------------------------------


def residual_add(shortcut, residual, projected: bool = False):
    """`shortcut + residual` of a residual block; the policy's `residual_gradient` scales the residual
    branch's gradient (SGM), the skip connection's is untouched. `projected`: the shortcut is a convolution
    (not the identity), and SGM leaves the block alone, as its official code does."""
    count("residual_add")
    shortcut = edits.residual_skip(shortcut)  # ghost networks erode it; unchanged without an edit
    gamma = _STATE.policy.residual_gradient
    if gamma == 1.0 or projected:
        return shortcut + residual

    @tf.custom_gradient
    def wrapped(skip, branch):
        def backward(dy):
            return dy, dy * tf.cast(gamma, dy.dtype)
        return skip + branch, backward

    return wrapped(shortcut, residual)


def dense_concat(features, new):
    """`concat([features, new], -1)` of a densely connected layer (DenseNet): `new` is the layer's branch, computed
    from `features`, which pass on unchanged as its skip. The policy's `residual_gradient` scales the branch's
    gradient, the skip's is untouched: SGM on DenseNets, whose official code decays the gradient through both ReLUs
    of every dense layer by sqrt(gamma) each (and once more at the stem, a constant factor)."""
    count("dense_concat")
    gamma = _STATE.policy.residual_gradient
    if gamma == 1.0:
        return tf.concat([features, new], axis=-1)
    kept = features.shape[-1]

    @tf.custom_gradient
    def wrapped(skip, branch):
        def backward(dy):
            return dy[..., :kept], dy[..., kept:] * tf.cast(gamma, dy.dtype)
        return tf.concat([skip, branch], axis=-1), backward

    return wrapped(features, new)


def residual_unit(x, shortcut_fn: Callable, branch_fn: Callable, projected: bool = False):
    """`shortcut_fn(x) + branch_fn(x)`, one residual unit whose branch is a function of its input, so that LinBP can
    take the branch's gradient twice. Under any policy but LinBP's this is `residual_add(shortcut_fn(x),
    branch_fn(x))`: same ops, same order (the shortcut first, as slim creates its variables)."""
    count("residual_unit")
    chosen = _STATE.policy
    linbp = chosen.renormalize and chosen.relu != "exact" and _STATE.relu_active
    if not linbp:
        return residual_add(shortcut_fn(x), branch_fn(x), projected)
    count("residual_add")
    gamma = chosen.residual_gradient
    exact_branch = dataclasses.replace(chosen, relu="exact", linear_from=(), residual_gradient=1.0, renormalize=False)
    linear_branch = dataclasses.replace(chosen, linear_from=(), residual_gradient=1.0, renormalize=False)

    @tf.custom_gradient
    def unit(inputs):
        output = shortcut_fn(inputs) + branch_fn(inputs)

        def backward(dy, variables=None):
            with tf.GradientTape(persistent=True) as tape:
                tape.watch(inputs)
                skip = shortcut_fn(inputs)
                with policy(exact_branch):
                    true_branch = branch_fn(inputs)
                with policy(linear_branch):
                    linear_branch_out = branch_fn(inputs)
            through_skip = tape.gradient(skip, inputs, output_gradients=dy)
            g_true = tape.gradient(true_branch, inputs, output_gradients=dy)
            g_linear = tape.gradient(linear_branch_out, inputs, output_gradients=dy)
            axes = list(range(1, g_linear.shape.rank))

            def norm(tensor):  # per image, over all of its axes
                return tf.sqrt(tf.reduce_sum(tf.square(tensor), axis=axes, keepdims=True))

            ratio = tf.math.divide_no_nan(norm(g_true), norm(g_linear))
            # Weights get no gradient: attacks only need the input's.
            return through_skip + tf.cast(gamma, dy.dtype) * ratio * g_linear, [None] * len(variables or [])
        return output, backward

    return unit(x)


# --- max pooling ------------------------------------------------------------------------------------


def _pair(value):
    return (int(value), int(value)) if isinstance(value, (int, float)) else tuple(int(v) for v in value)


def max_pool(x, kernel, stride, padding: str = "VALID"):
    """`tf.nn.max_pool2d` (kernel and stride an int or a pair); with max_pool="softmax" the gradient of each
    window is spread over its inputs with weights softmax(t * window) instead of going to the maximum
    alone (BPA)."""
    count("max_pool")
    chosen = _STATE.policy
    if chosen.max_pool == "exact":
        return tf.nn.max_pool2d(x, kernel, stride, padding)
    kernel, stride, temperature = _pair(kernel), _pair(stride), chosen.max_pool_temperature

    @tf.custom_gradient
    def wrapped(inputs):
        def backward(dy):
            # Each window sends dy * softmax(t * window) to its inputs (overlapping windows add up):
            # the gradient of sum_window stop(softmax(t * w)) * w, taken through extract_patches, whose
            # gradient is that scatter-add back onto the input grid.
            with tf.GradientTape() as tape:
                tape.watch(inputs)
                windows = _windows(inputs, kernel, stride, padding)           # [N, H', W', kh*kw, C]
                weights = tf.stop_gradient(tf.nn.softmax(windows * tf.cast(temperature, inputs.dtype), axis=3))
                pooled = tf.reduce_sum(weights * windows, axis=3)
            return tape.gradient(pooled, inputs, output_gradients=dy)
        return tf.nn.max_pool2d(inputs, kernel, stride, padding), backward

    return wrapped(x)


def _windows(x, kernel, stride, padding: str):
    """[N, H', W', kh*kw, C] pooling windows of x (SAME pads with zeros, which take their share of the softmax
    as BPA's unfold does; their gradient is dropped)."""
    channels = x.shape[-1]
    if padding == "SAME":
        x = _pad_same(x, kernel, stride)
    patches = tf.image.extract_patches(x, [1, kernel[0], kernel[1], 1], [1, stride[0], stride[1], 1], [1, 1, 1, 1],
                                       "VALID")
    shape = tf.shape(patches)
    return tf.reshape(patches, [shape[0], shape[1], shape[2], kernel[0] * kernel[1], channels])


def _pad_same(x, kernel, stride):
    pads = []
    for size, k, s in zip((x.shape[1], x.shape[2]), kernel, stride):
        out = -(-size // s)
        total = max((out - 1) * s + k - size, 0)
        pads.append([total // 2, total - total // 2])
    return tf.pad(x, [[0, 0], pads[0], pads[1], [0, 0]])
