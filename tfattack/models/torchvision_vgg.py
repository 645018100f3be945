"""torchvision's VGG-16, VGG-16-BN and VGG-19 in TF2, reading torchvision's `.pth` files without torch.

`features` is a list of 3x3 convolutions (padding 1; with batch norm in the _bn variants) and ReLUs, with a 2x2/2
max pool closing each of the five stages; then an adaptive 7x7 average pool (the identity at 224 px), the flatten
of the NCHW map and three linear layers (dropout is the identity in eval mode). Module indices are torchvision's
(`features.28.weight`, `classifier.6.bias`), so they name the end points too: `features.29` is VGG-16's last
ReLU, `features.30` its last pool; `classifier.1`, `classifier.4` the two hidden ReLUs.
"""

from __future__ import annotations

import functools
from typing import Tuple

import tensorflow as tf

from tfattack import backward, edits
from tfattack.models import features, layers, registry, torch_layers
from tfattack.models.torch_layers import torchvision_record

BN_EPSILON = 1e-5
IMAGE_SIZE = 224
HIDDEN_UNITS = 4096
# Channels per stage; the convolutions per stage differ between VGG-16 and VGG-19.
STAGE_FILTERS = (64, 128, 256, 512, 512)
CONVS_PER_STAGE = {"vgg16": (2, 2, 3, 3, 3), "vgg19": (2, 2, 4, 4, 4)}
ARCHITECTURES = ("vgg16", "vgg16_bn", "vgg19")


def stage_plan(architecture: str) -> Tuple[Tuple[int, int], ...]:
    """(stage, filters) per convolution, in order."""
    counts = CONVS_PER_STAGE[architecture.replace("_bn", "")]
    return tuple((stage, filters) for stage, (count, filters) in enumerate(zip(counts, STAGE_FILTERS))
                 for _ in range(count))


def torchvision_vgg(store, x, architecture: str, num_classes: int = 1000):
    """The forward pass on [N, 224, 224, 3] normalised RGB; returns (logits, end points)."""
    batch_norm = architecture.endswith("_bn")
    end_points = backward.EndPoints()
    net, index, plan = x, 0, stage_plan(architecture)
    for position, (stage, filters) in enumerate(plan):
        net = torch_layers.conv2d(store, net, f"features.{index}", filters, 3, padding=1, bias=True,
                                  bn=f"features.{index + 1}" if batch_norm else None, epsilon=BN_EPSILON)
        if batch_norm:
            index += 1
        net = edits.layer_output(net)
        index += 1
        net = edits.end_point(end_points, f"features.{index}", backward.relu(net))
        index += 1
        if position + 1 == len(plan) or plan[position + 1][0] != stage:
            net = edits.end_point(end_points, f"features.{index}", layers.max_pool(net, 2, 2, "VALID"))
            index += 1
    # The adaptive 7x7 pool is the identity at 224 px; torch flattens channels first.
    net = tf.reshape(tf.transpose(net, [0, 3, 1, 2]), [-1, 7 * 7 * STAGE_FILTERS[-1]])
    net = edits.end_point(end_points, "classifier.1", backward.relu(torch_layers.linear(store, net, "classifier.0",
                                                                                     HIDDEN_UNITS)))
    net = edits.end_point(end_points, "classifier.4", backward.relu(torch_layers.linear(store, net, "classifier.3",
                                                                                     HIDDEN_UNITS)))
    logits = torch_layers.linear(store, net, "classifier.6", num_classes)
    end_points["Logits"] = logits
    return logits, end_points


class TorchvisionVGG(torch_layers.TorchStateDictNetwork):
    """A torchvision VGG whose variables are named by its state-dict keys."""

    family = "VGG variant"
    classifier_bias = "classifier.6.bias"

    def __init__(self, architecture: str, num_classes: int = 1000, seed: int = 0):
        forward = functools.partial(torchvision_vgg, architecture=architecture, num_classes=num_classes)
        super().__init__(forward, architecture, IMAGE_SIZE, seed=seed)


build = torch_layers.fixed_size_builder(TorchvisionVGG, IMAGE_SIZE)


def relu_name(architecture: str, stage: int, conv: int) -> str:
    """The end point of the ReLU after convolution `conv` of stage `stage` (both from 1; slim's convS_C)."""
    counts = CONVS_PER_STAGE[architecture.replace("_bn", "")]
    per_conv = 3 if architecture.endswith("_bn") else 2  # conv [+ bn] + relu
    index = sum(count * per_conv + 1 for count in counts[:stage - 1]) + conv * per_conv - 1
    return f"features.{index}"


def _aliases(architecture: str) -> dict:
    """early/mid/late: the ReLUs closing stages 3, 4 and 5 (before their pools)."""
    counts = CONVS_PER_STAGE[architecture.replace("_bn", "")]
    return {alias: relu_name(architecture, stage, counts[stage - 1]) for alias, stage in zip(features.ALIASES, (3, 4, 5))}


for _architecture in ARCHITECTURES:
    registry.register_architecture(_architecture, build)
    features.register_aliases(_architecture, _aliases(_architecture))


# --- Weight records ---------------------------------------------------------------------------------

# name -> (architecture, file, torchvision's weights enum, published top-1)
_FILES = {
    "tv_vgg16": ("vgg16", "vgg16-397923af.pth", "VGG16_Weights.IMAGENET1K_V1", 71.592),
    "tv_vgg16_bn": ("vgg16_bn", "vgg16_bn-6c64b313.pth", "VGG16_BN_Weights.IMAGENET1K_V1", 73.360),
    "tv_vgg19": ("vgg19", "vgg19-dcbb9e9d.pth", "VGG19_Weights.IMAGENET1K_V1", 72.376),
}
_PAPER = "Simonyan, Zisserman: Very deep convolutional networks for large-scale image recognition, ICLR 2015"

FAMILY = "torchvision VGG"
SPECS = tuple(torchvision_record(name, *_FILES[name], paper=_PAPER) for name in _FILES)

for _spec_record in SPECS:
    registry.register(_spec_record)
