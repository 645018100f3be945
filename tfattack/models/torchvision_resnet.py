"""torchvision's ResNet family in TF2 (ResNet-18/50/101/152, ResNeXt-50 32x4d, Wide ResNet-50-2), reading
torchvision's `.pth` files and the robustness library's checkpoints without torch.

The network is torchvision's `ResNet` in eval mode: a 7x7/2 convolution, batch norm and ReLU, a 3x3/2 max pool
(padding 1), four stages of residual blocks, global average pooling and a linear classifier. A block's stride is
in its first unit (on the 3x3 convolution of a bottleneck), and a unit whose shape changes has a 1x1 convolution +
batch norm shortcut (`downsample`). PyTorch pads symmetrically, which TensorFlow's SAME does not for even inputs at
stride 2: the padding is explicit here. Batch norm epsilon 1e-5; inputs normalised by ImageNet's mean and std.

End points carry torchvision's module names, which the papers' layer choices use: `relu` (the stem), `maxpool`,
every unit (`layer2.3`), every stage (`layer2`, the same tensor as its last unit), `avgpool`. Residual additions,
ReLUs and the max pool go through `tfattack.backward`, each unit as a `residual_unit` (SGM, LinBP, BPA act here).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Tuple

from tfattack import backward, edits
from tfattack.models import features, layers, registry, torch_layers
from tfattack.models.torch_layers import torchvision_record

BN_EPSILON = 1e-5
IMAGE_SIZE = 224
STAGE_PLANES = (64, 128, 256, 512)


@dataclasses.dataclass(frozen=True)
class Variant:
    """`block` "basic" (two 3x3 convolutions) or "bottleneck" (1x1, 3x3, 1x1; expansion 4); units per stage;
    the 3x3 convolution's groups and width per group (torchvision's `groups`, `width_per_group`)."""

    block: str
    units: Tuple[int, int, int, int]
    groups: int = 1
    width_per_group: int = 64

    @property
    def expansion(self) -> int:
        return 4 if self.block == "bottleneck" else 1


VARIANTS = {
    "resnet18": Variant("basic", (2, 2, 2, 2)),
    "resnet50": Variant("bottleneck", (3, 4, 6, 3)),
    "resnet101": Variant("bottleneck", (3, 4, 23, 3)),
    "resnet152": Variant("bottleneck", (3, 8, 36, 3)),
    "resnext50_32x4d": Variant("bottleneck", (3, 4, 6, 3), groups=32, width_per_group=4),
    "wide_resnet50_2": Variant("bottleneck", (3, 4, 6, 3), width_per_group=128),
    # Not in torchvision: the robustness library's ResNet(Bottleneck, [3, 4, 6, 3], width_per_group=256).
    "wide_resnet50_4": Variant("bottleneck", (3, 4, 6, 3), width_per_group=256),
}


def _conv_bn(store, x, name: str, index: int, filters: int, kernel: int, stride: int = 1, groups: int = 1,
             relu: bool = True):
    """`{name}.conv{index}` + `{name}.bn{index}` (+ ReLU), padded as torchvision pads a kxk convolution."""
    return torch_layers.conv_bn(store, x, f"{name}.conv{index}", f"{name}.bn{index}", filters, kernel, stride,
                                kernel // 2, groups, epsilon=BN_EPSILON, relu=relu)


def unit(store, x, name: str, variant: Variant, planes: int, stride: int, end_points):
    """One residual unit `layerS.U`: relu(shortcut(x) + branch(x))."""
    width = int(planes * (variant.width_per_group / 64.0)) * variant.groups
    out_channels = planes * variant.expansion
    projected = stride != 1 or x.shape[-1] != out_channels

    def branch(inputs):
        if variant.block == "basic":
            y = _conv_bn(store, inputs, name, 1, planes, 3, stride)
            return _conv_bn(store, y, name, 2, planes, 3, relu=False)
        y = _conv_bn(store, inputs, name, 1, width, 1)
        y = _conv_bn(store, y, name, 2, width, 3, stride, variant.groups)
        return _conv_bn(store, y, name, 3, out_channels, 1, relu=False)

    def shortcut(inputs):
        if not projected:
            return inputs
        return torch_layers.conv_bn(store, inputs, f"{name}.downsample.0", f"{name}.downsample.1", out_channels, 1,
                                    stride, epsilon=BN_EPSILON, relu=False)

    out = backward.relu(backward.residual_unit(x, shortcut, branch, projected=projected))
    return edits.end_point(end_points, name, out)


def torchvision_resnet(store, x, variant: Variant, num_classes: int = 1000):
    """The forward pass on [N, 224, 224, 3] normalised RGB; returns (logits, end points)."""
    end_points = backward.EndPoints()
    net = torch_layers.conv_bn(store, x, "conv1", "bn1", 64, 7, 2, 3, epsilon=BN_EPSILON)
    net = edits.end_point(end_points, "relu", net)
    net = edits.end_point(end_points, "maxpool", torch_layers.max_pool_padded(net, 3, 2, 1))
    for stage, (units, planes) in enumerate(zip(variant.units, STAGE_PLANES), start=1):
        for index in range(units):
            stride = 2 if stage > 1 and index == 0 else 1
            net = unit(store, net, f"layer{stage}.{index}", variant, planes, stride, end_points)
        net = edits.end_point(end_points, f"layer{stage}", net)
    net = edits.end_point(end_points, "avgpool", layers.global_avg_pool(net, keepdims=False))
    logits = torch_layers.linear(store, net, "fc", num_classes)
    end_points["Logits"] = logits
    return logits, end_points


class TorchvisionResNet(torch_layers.TorchStateDictNetwork):
    """A torchvision ResNet-family network whose variables are named by its state-dict keys."""

    family = "ResNet-family architecture"

    def __init__(self, architecture: str, num_classes: int = 1000, seed: int = 0):
        self.variant = VARIANTS[architecture]
        forward = functools.partial(torchvision_resnet, variant=self.variant, num_classes=num_classes)
        super().__init__(forward, architecture, IMAGE_SIZE, seed=seed)


build = torch_layers.fixed_size_builder(TorchvisionResNet, IMAGE_SIZE)


for _architecture in VARIANTS:
    registry.register_architecture(_architecture, build)
    features.register_aliases(_architecture, {"early": "layer1", "mid": "layer2", "late": "layer3"})


# --- Weight records ---------------------------------------------------------------------------------

_PAPERS = {
    "resnet": "He et al., Deep residual learning for image recognition, CVPR 2016",
    "resnext": "Xie et al., Aggregated residual transformations for deep neural networks, CVPR 2017",
    "wide": "Zagoruyko, Komodakis: Wide residual networks, BMVC 2016",
}

# name -> (architecture, file, torchvision's weights enum, published top-1, paper)
_FILES = {
    "tv_resnet18": ("resnet18", "resnet18-f37072fd.pth", "ResNet18_Weights.IMAGENET1K_V1", 69.758, "resnet"),
    "tv_resnet50": ("resnet50", "resnet50-0676ba61.pth", "ResNet50_Weights.IMAGENET1K_V1", 76.130, "resnet"),
    "tv_resnet50_v2": ("resnet50", "resnet50-11ad3fa6.pth", "ResNet50_Weights.IMAGENET1K_V2", 80.858, "resnet"),
    "tv_resnet101": ("resnet101", "resnet101-63fe2227.pth", "ResNet101_Weights.IMAGENET1K_V1", 77.374, "resnet"),
    "tv_resnet152": ("resnet152", "resnet152-394f9c45.pth", "ResNet152_Weights.IMAGENET1K_V1", 78.312, "resnet"),
    "tv_resnext50_32x4d": ("resnext50_32x4d", "resnext50_32x4d-7cdf4587.pth", "ResNeXt50_32X4D_Weights.IMAGENET1K_V1",
                           77.618, "resnext"),
    "tv_wide_resnet50_2": ("wide_resnet50_2", "wide_resnet50_2-95faca4d.pth", "Wide_ResNet50_2_Weights.IMAGENET1K_V1",
                           78.468, "wide"),
}

FAMILY = "torchvision ResNets, ResNeXt, Wide ResNet"
SPECS = tuple(torchvision_record(name, *_FILES[name][:4], paper=_PAPERS[_FILES[name][4]]) for name in _FILES)

for _spec_record in SPECS:
    registry.register(_spec_record)
