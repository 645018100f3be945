"""Quantised TFLite classifiers in two forms: a differentiable float rebuild and the exact interpreter.

- `TFLiteFloatNetwork` (source "tflite_float"): the graph of a uint8/int8-quantised classifier rebuilt
  with `tf.nn`, differentiable, in one of three arithmetics (`arithmetic=`). Its gradient is always
  the float graph's: weights dequantised (per channel where the file says so; int32 biases with scale
  input_scale * weight_scale), each op in float, its result clamped to the real range its quantised
  output tensor can represent, `scale * (q_min - zero_point) .. scale * (q_max - zero_point)`, as the
  integer kernels saturate (fused ReLU/ReLU6 included). The forward pass differs:
  - "integer" (what the registered records use): CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED, ADD,
    AVERAGE_POOL_2D and QUANTIZE compute TFLite's integer kernels exactly (int32 accumulators, the
    fixed-point requantisation with its rounding), every other op runs in float rounded to its output
    grid; each exact result replaces the float one through a straight-through gradient
    (`y + stop_gradient(exact - y)`). On the four Coral MobileNets the logits equal the interpreter's
    bit for bit (all 1000 NIPS'17 DEV images: 0 steps apart, top-1 agreement 100 %);
  - "grid": every op in float, its output rounded to its quantisation grid (straight-through): within
    a few steps of the interpreter (up to 9; requantisation rounds differently now and then), top-1
    agreement 94.5-97.5 % on the first 200 DEV images;
  - "float": every op in float, only clamped: further off still (up to 25 steps).
  Figures: scripts/tflite_agreement.py. See the "integer arithmetic" section below and
  tests/test_models_tflite.py.
- `TFLiteInterpreterNetwork` (source "tflite_interpreter"): the file itself through LiteRT's interpreter
  (`ai_edge_litert`; `tf.lite.Interpreter` where LiteRT is not installed, see `interpreter_classes`),
  TFLite's built-in kernels without the XNNPACK delegate so that intermediate tensors can be read, a
  BLACK BOX: `differentiable = False` and asking for its gradient raises `NotDifferentiableError`.

Both take 0..255 pixel values (preprocessing "pixels": the Classifier resizes, then multiplies by 255)
and map them to the graph's input exactly as a camera byte would be: a uint8 input tensor holds the
pixel (int8: pixel - 128) and means `scale * (q - zero_point)`; the interpreter form rounds the pixel
first (round(x * 255) of the [0, 1] image), so it sees what an 8-bit PNG holds.

Logits: the classifiers end in SOFTMAX (then maybe reshape/quantize ops); both forms return the
dequantised INPUT of that softmax (times its beta), i.e. the pre-softmax logits in the file's 1001-class
space, 0 = background.
"""

from __future__ import annotations

import threading
import warnings
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import tensorflow as tf

from tfattack import backward, edits
from tfattack.models import loading, registry
from tfattack.models.checkpoint import naming_model
from tfattack.models.registry import ModelSpec
from tfattack.models.tflite_reader import Operator, Tensor, TFLiteFormatError, TFLiteModel, read_tflite

# Integer ranges of the quantised activation types (TensorType codes).
QUANTIZED_RANGES = {3: (0, 255), 9: (-128, 127), 7: (-32768, 32767)}
UINT8, INT8 = 3, 9
# Ops that only move values between the softmax and the graph output.
PASS_THROUGH = ("RESHAPE", "SQUEEZE", "QUANTIZE", "DEQUANTIZE")


class UnsupportedOpError(TFLiteFormatError):
    """The graph holds an op the float rebuild does not implement."""


class NotDifferentiableError(ValueError):
    """A gradient was asked of a black-box model (the TFLite interpreter)."""


# --- graph facts shared by both forms ------------------------------------------------------------


def find_logits(model: TFLiteModel) -> Tuple[int, float, Optional[Operator]]:
    """(tensor index of the logits, softmax beta, the softmax op) of a one-input, one-output classifier.

    Walks back from the output through RESHAPE/SQUEEZE/(DE)QUANTIZE; a SOFTMAX found there is dropped
    and its input is the logits. A graph without one is taken to output logits already (beta 1).
    """
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise TFLiteFormatError(f"{model.path}: a classifier has one input and one output, the graph has "
                                f"{len(model.inputs)} and {len(model.outputs)}")
    producer = {out: op for op in model.operators for out in op.outputs}
    tensor = model.outputs[0]
    while tensor in producer:
        op = producer[tensor]
        if op.name == "SOFTMAX":
            return op.inputs[0], float(op.options.get("beta") or 1.0), op
        if op.name not in PASS_THROUGH:
            break
        tensor = op.inputs[0]
    return model.outputs[0], 1.0, None


def dequantize(tensor: Tensor, values: np.ndarray) -> np.ndarray:
    """Real values of a quantised array (per tensor or per channel), float32; floats pass through."""
    values = np.asarray(values)
    if tensor.quantization is None or values.dtype.kind == "f":
        return values.astype(np.float32)
    q = tensor.quantization
    rank = values.ndim
    return ((values.astype(np.float64) - q.broadcast(q.zero_point, rank)) * q.broadcast(q.scale.astype(np.float64), rank)
            ).astype(np.float32)


def representable_range(tensor: Tensor) -> Optional[Tuple[float, float]]:
    """The real interval a per-tensor quantised activation can hold (None for float tensors)."""
    q = tensor.quantization
    if q is None or not q.per_tensor or tensor.type_code not in QUANTIZED_RANGES:
        return None
    low, high = QUANTIZED_RANGES[tensor.type_code]
    scale, zero_point = float(q.scale[0]), float(q.zero_point[0])
    return scale * (low - zero_point), scale * (high - zero_point)


def pixel_offset(model: TFLiteModel) -> float:
    """What to subtract from a 0..255 pixel to get the graph's quantised input value."""
    tensor = model.tensors[model.inputs[0]]
    if tensor.type_code in (UINT8, INT8) and (tensor.quantization is None or not tensor.quantization.per_tensor):
        raise TFLiteFormatError(f"{model.path}: input tensor {tensor.name!r} has no per-tensor quantisation")
    if tensor.type_code == UINT8:
        return 0.0
    if tensor.type_code == INT8:
        return 128.0
    raise TFLiteFormatError(f"{model.path}: input tensor {tensor.name!r} is not uint8/int8 (type code "
                            f"{tensor.type_code}); only quantised camera-input classifiers are supported")


# --- the float rebuild ---------------------------------------------------------------------------

FUSED_ACTIVATIONS = {
    0: tf.identity,                                    # NONE
    1: backward.relu,                                     # RELU
    2: lambda x: tf.clip_by_value(x, -1.0, 1.0),       # RELU_N1_TO_1
    3: backward.relu6,                                    # RELU6
    4: tf.math.tanh,                                   # TANH
}


class _OpContext:
    """What an op builder may ask: its options, its constant inputs (dequantised) and tensor facts."""

    def __init__(self, model: TFLiteModel, op: Operator):
        self.model, self.op, self.options = model, op, op.options

    def error(self, message: str) -> TFLiteFormatError:
        return TFLiteFormatError(f"{self.model.path}: op {self.op.index} ({self.op.name}): {message}")

    def tensor(self, position: int, outputs: bool = False) -> Tensor:
        return self.model.tensors[(self.op.outputs if outputs else self.op.inputs)[position]]

    def has_input(self, position: int) -> bool:
        return position < len(self.op.inputs) and self.op.inputs[position] >= 0

    def constant(self, position: int) -> np.ndarray:
        tensor = self.tensor(position)
        if tensor.data is None:
            raise self.error(f"input {position} ({tensor.name!r}) must be a constant")
        return dequantize(tensor, tensor.data)

    def raw_constant(self, position: int) -> np.ndarray:
        tensor = self.tensor(position)
        if tensor.data is None:
            raise self.error(f"input {position} ({tensor.name!r}) must be a constant")
        return tensor.data

    def bias(self, position: int, channels: int):
        """An optional bias input; int32 biases without a scale of their own get input_scale * weight_scale."""
        if not self.has_input(position):
            return tf.zeros([channels])
        tensor = self.tensor(position)
        if tensor.quantization is None and tensor.data is not None and tensor.data.dtype.kind == "i":
            inputs, weights = self.tensor(0).quantization, self.tensor(1).quantization
            if inputs is None or weights is None:
                raise self.error(f"integer bias {tensor.name!r} has no scale and cannot be derived")
            return tf.constant(tensor.data * (inputs.scale[0] * weights.scale).astype(np.float32), tf.float32)
        return tf.constant(self.constant(position))

    def fused_activation(self) -> Callable:
        code = self.options.get("fused_activation_function", 0)
        if code not in FUSED_ACTIVATIONS:
            raise self.error(f"unsupported fused activation {code}")
        return FUSED_ACTIVATIONS[code]

    def padding(self) -> str:
        return "SAME" if self.options.get("padding", 0) == 0 else "VALID"

    def output_shape(self) -> List[int]:
        """The output's static shape with the batch dimension left free (files are built for batch 1)."""
        return [-1, *self.tensor(0, outputs=True).shape[1:]]


def _conv_2d(ctx):
    kernel = tf.constant(np.transpose(ctx.constant(1), (1, 2, 3, 0)))   # [O, H, W, I] -> [H, W, I, O]
    bias, activation = ctx.bias(2, kernel.shape[-1]), ctx.fused_activation()
    strides = [ctx.options["stride_h"], ctx.options["stride_w"]]
    dilations = [ctx.options["dilation_h_factor"], ctx.options["dilation_w_factor"]]
    padding = ctx.padding()
    return lambda x: activation(edits.layer_output(
        tf.nn.bias_add(tf.nn.conv2d(x[0], kernel, strides, padding, dilations=dilations), bias)))


def _depthwise_conv_2d(ctx):
    weights = ctx.constant(1)                                            # [1, H, W, I * M]
    channels_in = ctx.tensor(0).shape[-1]
    multiplier = weights.shape[-1] // channels_in                        # output channel c = i * M + m
    kernel = tf.constant(weights.reshape(weights.shape[1], weights.shape[2], channels_in, multiplier))
    bias, activation = ctx.bias(2, weights.shape[-1]), ctx.fused_activation()
    strides = [1, ctx.options["stride_h"], ctx.options["stride_w"], 1]
    dilations = [ctx.options["dilation_h_factor"], ctx.options["dilation_w_factor"]]
    padding = ctx.padding()
    return lambda x: activation(edits.layer_output(tf.nn.bias_add(
        tf.nn.depthwise_conv2d(x[0], kernel, strides, padding, dilations=dilations), bias)))


def _fully_connected(ctx):
    weights = tf.constant(ctx.constant(1).T)                             # [O, I] -> [I, O]
    bias, activation = ctx.bias(2, weights.shape[-1]), ctx.fused_activation()
    if ctx.options.get("weights_format", 0) != 0:
        raise ctx.error("only the DEFAULT weights format is supported")
    keep_dims = ctx.options.get("keep_num_dims", False)

    def apply(x):
        inputs = x[0] if keep_dims else tf.reshape(x[0], [-1, weights.shape[0]])
        return activation(edits.layer_output(tf.tensordot(inputs, weights, axes=1) + bias))
    return apply


def _elementwise(combine):
    def build(ctx):
        activation = ctx.fused_activation()
        return lambda x: activation(combine(x[0], x[1]))
    return build


def _pool(pool):
    def build(ctx):
        size = [ctx.options["filter_height"], ctx.options["filter_width"]]
        strides = [ctx.options["stride_h"], ctx.options["stride_w"]]
        padding, activation = ctx.padding(), ctx.fused_activation()
        # TFLite's SAME average pooling divides by the count of in-bounds inputs, as tf.nn.avg_pool2d does.
        return lambda x: activation(pool(x[0], size, strides, padding))
    return build


def _mean(ctx):
    axes = [int(a) for a in np.atleast_1d(ctx.raw_constant(1))]
    keep_dims = bool(ctx.options.get("keep_dims", False))
    return lambda x: tf.reduce_mean(x[0], axis=axes, keepdims=keep_dims)


def _reshape(ctx):
    shape = ctx.output_shape()
    return lambda x: tf.reshape(x[0], shape)


def _softmax(ctx):
    beta = float(ctx.options.get("beta") or 1.0)
    return lambda x: tf.nn.softmax(beta * x[0])


def _concatenation(ctx):
    axis, activation = int(ctx.options.get("axis", 0)), ctx.fused_activation()
    return lambda x: activation(tf.concat(x, axis=axis))


def _pad(ctx):
    # A quantised PAD fills with the zero point, which means real 0.
    paddings = ctx.raw_constant(1).astype(np.int32).tolist()
    return lambda x: tf.pad(x[0], paddings)


def _unary(function):
    return lambda ctx: (lambda x: function(x[0]))


def _hard_swish(x):
    return x * tf.nn.relu6(x + 3.0) / 6.0


# TFLite op name -> builder(ctx) -> apply(list of input tensors, constants included) -> output.
OP_BUILDERS: Dict[str, Callable] = {
    "CONV_2D": _conv_2d,
    "DEPTHWISE_CONV_2D": _depthwise_conv_2d,
    "FULLY_CONNECTED": _fully_connected,
    "ADD": _elementwise(tf.add),
    "SUB": _elementwise(tf.subtract),
    "MUL": _elementwise(tf.multiply),
    "AVERAGE_POOL_2D": _pool(tf.nn.avg_pool2d),
    "MAX_POOL_2D": _pool(backward.max_pool),
    "MEAN": _mean,
    "RESHAPE": _reshape,
    "SQUEEZE": _reshape,
    "SOFTMAX": _softmax,
    "CONCATENATION": _concatenation,
    "PAD": _pad,
    "QUANTIZE": _unary(tf.identity),     # requantisation: only the output clamp remains in float
    "DEQUANTIZE": _unary(tf.identity),
    "HARD_SWISH": _unary(_hard_swish),
    "LOGISTIC": _unary(tf.math.sigmoid),
    "TANH": _unary(tf.math.tanh),
    "RELU": _unary(backward.relu),
    "RELU6": _unary(backward.relu6),
}

# Inputs that are read as raw integers by the builder (shapes, axes, paddings), not fed as tensors.
_STRUCTURAL_INPUTS = {"RESHAPE": 1, "MEAN": 1, "PAD": 1, "CONV_2D": 1, "DEPTHWISE_CONV_2D": 1, "FULLY_CONNECTED": 1}


def _fold_constant_dequantize(model: TFLiteModel):
    """Float16/int8 weights stored through a DEQUANTIZE op become float constants of its output."""
    for op in model.operators:
        source = model.tensors[op.inputs[0]] if op.inputs else None
        if op.name == "DEQUANTIZE" and source is not None and source.data is not None:
            model.tensors[op.outputs[0]].data = dequantize(source, source.data)


# --- integer arithmetic: TFLite's quantised kernels, emulated exactly --------------------------------
#
# With arithmetic="integer" the ops in INTEGER_BUILDERS compute what TFLite's integer kernels compute,
# bit for bit, and keep the float graph's gradient. Values enter as the integers q - zero_point
# (rounded with a straight-through gradient); convolutions sum integer products, exact in float32 when
# every partial sum stays below 2**24 (else they run in float64); the rescaling to the output's grid is
# the kernels' fixed-point multiply, done in int64 without gradient and added to its real-valued twin
# (acc * real multiplier, clamped), so that the backward pass sees d(out)/d(acc) = real multiplier
# inside the activation bounds and 0 outside: the float rebuild's Jacobian.

_EXACT_FLOAT32 = 2 ** 24   # integers up to this add exactly in float32, whatever the order


class _NoIntegerForm(Exception):
    """This op (or this use of it) is not emulated in integers; it runs in float, rounded to the grid."""


def quantize_multiplier(real: float) -> Tuple[int, int]:
    """`real` as (q, shift) with real ~= q * 2**(shift - 31), q a Q31 value in [2**30, 2**31).

    The significand is rounded half away from zero (C's round), as TFLite's QuantizeMultiplier does.
    """
    if real <= 0.0:
        if real == 0.0:
            return 0, 0
        raise ValueError(f"negative multiplier {real}")
    fraction, shift = np.frexp(real)
    q = int(np.floor(fraction * 2.0 ** 31 + 0.5))
    if q == 2 ** 31:
        q, shift = q // 2, shift + 1
    if shift < -31:
        return 0, 0
    return q, int(shift)


def _multipliers(reals) -> Tuple[np.ndarray, np.ndarray]:
    """`quantize_multiplier` over an array: (q, shift) as int64 arrays."""
    pairs = [quantize_multiplier(float(r)) for r in np.atleast_1d(reals)]
    return np.array([p[0] for p in pairs], np.int64), np.array([p[1] for p in pairs], np.int64)


def multiply_by_quantized_multiplier(x, q, shift, ties_away=True):
    """TFLite's fixed-point rescaling of int64 `x` (int32 range) by q * 2**(shift - 31), in int64.

    A left shift (for shift > 0), then gemmlowp's rounding doubling high multiply (x * q / 2**31 to
    nearest with its nudge and truncating division, which works out as ties upward:
    (x * q + 2**30) >> 31), then a rounding right shift by -shift. That last rounding breaks ties away
    from zero in the reference kernels (gemmlowp's RoundingDivideByPOT; ADD and requantise here) but
    upward in the optimised x86 kernels that TF's interpreter runs for CONV_2D, DEPTHWISE_CONV_2D and
    FULLY_CONNECTED (`ties_away=False`): both found op by op against the interpreter of TF 2.21 on the
    Coral files and the int8 test model (the two differ only on negative exact halves). Shifts rather
    than divisions: TF's int64 division is slow. `q`, `shift` (int64) broadcast against `x` (per
    channel on the last axis).
    """
    one = tf.ones_like(shift)
    right = tf.maximum(-shift, 0)
    x = x * tf.bitwise.left_shift(one, tf.maximum(shift, 0))
    high = tf.bitwise.right_shift(x * q + 2 ** 30, tf.constant(31, tf.int64))
    offset = tf.bitwise.right_shift(tf.bitwise.left_shift(one, right), one)   # half the divisor, 0 for none
    if ties_away:  # a negative exact half rounds down: high >> 63 is -1 for negative values
        offset = offset + tf.bitwise.right_shift(high, tf.constant(63, tf.int64)) * tf.minimum(right, 1)
    return tf.bitwise.right_shift(high + offset, right)


# The int64 arithmetic below runs under XLA: op by op, TF makes one pass over the tensor per int64 op
# (about ten per requantisation), XLA fuses them into one loop, which halves the forward time of
# MobileNetV2. Compiled once per input shape; gradient-free (callers stop the gradient).

@tf.function(jit_compile=True, reduce_retracing=True)
def _rescale_exact(acc, q, shift, bounds, ties_away):
    """Integer-valued `acc` (any float or int dtype) -> MultiplyByQuantizedMultiplier(acc) clamped to
    `bounds` (int64 [low, high]), same dtype."""
    out = multiply_by_quantized_multiplier(tf.cast(acc, tf.int64), q, shift, ties_away)
    return tf.cast(tf.clip_by_value(out, bounds[0], bounds[1]), acc.dtype)


@tf.function(jit_compile=True, reduce_retracing=True)
def _add_exact(n1, n2, q, shift, bounds):
    """TFLite's quantised ADD on integers n = q - zero_point: both inputs rescaled (multiplier 0, 1) to a
    common fixed-point scale with 20 bits of headroom, summed, rescaled to the output (multiplier 2)."""
    scaled = [multiply_by_quantized_multiplier(tf.cast(n, tf.int64) * 2 ** 20, q[i], shift[i])
              for i, n in enumerate((n1, n2))]
    out = multiply_by_quantized_multiplier(scaled[0] + scaled[1], q[2], shift[2])
    return tf.cast(tf.clip_by_value(out, bounds[0], bounds[1]), n1.dtype)


def _integers(x, scale: float, dtype=tf.float32):
    """Real values on a grid of step `scale` -> the integers q - zero_point (straight-through rounding)."""
    n = tf.cast(x, dtype) / tf.cast(scale, dtype)
    return n + tf.stop_gradient(tf.round(n) - n)


def _scale_zero(tensor: Tensor) -> Tuple[np.float32, int]:
    q = tensor.quantization
    if q is None or not q.per_tensor or tensor.type_code not in QUANTIZED_RANGES:
        raise _NoIntegerForm(f"tensor {tensor.name!r} is not quantised per tensor")
    return np.float32(q.scale[0]), int(q.zero_point[0])


def _activation_bounds(ctx) -> Tuple[int, int]:
    """The output's clamp in integers q - zero_point: its type's range narrowed by a fused ReLU/ReLU6/ReLU1,
    whose limits are quantised as TFLite does (zero_point + round(limit / scale), float32 division)."""
    out = ctx.tensor(0, outputs=True)
    low, high = QUANTIZED_RANGES[out.type_code]
    scale, zero_point = _scale_zero(out)
    code = ctx.options.get("fused_activation_function", 0)
    if code not in (0, 1, 2, 3):
        raise _NoIntegerForm(f"fused activation {code} has no integer form")
    limits = {0: (None, None), 1: (0.0, None), 2: (-1.0, 1.0), 3: (0.0, 6.0)}[code]
    quantize = lambda v: zero_point + int(np.round(np.float32(v) / scale))  # noqa: E731
    if limits[0] is not None:
        low = max(low, quantize(limits[0]))
    if limits[1] is not None:
        high = min(high, quantize(limits[1]))
    return low - zero_point, high - zero_point


def _accumulate(ctx, weights_int: np.ndarray, contract):
    """CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED in integers: apply(inputs) -> real output.

    `weights_int` are the weights minus their zero points with the output channels on the last axis,
    reshaped as needed by `contract(n, kernel)`.
    """
    inputs, weights = ctx.tensor(0), ctx.tensor(1)
    in_scale, in_zero = _scale_zero(inputs)
    out_scale, _ = _scale_zero(ctx.tensor(0, outputs=True))
    channels = weights_int.shape[-1]
    w_scale = np.broadcast_to(weights.quantization.scale.astype(np.float32), [channels])
    if inputs.type_code == UINT8:
        # uint8 kernels take the legacy per-tensor multiplier: input_scale * weight_scale in float32.
        reals = (in_scale * w_scale).astype(np.float64) / np.float64(out_scale)
    else:
        reals = np.float64(in_scale) * w_scale.astype(np.float64) / np.float64(out_scale)
    q, shift = _multipliers(reals)
    bias = np.zeros(channels, np.int64)
    if ctx.has_input(2):
        data = ctx.raw_constant(2)
        if data.dtype.kind != "i":
            raise _NoIntegerForm("the bias is not integer")
        bias = data.astype(np.int64)
    # Every partial sum (bias included) is bounded by max |n| * sum |w| + |bias| per output channel:
    # below 2**24 (all the Coral layers) float32 holds them exactly.
    in_low, in_high = QUANTIZED_RANGES[inputs.type_code]
    largest_input = max(abs(in_low - in_zero), abs(in_high - in_zero))
    bound = (largest_input * np.abs(weights_int.reshape(-1, channels)).sum(0) + np.abs(bias)).max()
    dtype = tf.float32 if bound < _EXACT_FLOAT32 else tf.float64
    kernel, bias = tf.constant(weights_int, dtype), tf.constant(bias, dtype)
    low, high = _activation_bounds(ctx)
    bounds = tf.constant([low, high], tf.int64)  # tensors, not Python ints: one trace for all layers
    real_multiplier = tf.constant(reals, dtype)
    q, shift = tf.constant(q), tf.constant(shift)

    def apply(x):
        acc = contract(_integers(x[0], in_scale, dtype), kernel) + bias
        approx = tf.clip_by_value(acc * real_multiplier, float(low), float(high))
        exact = _rescale_exact(tf.stop_gradient(acc), q, shift, bounds, False)
        return tf.cast(approx + tf.stop_gradient(exact - approx), tf.float32) * out_scale
    return apply


def _weights_minus_zero_point(ctx) -> np.ndarray:
    tensor, raw = ctx.tensor(1), ctx.raw_constant(1)
    if raw.dtype.kind not in "iu" or tensor.quantization is None:
        raise _NoIntegerForm("the weights are not quantised")
    zero = tensor.quantization.broadcast(tensor.quantization.zero_point.astype(np.int64), raw.ndim)
    return raw.astype(np.int64) - zero


def _conv_2d_integer(ctx, float_apply):
    weights = np.transpose(_weights_minus_zero_point(ctx), (1, 2, 3, 0))        # [H, W, I, O]
    strides = [ctx.options["stride_h"], ctx.options["stride_w"]]
    dilations = [ctx.options["dilation_h_factor"], ctx.options["dilation_w_factor"]]
    padding = ctx.padding()  # SAME pads with the zero point, i.e. integer 0, as tf.nn.conv2d does
    return _accumulate(ctx, weights, lambda n, k: tf.nn.conv2d(n, k, strides, padding, dilations=dilations))


def _depthwise_conv_2d_integer(ctx, float_apply):
    weights = _weights_minus_zero_point(ctx)[0]                                   # [H, W, I * M]
    shape = [*weights.shape[:2], ctx.tensor(0).shape[-1], -1]                    # channel c = i * M + m
    strides = [1, ctx.options["stride_h"], ctx.options["stride_w"], 1]
    dilations = [ctx.options["dilation_h_factor"], ctx.options["dilation_w_factor"]]
    padding = ctx.padding()
    return _accumulate(ctx, weights, lambda n, k: tf.nn.depthwise_conv2d(
        n, tf.reshape(k, shape), strides, padding, dilations=dilations))


def _fully_connected_integer(ctx, float_apply):
    if ctx.options.get("weights_format", 0) != 0 or ctx.options.get("keep_num_dims", False):
        raise _NoIntegerForm("only the DEFAULT weights format without keep_num_dims has an integer form")
    weights = _weights_minus_zero_point(ctx).T                                     # [I, O]
    return _accumulate(ctx, weights, lambda n, k: tf.tensordot(tf.reshape(n, [-1, k.shape[0]]), k, axes=1))


def _straight_through(float_apply, exact):
    """Forward: `exact(inputs)` (without gradient); backward: the (clamped) float op's gradient."""
    def apply(x):
        y = float_apply(x)
        return y + tf.stop_gradient(exact([tf.stop_gradient(v) for v in x]) - y)
    return apply


def _add_integer(ctx, float_apply):
    (s1, _), (s2, _) = _scale_zero(ctx.tensor(0)), _scale_zero(ctx.tensor(1))
    out_scale, _ = _scale_zero(ctx.tensor(0, outputs=True))
    twice_max = 2.0 * float(max(s1, s2))
    q, shift = _multipliers([float(s1) / twice_max, float(s2) / twice_max, twice_max / (2 ** 20 * float(out_scale))])
    q, shift = tf.constant(q[:, None]), tf.constant(shift[:, None])
    bounds = tf.constant(_activation_bounds(ctx), tf.int64)
    return _straight_through(float_apply, lambda x: _add_exact(
        _integers(x[0], s1), _integers(x[1], s2), q, shift, bounds) * out_scale)


def _average_pool_integer(ctx, float_apply):
    # TFLite sums the raw quantised values (input and output share scale and zero point) and divides
    # by the number of in-bounds inputs, rounding half away from zero.
    in_scale, zero = _scale_zero(ctx.tensor(0))
    if (in_scale, zero) != _scale_zero(ctx.tensor(0, outputs=True)):
        raise _NoIntegerForm("input and output quantisation differ")
    size = [ctx.options["filter_height"], ctx.options["filter_width"]]
    strides = [ctx.options["stride_h"], ctx.options["stride_w"]]
    padding = ctx.padding()
    # In-bounds inputs per output position, from the file's static input size (an odd SAME padding
    # goes at the end, in TFLite as in TF); tf.nn.avg_pool2d divides by the same counts, so its
    # average times the count is the exact integer sum.
    counts = []
    for extent, window, stride, out in zip(ctx.tensor(0).shape[1:3], size, strides, ctx.output_shape()[1:3]):
        before = max(((out - 1) * stride + window - extent) // 2, 0) if padding == "SAME" else 0
        starts = np.arange(out) * stride - before
        counts.append(np.minimum(starts + window, extent) - np.maximum(starts, 0))
    count = tf.constant(np.outer(*counts)[None, :, :, None].astype(np.float64))
    low, high = _activation_bounds(ctx)

    def exact(x):
        raw = tf.cast(_integers(x[0], in_scale), tf.float64) + zero
        total = tf.round(tf.nn.avg_pool2d(raw, size, strides, padding) * count)   # exact integer sums
        rounded = tf.sign(total) * tf.floor((tf.abs(total) + tf.floor(count / 2)) / count)
        return tf.cast(tf.clip_by_value(rounded - zero, low, high), tf.float32) * in_scale
    return _straight_through(float_apply, exact)


def _quantize_integer(ctx, float_apply):
    # QUANTIZE between two quantised types (e.g. a uint8 input to int8): TFLite's Requantize.
    in_scale, _ = _scale_zero(ctx.tensor(0))
    out_tensor = ctx.tensor(0, outputs=True)
    out_scale, out_zero = _scale_zero(out_tensor)
    q, shift = (tf.constant(v) for v in _multipliers(float(in_scale) / float(out_scale)))
    bounds = tf.constant([v - out_zero for v in QUANTIZED_RANGES[out_tensor.type_code]], tf.int64)
    return _straight_through(float_apply, lambda x: _rescale_exact(
        _integers(x[0], in_scale), q, shift, bounds, True) * out_scale)


# TFLite op name -> builder(ctx, clamped float apply) -> apply (raises _NoIntegerForm where it does
# not apply). Ops that only move values (RESHAPE, SQUEEZE, PAD, MAX_POOL_2D, CONCATENATION of equally
# quantised inputs) are exact on the grid already; the others (HARD_SWISH, LOGISTIC, MUL, MEAN, ...)
# run in float, rounded to their output grid.
INTEGER_BUILDERS: Dict[str, Callable] = {
    "CONV_2D": _conv_2d_integer,
    "DEPTHWISE_CONV_2D": _depthwise_conv_2d_integer,
    "FULLY_CONNECTED": _fully_connected_integer,
    "ADD": _add_integer,
    "AVERAGE_POOL_2D": _average_pool_integer,
    "QUANTIZE": _quantize_integer,
}


# --- shapes the float rebuild needs --------------------------------------------------------------
#
# The interpreter validates a graph when it allocates it; the rebuild does not, and a weight that does not
# fit its activations would fail deep inside TensorFlow at the first forward pass. Each op the logits
# need is checked first: a problem is one line naming the op and its tensors.


def _dims(tensor: Tensor) -> str:
    return "x".join(map(str, tensor.shape)) or "a scalar"


def _output_channel_problem(model: TFLiteModel, op: Operator, channels: int) -> Optional[str]:
    """Bias, per-channel weight scales and output must all have the weights' `channels` outputs."""
    weights = model.tensors[op.inputs[1]]
    if len(op.inputs) > 2 and op.inputs[2] >= 0 and model.tensors[op.inputs[2]].shape != (channels,):
        bias = model.tensors[op.inputs[2]]
        return (f"bias {bias.name!r} is {_dims(bias)}, the weights {weights.name!r} ({_dims(weights)}) have "
                f"{channels} outputs")
    scales = weights.quantization.scale.size if weights.quantization is not None else 1
    if scales not in (1, channels):
        return f"weights {weights.name!r} ({_dims(weights)}) have {scales} quantisation scales for {channels} outputs"
    output = model.tensors[op.outputs[0]]
    if not output.shape or output.shape[-1] != channels:
        return (f"output {output.name!r} is {_dims(output)}, the weights {weights.name!r} ({_dims(weights)}) have "
                f"{channels} outputs")
    return None


def _conv_2d_problem(model, op) -> Optional[str]:
    x, weights = model.tensors[op.inputs[0]], model.tensors[op.inputs[1]]   # weights [O, H, W, I]
    if len(x.shape) != 4 or len(weights.shape) != 4:
        return f"input {x.name!r} is {_dims(x)} and weights {weights.name!r} {_dims(weights)}, both must be 4-D"
    if weights.shape[3] != x.shape[3]:
        return (f"weights {weights.name!r} ({_dims(weights)}) take {weights.shape[3]} channels, input {x.name!r} "
                f"is {_dims(x)}")
    return _output_channel_problem(model, op, weights.shape[0])


def _depthwise_conv_2d_problem(model, op) -> Optional[str]:
    x, weights = model.tensors[op.inputs[0]], model.tensors[op.inputs[1]]   # weights [1, H, W, I * M]
    if len(x.shape) != 4 or len(weights.shape) != 4:
        return f"input {x.name!r} is {_dims(x)} and weights {weights.name!r} {_dims(weights)}, both must be 4-D"
    if weights.shape[0] != 1 or x.shape[3] == 0 or weights.shape[3] % x.shape[3]:
        return (f"weights {weights.name!r} are {_dims(weights)}, not 1xHxWx(a multiple of the {x.shape[3]} channels "
                f"of input {x.name!r})")
    return _output_channel_problem(model, op, weights.shape[3])


def _fully_connected_problem(model, op) -> Optional[str]:
    x, weights = model.tensors[op.inputs[0]], model.tensors[op.inputs[1]]   # weights [O, I]
    if len(weights.shape) != 2 or not x.shape:
        return f"weights {weights.name!r} are {_dims(weights)} (must be 2-D), input {x.name!r} is {_dims(x)}"
    # Each image's features must be exactly one row of I: the rebuild runs a batch where the file has 1.
    features = x.shape[-1] if op.options.get("keep_num_dims", False) else int(np.prod(x.shape[1:]))
    if features != weights.shape[1]:
        return (f"weights {weights.name!r} ({_dims(weights)}) take {weights.shape[1]} features, input {x.name!r} "
                f"({_dims(x)}) has {features}")
    return _output_channel_problem(model, op, weights.shape[0])


def _elementwise_problem(model, op) -> Optional[str]:
    a, b = (model.tensors[i] for i in op.inputs[:2])
    try:
        np.broadcast_shapes(a.shape, b.shape)
    except ValueError:
        return f"inputs {a.name!r} ({_dims(a)}) and {b.name!r} ({_dims(b)}) do not broadcast"
    return None


def _reshape_problem(model, op) -> Optional[str]:
    x, output = model.tensors[op.inputs[0]], model.tensors[op.outputs[0]]
    if int(np.prod(x.shape)) != int(np.prod(output.shape)):
        return f"input {x.name!r} ({_dims(x)}) and output {output.name!r} ({_dims(output)}) differ in size"
    return None


def _concatenation_problem(model, op) -> Optional[str]:
    parts = [model.tensors[i] for i in op.inputs]
    axis = int(op.options.get("axis", 0))
    rank = len(parts[0].shape)
    if not -rank <= axis < rank:
        return f"axis {axis} is outside input {parts[0].name!r} ({_dims(parts[0])})"
    kept = [tuple(d for k, d in enumerate(p.shape) if k != axis % rank) for p in parts]
    if any(len(p.shape) != rank for p in parts) or len(set(kept)) > 1:
        return f"inputs {', '.join(f'{p.name!r} ({_dims(p)})' for p in parts)} differ off axis {axis}"
    return None


# TFLite op name -> problem(model, op): a one-line description of a shape the rebuild cannot use, or None.
SHAPE_CHECKS: Dict[str, Callable] = {
    "CONV_2D": _conv_2d_problem,
    "DEPTHWISE_CONV_2D": _depthwise_conv_2d_problem,
    "FULLY_CONNECTED": _fully_connected_problem,
    "ADD": _elementwise_problem,
    "SUB": _elementwise_problem,
    "MUL": _elementwise_problem,
    "RESHAPE": _reshape_problem,
    "SQUEEZE": _reshape_problem,
    "CONCATENATION": _concatenation_problem,
}


def check_shapes(model: TFLiteModel, ops: List[Operator]):
    """Raises a TFLiteFormatError at the first op of `ops` whose tensor and weight shapes do not fit."""
    input_tensor = model.tensors[model.inputs[0]]
    if len(input_tensor.shape) != 4:
        raise TFLiteFormatError(f"{model.path}: input {input_tensor.name!r} is {_dims(input_tensor)}, not an "
                                f"image batch [1, height, width, channels]")
    for op in ops:
        problem = SHAPE_CHECKS[op.name](model, op) if op.name in SHAPE_CHECKS else None
        if problem:
            raise TFLiteFormatError(f"{model.path}: op {op.index} ({op.name}): {problem}")


ARITHMETICS = ("integer", "grid", "float")


class TFLiteFloatNetwork(tf.Module):
    """A quantised TFLite classifier rebuilt in TF2: `network(pixels) -> (logits, end_points)`.

    `pixels` are 0..255 floats [N, H, W, C]; end points are keyed by the file's tensor names, plus
    "Logits". Attributes: `model` (the parsed file), `dropped_softmax` (name of the dropped op's output),
    `arithmetic` (may be changed after construction), `integer_ops` (indices of the ops that have an
    integer form in this file).

    `arithmetic` chooses the forward pass; the gradient is the float graph's in all three:
    - "integer": the ops in `INTEGER_BUILDERS` compute TFLite's integer kernels exactly (straight-through
      gradient), the others run in float rounded to their output grid;
    - "grid": every op in float, its output rounded to the grid (straight-through);
    - "float": every op in float, only clamped to the range its quantised output can hold.
    """

    differentiable = True

    def __init__(self, model: TFLiteModel, name: Optional[str] = None, arithmetic: str = "integer"):
        super().__init__(name=name or "tflite_float")
        if arithmetic not in ARITHMETICS:
            raise ValueError(f"arithmetic must be one of {ARITHMETICS}, not {arithmetic!r}")
        self.arithmetic = arithmetic
        self.model = model
        _fold_constant_dequantize(model)
        self._logits_index, self._beta, softmax = find_logits(model)
        self.dropped_softmax = None if softmax is None else model.tensors[softmax.outputs[0]].name
        self._input = model.tensors[model.inputs[0]]
        self._pixel_offset = pixel_offset(model)
        ops = self._ops_needed()
        check_shapes(model, ops)
        self._steps = [self._step(op) for op in ops]
        self.integer_ops = [op.index for op, step in zip(ops, self._steps) if step[-1] is not None]

    def _ops_needed(self) -> List[Operator]:
        """The ops the logits depend on, in file order (the file's operator list is topologically sorted)."""
        producer = {out: op for op in self.model.operators for out in op.outputs}
        needed, pending = set(), [self._logits_index]
        while pending:
            index = pending.pop()
            op = None if self.model.tensors[index].data is not None else producer.get(index)
            if op is not None and op.index not in needed:
                needed.add(op.index)
                pending.extend(i for i in op.inputs if i >= 0)
        return [op for op in self.model.operators if op.index in needed]

    def _step(self, op: Operator):
        if op.name not in OP_BUILDERS:
            raise UnsupportedOpError(f"{self.model.path}: op {op.index} is {op.name}, which the float rebuild does "
                                     f"not support; supported: {', '.join(sorted(OP_BUILDERS))}")
        ctx = _OpContext(self.model, op)
        apply = OP_BUILDERS[op.name](ctx)
        structural = _STRUCTURAL_INPUTS.get(op.name)
        # Constant inputs that the op computes with (e.g. the other operand of an ADD) become tensors.
        inputs = [i for position, i in enumerate(op.inputs)
                  if i >= 0 and (structural is None or position < structural)]
        constants = {i: tf.constant(dequantize(self.model.tensors[i], self.model.tensors[i].data))
                     for i in inputs if self.model.tensors[i].data is not None}
        output = self.model.tensors[op.outputs[0]]
        q = output.quantization
        step = float(q.scale[0]) if q is not None and q.per_tensor and output.type_code in QUANTIZED_RANGES else None
        bounds = representable_range(output)
        integer = None
        if op.name in INTEGER_BUILDERS and step is not None:
            clamped = apply if bounds is None else (lambda x: tf.clip_by_value(apply(x), *bounds))
            try:
                integer = INTEGER_BUILDERS[op.name](ctx, clamped)
            except _NoIntegerForm:
                integer = None
        return apply, inputs, constants, output, bounds, step, integer

    def __call__(self, pixels):
        q = self._input.quantization
        rounded = self.arithmetic != "float"
        if rounded:
            pixels = pixels + tf.stop_gradient(tf.round(pixels) - pixels)
        x = (pixels - self._pixel_offset - float(q.zero_point[0])) * float(q.scale[0])
        bounds = representable_range(self._input)
        values = {self._input.index: tf.clip_by_value(x, *bounds) if bounds else x}
        end_points = backward.EndPoints()
        for apply, inputs, constants, output, bounds, step, integer in self._steps:
            operands = [constants[i] if i in constants else values[i] for i in inputs]
            if integer is not None and self.arithmetic == "integer":
                y = integer(operands)
            else:
                y = apply(operands)
                if bounds is not None:
                    y = tf.clip_by_value(y, *bounds)
                if rounded and step is not None:
                    y = y + tf.stop_gradient(tf.round(y / step) * step - y)
            values[output.index] = edits.end_point(end_points, output.name, y)
        logits = values[self._logits_index] * self._beta
        end_points["Logits"] = logits
        return logits, end_points


# --- the interpreter (black box) -----------------------------------------------------------------


def interpreter_classes() -> Tuple[type, type]:
    """(Interpreter, OpResolverType) of the runtime that runs .tflite files: LiteRT's when installed.

    The two come from one module: each runtime checks the op resolver against its own enum.
    """
    try:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType
    except ImportError:
        # TensorFlow deprecates tf.lite.Interpreter in favour of LiteRT, but LiteRT publishes wheels for fewer
        # platforms and Pythons than TensorFlow; where it is missing, TensorFlow's copy runs the same kernels.
        return tf.lite.Interpreter, tf.lite.experimental.OpResolverType
    return Interpreter, OpResolverType


class TFLiteInterpreterNetwork(tf.Module):
    """The quantised file run by the TFLite interpreter: `network(pixels) -> (logits, end_points)`.

    Pixels (0..255 floats) are rounded and clipped to uint8 (int8: minus 128), one image per invoke.
    `logits_kind` says what is returned: "pre_softmax" (the dequantised input of the final SOFTMAX, read
    from the preserved intermediate tensor; what the registered records give), "log_softmax" (the log of
    the dequantised output probabilities, floored at half a step, if a runtime cannot read that tensor)
    or "output" (a graph without a final softmax: its dequantised output). Gradients raise
    `NotDifferentiableError`.
    """

    differentiable = False

    def __init__(self, path, model: TFLiteModel, name: Optional[str] = None):
        super().__init__(name=name or "tflite_interpreter")
        self.model = model
        self.path = str(path)
        interpreter, op_resolver = interpreter_classes()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the fallback, tf.lite.Interpreter, announces its move to LiteRT
                self._interpreter = interpreter(
                    model_path=self.path, experimental_preserve_all_tensors=True,
                    experimental_op_resolver_type=op_resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
            self._interpreter.allocate_tensors()
        except (RuntimeError, ValueError) as err:
            # The interpreter's own graph checks report several lines from its C++ kernels; the first says what.
            first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise TFLiteFormatError(f"{self.path}: the TFLite interpreter refuses the graph: {first_line}") from None
        self._lock = threading.Lock()  # one interpreter, possibly called from several TF threads
        self._input = model.tensors[model.inputs[0]]
        self._pixel_offset = pixel_offset(model)
        logits_index, self._beta, softmax = find_logits(model)
        self.logits_kind = "pre_softmax" if softmax is not None else "output"
        self.logits_tensor = model.tensors[logits_index]
        self.num_outputs = int(np.prod(self.logits_tensor.shape[1:]))

    def _read_logits(self) -> np.ndarray:
        if self.logits_kind == "pre_softmax":
            try:
                return dequantize(self.logits_tensor, self._interpreter.get_tensor(self.logits_tensor.index)).reshape(-1) * self._beta
            except ValueError:  # the intermediate tensor is not readable in this runtime: use the output
                self.logits_kind = "log_softmax"
        out = self.model.tensors[self.model.outputs[0]]
        values = dequantize(out, self._interpreter.get_tensor(out.index)).reshape(-1)
        if self.logits_kind == "log_softmax":
            step = float(out.quantization.scale[0]) if out.quantization else 1e-6
            return np.log(np.maximum(values, step / 2))
        return values

    def run(self, pixels: np.ndarray) -> np.ndarray:
        """NumPy in, NumPy out: [N, H, W, C] 0..255 floats -> [N, classes] float32."""
        low, high = QUANTIZED_RANGES[self._input.type_code]
        quantized = np.clip(np.round(np.asarray(pixels, np.float64)) - self._pixel_offset, low, high)
        quantized = quantized.astype(self._input.dtype)
        rows = []
        with self._lock:
            for image in quantized:
                self._interpreter.set_tensor(self._input.index, image[None])
                self._interpreter.invoke()
                rows.append(self._read_logits())
        return (np.stack(rows) if rows else np.zeros([0, self.num_outputs])).astype(np.float32)

    def __call__(self, pixels):
        name, path = self.name, self.path

        @tf.custom_gradient
        def black_box(x):
            y = tf.numpy_function(self.run, [x], tf.float32, stateful=False)
            y.set_shape([x.shape[0], self.num_outputs])

            def gradient(_):
                raise NotDifferentiableError(f"model {name!r} runs the TFLite interpreter on {path}, a black box "
                                             f"without gradients: attack a differentiable model (e.g. its float "
                                             f"rebuild) and use this one as a victim")
            return y, gradient

        logits = black_box(tf.convert_to_tensor(pixels, tf.float32))
        return logits, {"Logits": logits}


# --- registry records and loaders ----------------------------------------------------------------


def _load_float(spec: ModelSpec, path: str):
    with naming_model(spec.name, TFLiteFormatError, FileNotFoundError):
        model = read_record_file(spec, path)
        network = TFLiteFloatNetwork(model, name=spec.name, arithmetic="integer")
    return network, {"checkpoint": str(path), "dropped_softmax": network.dropped_softmax, "arithmetic": "integer"}


def _load_interpreter(spec: ModelSpec, path: str):
    with naming_model(spec.name, TFLiteFormatError, FileNotFoundError):
        model = read_record_file(spec, path)
        network = TFLiteInterpreterNetwork(path, model, name=spec.name)
    return network, {"checkpoint": str(path), "logits": network.logits_kind}


def read_record_file(spec: ModelSpec, path: str) -> TFLiteModel:
    """The parsed file, refused unless its input and class count are the record's."""
    if Path(path).is_dir():
        raise TFLiteFormatError(f"{path} is a folder; pass the .tflite file of model {spec.name!r}")
    model = read_tflite(path)
    _check_input(spec, model)
    _check_classes(spec, model)
    return model


def _check_input(spec: ModelSpec, model: TFLiteModel):
    shape = model.tensors[model.inputs[0]].shape
    if tuple(shape[1:]) != (spec.image_size, spec.image_size, 3):
        raise TFLiteFormatError(f"{model.path}: input is {'x'.join(map(str, shape[1:]))}, model {spec.name!r} "
                                f"expects {spec.image_size}x{spec.image_size}x3")


def _check_classes(spec: ModelSpec, model: TFLiteModel):
    shape = model.tensors[find_logits(model)[0]].shape
    classes = int(shape[-1]) if shape else 1
    if classes != spec.num_classes:
        raise TFLiteFormatError(f"model {spec.name!r}: {model.path} has {classes} classes, the record says "
                                f"{spec.num_classes}")


def _needs_file(spec: ModelSpec, seed: int = 0):
    raise ValueError(f"model {spec.name!r}: its architecture is the graph in its .tflite file, so it has no "
                     f"random-weights builder; load it with checkpoint=PATH or TFATTACK_MODEL_DIR")


_CORAL_URL = "https://github.com/google-coral/test_data/raw/master/"
_CORAL_PROVENANCE = ("google-coral/test_data (Apache-2.0, see its LICENSE and COPYRIGHT): TF-slim MobileNet "
                     "trained with quantisation-aware training, converted to a uint8 TFLite flatbuffer")
_NOTE = ("top-1 on the 1000 NIPS 2017 DEV images (299 -> model size, tfattack's loading), measured on "
         "../shared; its README (PIL resize, default interpreter, plain dequantised float) says")
_MOBILENET_V1 = "Howard et al., MobileNets: Efficient Convolutional Neural Networks for Mobile Vision Applications, 2017"
_MOBILENET_V2 = "Sandler et al., MobileNetV2: Inverted Residuals and Linear Bottlenecks, CVPR 2018"

# (record name, file, input size, sha256 of the file in ../shared, top-1 float rebuild, top-1 interpreter
#  (equal: the integer rebuild's logits are the interpreter's), README's float and interpreter figures, paper)
CORAL_FILES = (
    ("mobilenet_v2_quant", "mobilenet_v2_1.0_224_quant.tflite", 224,
     "7aad0c74c5e3c06e5eb3c827e13304fdd68a83da6087d92ee169c24ff9fd4776", 85.0, 85.0, (84.1, 84.1), _MOBILENET_V2),
    ("mobilenet_v1_075_192_quant", "mobilenet_v1_0.75_192_quant.tflite", 192,
     "41daeb22fdcf947e0e5ec32373aa9df7c31f3ef45dbd0ef7b5940fbce3c20f6a", 76.6, 76.6, (76.8, 77.2), _MOBILENET_V1),
    ("mobilenet_v1_05_160_quant", "mobilenet_v1_0.5_160_quant.tflite", 160,
     "3cc6d2ca460abd2e0f699a6d0d2550c6b61c6e3b0e27a3616e384ea74cb86f43", 66.6, 66.6, (66.8, 66.8), _MOBILENET_V1),
    ("mobilenet_v1_025_128_quant", "mobilenet_v1_0.25_128_quant.tflite", 128,
     "cb273c23ee76374b05b9583177e28aa19744858a7679c56a250e83d0333da785", 44.6, 44.6, (45.9, 44.4), _MOBILENET_V1),
)


def _coral_specs():
    for name, file, size, sha256, float_top1, interpreter_top1, readme, paper in CORAL_FILES:
        common = dict(architecture=f"tflite:{Path(file).stem}", image_size=size, preprocessing="pixels",
                      num_classes=1001, url=_CORAL_URL + file, archive_files=(file,), sha256=sha256,
                      default_location=f"coral_tflite/{file}", licence="Apache-2.0", provenance=_CORAL_PROVENANCE,
                      paper=paper)
        yield ModelSpec(name=name, source="tflite_float", reference_top1=float_top1,
                        reference_note=f"{_NOTE} {readme[0]} %; float rebuild, integer arithmetic", **common)
        yield ModelSpec(name=f"{name}_int8", source="tflite_interpreter", reference_top1=interpreter_top1,
                        reference_note=f"{_NOTE} {readme[1]} %; TFLite interpreter, built-in kernels", **common)


FAMILY = "TFLite (Coral quantised MobileNets)"
SPECS = tuple(_coral_specs())

for _spec in SPECS:
    registry.register(_spec)
    registry.register_architecture(_spec.architecture, _needs_file)
loading.register_loader("tflite_float", _load_float)
loading.register_loader("tflite_interpreter", _load_interpreter)
