"""torchvision's DenseNet-121 in TF2, reading torchvision's `.pth` file without torch.

The network is torchvision's `DenseNet` (Huang et al., densely connected convolutional networks; the BC variant:
bottlenecks and compression 0.5) in eval mode:

  stem        features.conv0 (7x7/2, padding 3) - norm0 - relu0 - pool0 (3x3/2 max pool, padding 1)
  dense block features.denseblockN: layers denselayerM, each
                  new = conv2(3x3, growth) . relu . norm2 . conv1(1x1, bn_size * growth) . relu . norm1 (features)
              appended to the block's features along the channels; the block's output is all of them
  transition  features.transitionN between blocks: norm - relu - conv (1x1, half the channels) - 2x2/2 average pool
  head        features.norm5, ReLU, global average pool, `classifier` (linear)

Growth 32, bn_size 4, 64 stem channels, (6, 12, 24, 16) layers per block; every batch norm has epsilon 1e-5; no
convolution has a bias. A dense layer reads the concatenation of everything before it in its block: the block's
features grow by one concatenation per layer, as torchvision's forward concatenates once per layer (its
checkpointed memory-efficient variant is a training device; attacks keep the forward for one backward pass).

End points carry torchvision's module names: `features.pool0`, each `features.denseblockN` (the concatenated
features), each `features.transitionN` and `features.norm5` (before the head's ReLU).

torchvision's published file (densenet121-a639ec97.pth) predates PyTorch's ban on dots in module names: its dense
layers' keys read `...denselayer1.norm.1.weight`, `...conv.2.weight` where the module names `norm1`, `conv2`;
`TorchvisionDenseNet.load_state_dict` accepts both layouts.
"""

from __future__ import annotations

import functools
import re
from typing import Mapping

import numpy as np
import tensorflow as tf

from tfattack import backward, edits
from tfattack.models import features, layers, registry, torch_layers
from tfattack.models.torch_layers import torchvision_record

BN_EPSILON = 1e-5
IMAGE_SIZE = 224
GROWTH_RATE = 32
BN_SIZE = 4
STEM_CHANNELS = 64
BLOCK_LAYERS = {"densenet121": (6, 12, 24, 16)}

# The older name of a dense layer's parameter: `denselayerM.norm.1.weight` for `denselayerM.norm1.weight` (the
# number was a module name of its own once); the relus had no parameters, so norms and convolutions only.
_OLD_DENSE_LAYER_KEY = re.compile(r"((?:^|\.)denselayer\d+\.(?:norm|conv))\.([12])\.([^.]+)$")


def current_key(key: str) -> str:
    """A state-dict key in today's module names (an old-layout key renamed, any other unchanged)."""
    return _OLD_DENSE_LAYER_KEY.sub(r"\1\2.\3", key)


def _norm_relu_conv(store, x, prefix: str, norm: str, conv: str, filters: int, kernel: int):
    """Pre-activation: batch norm, ReLU, then a convolution (no bias; kernel // 2 zero padding)."""
    y = backward.relu(torch_layers.batch_norm(store, x, f"{prefix}.{norm}", BN_EPSILON))
    return edits.layer_output(torch_layers.conv2d(store, y, f"{prefix}.{conv}", filters, kernel,
                                                  padding=kernel // 2))


def dense_block(store, x, name: str, num_layers: int):
    """`features.denseblockN`: each layer's `GROWTH_RATE` new channels appended to the block's features."""
    for index in range(1, num_layers + 1):
        prefix = f"{name}.denselayer{index}"
        bottleneck = _norm_relu_conv(store, x, prefix, "norm1", "conv1", BN_SIZE * GROWTH_RATE, 1)
        new = _norm_relu_conv(store, bottleneck, prefix, "norm2", "conv2", GROWTH_RATE, 3)
        x = backward.dense_concat(x, new)
    return x


def transition(store, x, name: str):
    """`features.transitionN`: norm, ReLU, 1x1 convolution to half the channels, 2x2/2 average pool."""
    y = _norm_relu_conv(store, x, name, "norm", "conv", x.shape[-1] // 2, 1)
    return tf.nn.avg_pool2d(y, 2, 2, "VALID")


def torchvision_densenet(store, x, architecture: str, num_classes: int = 1000):
    """The forward pass on [N, 224, 224, 3] normalised RGB; returns (logits, end points)."""
    end_points = backward.EndPoints()
    net = torch_layers.conv_bn(store, x, "features.conv0", "features.norm0", STEM_CHANNELS, 7, 2, 3,
                               epsilon=BN_EPSILON)
    net = edits.end_point(end_points, "features.pool0", torch_layers.max_pool_padded(net, 3, 2, 1))
    blocks = BLOCK_LAYERS[architecture]
    for block, num_layers in enumerate(blocks, start=1):
        net = edits.end_point(end_points, f"features.denseblock{block}",
                              dense_block(store, net, f"features.denseblock{block}", num_layers))
        if block < len(blocks):
            net = edits.end_point(end_points, f"features.transition{block}",
                                  transition(store, net, f"features.transition{block}"))
    net = edits.end_point(end_points, "features.norm5",
                          torch_layers.batch_norm(store, net, "features.norm5", BN_EPSILON))
    net = layers.global_avg_pool(backward.relu(net), keepdims=False)
    logits = torch_layers.linear(store, net, "classifier", num_classes)
    end_points["Logits"] = logits
    return logits, end_points


class TorchvisionDenseNet(torch_layers.TorchStateDictNetwork):
    """A torchvision DenseNet whose variables are named by its state-dict keys."""

    family = "DenseNet variant"
    classifier_bias = "classifier.bias"

    def __init__(self, architecture: str, num_classes: int = 1000, seed: int = 0):
        forward = functools.partial(torchvision_densenet, architecture=architecture, num_classes=num_classes)
        super().__init__(forward, architecture, IMAGE_SIZE, seed=seed)

    def load_state_dict(self, state_dict: Mapping[str, np.ndarray], source: str, model_name: str) -> int:
        """Either layout of the dense layers' keys (torchvision's published file has the old one); the renamed
        state dict is then checked key by key and shape by shape as any other."""
        renamed = {}
        for key, value in state_dict.items():
            name = current_key(key)
            if name in renamed:
                raise torch_layers.StateDictMismatchError(
                    f"{source} holds {name} twice, in the old and the current layout of dense-layer keys "
                    f"(model {model_name!r})")
            renamed[name] = value
        return super().load_state_dict(renamed, source, model_name)


build = torch_layers.fixed_size_builder(TorchvisionDenseNet, IMAGE_SIZE)

for _architecture in BLOCK_LAYERS:
    registry.register_architecture(_architecture, build)
    # The outputs of the 56, 28 and 14 px dense blocks: the stages the ResNets' aliases name (layer1..layer3) and
    # VGG's (stages 3..5), so that early/mid/late tap the same resolutions on every torchvision surrogate. Block
    # 3 holds 24 of the 58 dense layers: by weight layers the three sit at about 1/9, 1/3 and 3/4 of the depth,
    # and no block output lies nearer the half.
    features.register_aliases(_architecture, {"early": "features.denseblock1", "mid": "features.denseblock2",
                                              "late": "features.denseblock3"})


# --- Weight records ---------------------------------------------------------------------------------

FAMILY = "torchvision DenseNet"
SPECS = (torchvision_record("tv_densenet121", "densenet121", "densenet121-a639ec97.pth",
                            "DenseNet121_Weights.IMAGENET1K_V1", 74.434,
                            paper="Huang et al., Densely connected convolutional networks, CVPR 2017"),)

for _spec_record in SPECS:
    registry.register(_spec_record)
