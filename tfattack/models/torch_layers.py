"""PyTorch layers in TF2 for networks whose weights are PyTorch state dicts (EfficientNet-Lite's port, torchvision).

Variables are named by the state-dict keys (`layer1.0.conv1.weight`, `_blocks.3._bn1.running_var`, ...) and hold
TensorFlow's layout: convolution kernels HWIO (PyTorch: OIHW), depthwise kernels [k, k, C, 1] (PyTorch: C1kk),
linear weights [in, out] (PyTorch: [out, in]). `TorchStateDictNetwork.load_state_dict` checks every key and shape
against the network before it assigns any, and names what does not fit.

A BatchNorm2d that follows a convolution is folded into it (`conv2d`'s `bn`, `layers.fold_into_kernel`), as the
slim layers fold theirs; the variables keep the state dict's names and values.
"""

from __future__ import annotations

import os
from typing import Callable, Dict, Mapping, Optional, Tuple

import numpy as np
import tensorflow as tf

from tfattack import backward, edits
from tfattack.models import layers, loading, safetensors_file, torch_pickle
from tfattack.models.checkpoint import naming_model
from tfattack.models.registry import ModelSpec
from tfattack.names import first_few

# Running-statistics counters that PyTorch keeps next to batch-norm weights; inference ignores them.
IGNORED_KEY_SUFFIX = ".num_batches_tracked"


class StateDictMismatchError(torch_pickle.TorchPickleError, safetensors_file.SafetensorsError):
    """A state dict whose keys or shapes do not fit the network (a file of another architecture or class count);
    an error of the reader of either format, so that a caller catches it as such."""


def batch_norm_scale_offset(store, name: str, channels: int, epsilon: float, scale_init: str = "ones"):
    """BatchNorm2d `name` in inference mode as (multiplier, offset) of y * multiplier + offset: weight = gamma, bias =
    beta, running statistics. `scale_init`: gamma's value in an unloaded network."""
    gamma = store.get(f"{name}.weight", [channels], scale_init)
    beta = store.get(f"{name}.bias", [channels], "zeros")
    mean = store.get(f"{name}.running_mean", [channels], "zeros")
    variance = store.get(f"{name}.running_var", [channels], "ones")
    return layers.batch_norm_multiplier_offset(gamma, beta, mean, variance, epsilon)


def batch_norm(store, x, name: str, epsilon: float, scale_init: str = "ones"):
    """A BatchNorm2d that no convolution precedes (one after a convolution folds into it: `conv2d`'s `bn`)."""
    multiplier, offset = batch_norm_scale_offset(store, name, x.shape[-1], epsilon, scale_init)
    return x * multiplier + offset


def grouped_conv2d(x, kernel, stride: int, groups: int):
    """`tf.nn.conv2d` of a grouped kernel [k, k, C/groups, out] (VALID). TensorFlow computes grouped convolutions
    forward on CPU but not their gradients; the input gradient here is `grouped_input_gradient`, itself a grouped
    convolution (attacks need no weight gradient)."""

    @tf.custom_gradient
    def conv(inputs):
        def gradient(dy, variables=None):
            dx = grouped_input_gradient(dy, kernel, tf.shape(inputs)[1:3], stride, groups)
            return dx, [None] * len(variables or [])
        return tf.nn.conv2d(inputs, kernel, stride, "VALID"), gradient

    return conv(x)


def grouped_input_gradient(dy, kernel, input_size, stride: int, groups: int):
    """The input gradient of a VALID grouped convolution with `kernel` [k_h, k_w, C/groups, out] at `stride` on
    an input of spatial `input_size`, given `dy`, the gradient of its output.

    It is the transposed convolution, written as a forward convolution (the one TensorFlow groups on CPU): `dy`
    spread out by the stride (stride - 1 zeros between rows and between columns), padded by k - 1 on every side and
    by the input rows and columns the stride never reached at the bottom and right, convolved at stride 1 with the
    kernel flipped in space and, within each group, input and output channels swapped. Same cost as the forward
    pass (times stride^2 over the spread zeros), where a dense block-diagonal kernel costs `groups` times it."""
    k_h, k_w, per_group_in, out = kernel.shape
    per_group_out = out // groups
    if stride > 1:
        batch, height, width = tf.shape(dy)[0], tf.shape(dy)[1], tf.shape(dy)[2]
        spread = tf.pad(dy[:, :, None, :, None, :], [[0, 0], [0, 0], [0, stride - 1], [0, 0], [0, stride - 1], [0, 0]])
        spread = tf.reshape(spread, [batch, height * stride, width * stride, out])
        dy = spread[:, :(height - 1) * stride + 1, :(width - 1) * stride + 1]
    unreached_h = input_size[0] - (tf.shape(dy)[1] + k_h - 1)
    unreached_w = input_size[1] - (tf.shape(dy)[2] + k_w - 1)
    dy = tf.pad(dy, [[0, 0], [k_h - 1, k_h - 1 + unreached_h], [k_w - 1, k_w - 1 + unreached_w], [0, 0]])
    flipped = tf.reverse(tf.reshape(kernel, [k_h, k_w, per_group_in, groups, per_group_out]), axis=[0, 1])
    swapped = tf.reshape(tf.transpose(flipped, [0, 1, 4, 3, 2]), [k_h, k_w, per_group_out, groups * per_group_in])
    return tf.nn.conv2d(dy, swapped, 1, "VALID")


def _padded(x, padding):
    """(input, TensorFlow padding) for PyTorch's symmetric zero `padding` (an int), or TensorFlow's "SAME" (which
    the EfficientNet-Lite port reproduces)."""
    if padding == "SAME":
        return x, "SAME"
    if padding:
        x = tf.pad(x, [[0, 0], [padding, padding], [padding, padding], [0, 0]])
    return x, "VALID"


def conv2d(store, x, name: str, filters: int, kernel: int, stride: int = 1, padding=0, groups: int = 1, *,
           bias: bool = False, bn: Optional[str] = None, epsilon: Optional[float] = None):
    """nn.Conv2d `name` [with its bias]; `padding`: PyTorch's symmetric zero padding, or "SAME". `bn`: the
    BatchNorm2d (eps `epsilon`) that follows it, folded into the kernel and bias (`layers.fold_into_kernel`).
    Its output goes through `edits.layer_output` at the caller, after the batch norm where there is one."""
    weights = store.get(f"{name}.weight", [kernel, kernel, x.shape[-1] // groups, filters], "he")
    offset = store.get(f"{name}.bias", [filters], "zeros") if bias else None
    if bn is not None:
        multiplier, bn_offset = batch_norm_scale_offset(store, bn, filters, epsilon)
        weights = layers.fold_into_kernel(weights, multiplier)
        offset = bn_offset if offset is None else offset * multiplier + bn_offset
    x, tf_padding = _padded(x, padding)
    if groups == 1:
        y = tf.nn.conv2d(x, weights, stride, tf_padding)
    elif tf_padding == "VALID":
        y = grouped_conv2d(x, weights, stride, groups)
    else:
        raise ValueError(f"{name}: grouped convolutions take symmetric padding, not {padding!r}")
    return y if offset is None else tf.nn.bias_add(y, offset)


def depthwise_conv2d(store, x, name: str, kernel: int, stride: int = 1, padding=0, *, bn: str, epsilon: float):
    """A depthwise nn.Conv2d `name` (groups = channels, no bias) and the BatchNorm2d `bn` after it, folded."""
    channels = x.shape[-1]
    weights = store.get(f"{name}.weight", [kernel, kernel, channels, 1], "he")
    multiplier, offset = batch_norm_scale_offset(store, bn, channels, epsilon)
    x, tf_padding = _padded(x, padding)
    y = tf.nn.depthwise_conv2d(x, layers.fold_into_kernel(weights, multiplier, depthwise=True),
                               [1, stride, stride, 1], tf_padding)
    return tf.nn.bias_add(y, offset)


def conv_bn(store, x, conv: str, bn: str, filters: int, kernel: int, stride: int = 1, padding=0,
            groups: int = 1, *, epsilon: float, relu: bool = True):
    """Convolution `conv`, its batch norm `bn` (folded), [ReLU]."""
    y = edits.layer_output(conv2d(store, x, conv, filters, kernel, stride, padding, groups, bn=bn, epsilon=epsilon))
    return backward.relu(y) if relu else y


def max_pool_padded(x, kernel: int, stride: int, padding: int):
    """nn.MaxPool2d with padding: padded cells never win (PyTorch pads with -inf; the dtype's least value here)."""
    x = tf.pad(x, [[0, 0], [padding, padding], [padding, padding], [0, 0]], constant_values=x.dtype.min)
    return layers.max_pool(x, kernel, stride, "VALID")


def linear(store, x, name: str, units: int):
    weights = store.get(f"{name}.weight", [x.shape[-1], units], "he")
    return edits.layer_output(tf.matmul(x, weights) + store.get(f"{name}.bias", [units], "zeros"))


def widened(x):
    """Half-precision activations are normalised and soft-maxed in float32 (as torch's autocast does); the result
    goes back to the activations' dtype."""
    return tf.cast(x, tf.float32) if x.dtype in (tf.bfloat16, tf.float16) else x


def layer_norm(store, x, name: str, epsilon: float):
    """nn.LayerNorm over the last axis: (x - mean) / sqrt(var + eps) * weight + bias (biased variance)."""
    channels = x.shape[-1]
    weight = store.get(f"{name}.weight", [channels], "ones")
    bias = store.get(f"{name}.bias", [channels], "zeros")
    wide = widened(x)
    mean, variance = tf.nn.moments(wide, axes=[-1], keepdims=True)
    normalised = tf.cast((wide - mean) * tf.math.rsqrt(variance + epsilon), x.dtype)
    return normalised * weight + bias


def token_linear(store, x, name: str, units: int, bias: bool = True):
    """nn.Linear on the last axis of tokens of any rank ([N, T, D], [N, H, W, D]): weight [in, out] (PyTorch's
    [out, in] transposed), as `linear`; the output goes through `edits.layer_output` in the tokens'
    shape."""
    inputs = x.shape[-1]
    weights = store.get(f"{name}.weight", [inputs, units], "he")
    leading = [size if size is not None else tf.shape(x)[axis] for axis, size in enumerate(x.shape[:-1])]
    y = tf.reshape(tf.matmul(tf.reshape(x, [-1, inputs]), weights), leading + [units])
    if bias:
        y = y + store.get(f"{name}.bias", [units], "zeros")
    return edits.layer_output(y)


def gelu(x):
    """nn.GELU(): x * Phi(x) with the exact (erf) normal CDF."""
    return tf.nn.gelu(x, approximate=False)


def torch_to_tf_axes(ndim: int, depthwise: bool = False) -> Tuple[int, ...]:
    """Axes that take a state-dict tensor to TensorFlow's layout (`tf_value = value.transpose(axes)`)."""
    if ndim == 4:
        return (2, 3, 0, 1) if depthwise else (2, 3, 1, 0)
    if ndim == 2:
        return (1, 0)
    return tuple(range(ndim))



class TorchStateDictNetwork(layers.SlimNetwork):
    """A network whose variables are named by PyTorch state-dict keys. Subclasses set `family` (for messages),
    `classifier_bias` (the key whose length is the class count) and may override `tf_axes`."""

    family = "network"
    classifier_bias = "fc.bias"

    def tf_axes(self, name: str, ndim: int) -> Tuple[int, ...]:
        return torch_to_tf_axes(ndim)

    def expected_state_dict_shapes(self) -> Dict[str, tuple]:
        """State-dict key -> PyTorch shape, for every variable (in creation order)."""
        shapes = {}
        for name, var in self.store.by_name.items():
            axes = self.tf_axes(name, len(var.shape))
            shapes[name] = tuple(int(var.shape[axes.index(i)]) for i in range(len(axes)))
        return shapes

    def load_state_dict(self, state_dict: Mapping[str, np.ndarray], source: str, model_name: str) -> int:
        """Assigns every variable from a PyTorch state dict; every key and shape is checked first."""
        expected = self.expected_state_dict_shapes()
        present = {k: v for k, v in state_dict.items() if not k.endswith(IGNORED_KEY_SUFFIX)}
        missing = [k for k in expected if k not in present]
        unexpected = [k for k in present if k not in expected]
        if missing or unexpected:
            parts = []
            if missing:
                parts.append(f"lacks {len(missing)} key(s): {first_few(missing, 5)}")
            if unexpected:
                parts.append(f"has {len(unexpected)} unexpected key(s): {first_few(unexpected, 5)}")
            raise StateDictMismatchError(
                f"{source} does not fit model {model_name!r} ({self.scope}): {'; '.join(parts)} "
                f"(a state dict of another {self.family}?)")
        wrong = [f"{k} {tuple(present[k].shape)} != {shape}" for k, shape in expected.items()
                 if tuple(present[k].shape) != shape]
        if wrong:
            classes, record_classes = present[self.classifier_bias].shape[0], expected[self.classifier_bias][0]
            count = (f" (the file has {classes} classes, the record says {record_classes})"
                     if classes != record_classes else "")
            raise StateDictMismatchError(f"{source} has mis-shaped tensor(s) for model {model_name!r} "
                                                f"({self.scope}): {first_few(wrong, 3)}{count}")
        for name, var in self.store.by_name.items():
            value = np.asarray(present[name], np.float32)
            var.assign(value.transpose(self.tf_axes(name, value.ndim)))
        return len(expected)


def load_state_dict_file(spec: ModelSpec, path: str, read, error_type, kind: str):
    """Builds the spec's network and assigns it the state dict `read(path)` returns. The file is read before the
    network is built, so that a file in another format fails first; every key and shape is then checked against
    the network before any is assigned (`TorchStateDictNetwork.load_state_dict`)."""
    if os.path.isdir(path):
        raise error_type(f"model {spec.name!r}: {path} is a folder; pass its {kind} file "
                         f"({spec.default_location or kind})")
    with naming_model(spec.name, error_type, FileNotFoundError):
        state_dict = read(path)
    network = loading.build_network(spec)
    if hasattr(network, "load_state_dict"):
        count = network.load_state_dict(state_dict, path, spec.name)
    elif spec.architecture in _SLIM_STATE_DICT_MAPS:
        count = _SLIM_STATE_DICT_MAPS[spec.architecture](network, state_dict, path, spec.name)
    else:
        raise ValueError(f"model {spec.name!r}: architecture {spec.architecture!r} cannot load PyTorch state dicts")
    return network, {"checkpoint": path, "variables": count}


# architecture -> load(network, state_dict, source, model_name) -> variable count, for slim ports that also load
# PyTorch ports of TF checkpoints by a name map (tfattack.models.timm_tf_ports).
_SLIM_STATE_DICT_MAPS: Dict[str, Callable] = {}


def register_slim_state_dict_map(architecture: str, load: Callable) -> None:
    _SLIM_STATE_DICT_MAPS[architecture] = load


def load_torch_pickle(spec: ModelSpec, path: str):
    """Loader of source "torch_pickle": a torch.save file (zip or legacy layout) read without torch; training
    checkpoints and the robustness library's files give up their model weights (`read_model_state_dict`)."""
    return load_state_dict_file(spec, path, torch_pickle.read_model_state_dict, torch_pickle.TorchPickleError,
                                "torch.save")


def load_safetensors(spec: ModelSpec, path: str):
    """Loader of source "safetensors": timm's and Hugging Face's weight files."""
    return load_state_dict_file(spec, path, safetensors_file.read_state_dict, safetensors_file.SafetensorsError,
                                ".safetensors")


loading.register_loader("torch_pickle", load_torch_pickle)
loading.register_loader("safetensors", load_safetensors)


def fixed_size_builder(network_class, image_size: int):
    """`build(spec, seed) -> network` for a family built at one input size: `network_class(architecture,
    num_classes, seed)`, a spec of another size refused in one line."""
    def build(spec: ModelSpec, seed: int = 0):
        if spec.image_size != image_size:
            raise ValueError(f"model {spec.name!r}: {spec.architecture} is built for {image_size} px inputs, the spec "
                             f"says {spec.image_size}")
        return network_class(spec.architecture, spec.num_classes, seed=seed)
    return build


TORCHVISION_URL = "https://download.pytorch.org/models/"


def torchvision_record(name: str, architecture: str, file_name: str, weights: str, top1: float, *,
                       paper: str) -> ModelSpec:
    """The record of one of torchvision's published ImageNet weight files (224 px, ImageNet mean/std); its name
    carries the first 8 hex digits of its sha256, which the download checks."""
    return ModelSpec(
        name=name, architecture=architecture, source="torch_pickle", image_size=224, preprocessing="torchvision",
        num_classes=1000, url=TORCHVISION_URL + file_name, sha256=file_name.rsplit("-", 1)[1].split(".")[0],
        default_location=f"torchvision/{file_name}", licence="BSD-3-Clause",
        provenance=f"torchvision's ImageNet weights ({weights}), BSD-3-Clause; file from download.pytorch.org "
                   f"(torch.save zip format)",
        reference_top1=top1,
        reference_note=f"ImageNet-1k validation top-1 as published in torchvision's model table ({weights}; resize "
                       f"256, crop 224)",
        paper=paper)


TIMM_HUB_URL = "https://huggingface.co/"


def timm_record(name: str, architecture: str, hub_id: str, top1: Optional[float], *, paper: str, licence: str,
                image_size: int = 224, preprocessing: str = "torchvision", num_classes: int = 1000,
                crop: str = "") -> ModelSpec:
    """The record of one of timm's weight files on the Hugging Face hub (`timm/<model>.<tag>`, model.safetensors).
    The hub publishes no digest next to the file that could be checked offline: the record carries none."""
    return ModelSpec(
        name=name, architecture=architecture, source="safetensors", image_size=image_size,
        preprocessing=preprocessing, num_classes=num_classes,
        url=f"{TIMM_HUB_URL}{hub_id}/resolve/main/model.safetensors",
        default_location=f"timm/{hub_id.split('/', 1)[1]}.safetensors", licence=licence,
        provenance=f"timm's weights {hub_id} ({licence}), safetensors file from the Hugging Face hub",
        reference_top1=top1,
        reference_note=f"ImageNet-1k validation top-1 as published in timm's results table "
                       f"(results-imagenet.csv, {hub_id}{'; ' + crop if crop else ''})",
        paper=paper)
