"""torchvision's MobileNetV2 in TF2, reading torchvision's `.pth` file without torch.

`features.0` is a 3x3/2 convolution + batch norm + ReLU6; `features.1`..`features.17` are inverted residual
blocks (1x1 expansion + BN + ReLU6 unless the expansion is 1, a 3x3 depthwise convolution + BN + ReLU6, a linear
1x1 projection + BN; the input added back when the stride is 1 and the width is kept); `features.18` a 1x1
convolution to 1280 channels + BN + ReLU6; then global average pooling and `classifier.1`, a linear layer (dropout
is the identity in eval mode). Padding is PyTorch's symmetric 1 pixel, explicit here. End points: `features.0` to
`features.18`, `classifier.1` is the logits.
"""

from __future__ import annotations

import functools

import tensorflow as tf

from tfattack import backward, edits
from tfattack.models import features, layers, registry, torch_layers
from tfattack.models.torch_layers import torchvision_record

BN_EPSILON = 1e-5
IMAGE_SIZE = 224
STEM_FILTERS = 32
HEAD_FILTERS = 1280
# (expansion t, channels c, repeats n, first stride s): Sandler et al. CVPR 2018, table 2.
SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


def _conv_bn_relu6(store, x, prefix: str, filters: int, kernel: int, stride: int = 1, depthwise: bool = False,
                   activation: bool = True):
    """`{prefix}.0` convolution (no bias) + `{prefix}.1` batch norm [+ ReLU6]: torchvision's Conv2dNormActivation."""
    padding = kernel // 2
    if depthwise:
        y = torch_layers.depthwise_conv2d(store, x, f"{prefix}.0", kernel, stride, padding, bn=f"{prefix}.1",
                                          epsilon=BN_EPSILON)
    else:
        y = torch_layers.conv2d(store, x, f"{prefix}.0", filters, kernel, stride, padding, bn=f"{prefix}.1",
                                epsilon=BN_EPSILON)
    y = edits.layer_output(y)
    return backward.relu6(y) if activation else y


def inverted_residual(store, x, name: str, expansion: int, filters: int, stride: int):
    hidden = x.shape[-1] * expansion
    y, part = x, 0
    if expansion != 1:
        y = _conv_bn_relu6(store, y, f"{name}.conv.0", hidden, 1)
        part = 1
    y = _conv_bn_relu6(store, y, f"{name}.conv.{part}", hidden, 3, stride, depthwise=True)
    y = edits.layer_output(torch_layers.conv2d(store, y, f"{name}.conv.{part + 1}", filters, 1,
                                               bn=f"{name}.conv.{part + 2}", epsilon=BN_EPSILON))
    return backward.residual_add(x, y) if stride == 1 and x.shape[-1] == filters else y


def is_depthwise(name: str) -> bool:
    """The depthwise kernels' state-dict keys: `features.1.conv.0.0` (no expansion), `features.N.conv.1.0`."""
    parts = name.split(".")
    return (len(parts) == 6 and parts[0] == "features" and parts[2] == "conv" and parts[4] == "0"
            and parts[3] == ("0" if parts[1] == "1" else "1"))


def mobilenet_v2(store, x, num_classes: int = 1000):
    end_points = backward.EndPoints()
    net = edits.end_point(end_points, "features.0", _conv_bn_relu6(store, x, "features.0", STEM_FILTERS, 3, 2))
    index = 1
    for expansion, filters, repeats, stride in SETTINGS:
        for repeat in range(repeats):
            net = inverted_residual(store, net, f"features.{index}", expansion, filters, stride if repeat == 0 else 1)
            net = edits.end_point(end_points, f"features.{index}", net)
            index += 1
    net = edits.end_point(end_points, f"features.{index}", _conv_bn_relu6(store, net, f"features.{index}",
                                                                         HEAD_FILTERS, 1))
    logits = torch_layers.linear(store, layers.global_avg_pool(net, keepdims=False), "classifier.1", num_classes)
    end_points["Logits"] = logits
    return logits, end_points


class TorchvisionMobileNetV2(torch_layers.TorchStateDictNetwork):
    """torchvision's MobileNetV2 whose variables are named by its state-dict keys."""

    family = "MobileNet variant"
    classifier_bias = "classifier.1.bias"

    def __init__(self, architecture: str, num_classes: int = 1000, seed: int = 0):
        forward = functools.partial(mobilenet_v2, num_classes=num_classes)
        super().__init__(forward, architecture, IMAGE_SIZE, seed=seed)

    def tf_axes(self, name: str, ndim: int):
        return torch_layers.torch_to_tf_axes(ndim, depthwise=is_depthwise(name))


build = torch_layers.fixed_size_builder(TorchvisionMobileNetV2, IMAGE_SIZE)

registry.register_architecture("mobilenet_v2", build)
# The ends of the 28 px (features.6), 14 px (features.13) and 7 px (features.17) stages.
features.register_aliases("mobilenet_v2", {"early": "features.6", "mid": "features.13", "late": "features.17"})

FAMILY = "torchvision MobileNetV2"
SPECS = (torchvision_record("tv_mobilenet_v2", "mobilenet_v2", "mobilenet_v2-b0353104.pth",
                            "MobileNet_V2_Weights.IMAGENET1K_V1", 71.878,
                            paper="Sandler et al., MobileNetV2: Inverted residuals and linear bottlenecks, CVPR 2018"),)

for _spec_record in SPECS:
    registry.register(_spec_record)
