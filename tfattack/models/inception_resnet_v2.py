"""Inception-ResNet-v2 (Szegedy et al., 2017) as in TF-slim's research/slim/nets/inception_resnet_v2.py.

tf_slim does not ship this net; the tables below are transcribed from the official definition's facts
in the block vocabulary of `tfattack.models.inception_v3` (every convolution: conv + batch norm
without gamma, eps 0.001, + ReLU; slim's SAME default, VALID where the official graph says so).

The trunk interleaves grid reductions with residual stages. A residual block runs its branches
(`Branch_i`, concatenated in order), projects the concatenation back to the input depth with a 1x1
convolution that has biases and neither batch norm nor activation (`Conv2d_1x1`), adds it to the
input scaled by the stage's factor (0.17, 0.10, 0.20: the paper's residual scaling) and applies the
ReLU after the sum. slim repeats them with `slim.repeat`, hence the scopes `Repeat/block35_1`..,
`Repeat_1/block17_1`.., `Repeat_2/block8_1`..; a last `Block8` has scale 1 and no activation.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional, Tuple

import tensorflow as tf

from tfattack import backward, edits
from tfattack.models import layers, registry
from tfattack.models.inception_v3 import _TRAMER as TRAMER_CITATION  # one copy of the citation
from tfattack.models.inception_v3 import (IMAGE_SIZE, Conv, Mixed, Pool, check_input, inception_builder,
                                          run_branch, run_table)
from tfattack.models.inception_v4 import fully_connected
from tfattack.models.registry import ModelSpec

SCOPE = "InceptionResnetV2"


@dataclasses.dataclass(frozen=True)
class ResidualStage:
    """`count` residual blocks `<scope>/<block>_<i>` (or one block named `scope` when `block` is empty).

    Each block: concat(branches) -> Conv2d_1x1 (biases, linear) -> input + scale * that -> ReLU
    (no activation when `activation` is False).
    """

    scope: str
    block: str
    count: int
    branches: Tuple[tuple, ...]
    scale: float
    activation: bool = True

    def block_scopes(self):
        if not self.block:
            return [self.scope]
        return [f"{self.scope}/{self.block}_{i}" for i in range(1, self.count + 1)]


BLOCK35_BRANCHES = (  # 35x35x320
    (Conv("Conv2d_1x1", 32, 1),),
    (Conv("Conv2d_0a_1x1", 32, 1), Conv("Conv2d_0b_3x3", 32, 3)),
    (Conv("Conv2d_0a_1x1", 32, 1), Conv("Conv2d_0b_3x3", 48, 3), Conv("Conv2d_0c_3x3", 64, 3)),
)

BLOCK17_BRANCHES = (  # 17x17x1088
    (Conv("Conv2d_1x1", 192, 1),),
    (Conv("Conv2d_0a_1x1", 128, 1), Conv("Conv2d_0b_1x7", 160, (1, 7)), Conv("Conv2d_0c_7x1", 192, (7, 1))),
)

BLOCK8_BRANCHES = (  # 8x8x2080
    (Conv("Conv2d_1x1", 192, 1),),
    (Conv("Conv2d_0a_1x1", 192, 1), Conv("Conv2d_0b_1x3", 224, (1, 3)), Conv("Conv2d_0c_3x1", 256, (3, 1))),
)

# The trunk in slim's creation order; entries named like slim's end points become end points.
TRUNK = (
    Conv("Conv2d_1a_3x3", 32, 3, stride=2, padding="VALID"),  # 149x149x32
    Conv("Conv2d_2a_3x3", 32, 3, padding="VALID"),            # 147x147x32
    Conv("Conv2d_2b_3x3", 64, 3),                             # 147x147x64
    Pool("MaxPool_3a_3x3", "max", 3, stride=2, padding="VALID"),  # 73x73x64
    Conv("Conv2d_3b_1x1", 80, 1, padding="VALID"),            # 73x73x80
    Conv("Conv2d_4a_3x3", 192, 3, padding="VALID"),           # 71x71x192
    Pool("MaxPool_5a_3x3", "max", 3, stride=2, padding="VALID"),  # 35x35x192
    Mixed("Mixed_5b", (                                       # 35x35x320
        (Conv("Conv2d_1x1", 96, 1),),
        (Conv("Conv2d_0a_1x1", 48, 1), Conv("Conv2d_0b_5x5", 64, 5)),
        (Conv("Conv2d_0a_1x1", 64, 1), Conv("Conv2d_0b_3x3", 96, 3), Conv("Conv2d_0c_3x3", 96, 3)),
        (Pool("AvgPool_0a_3x3", "avg", 3), Conv("Conv2d_0b_1x1", 64, 1)),
    )),
    ResidualStage("Repeat", "block35", 10, BLOCK35_BRANCHES, 0.17),
    Mixed("Mixed_6a", (                                       # 17x17x1088
        (Conv("Conv2d_1a_3x3", 384, 3, stride=2, padding="VALID"),),
        (Conv("Conv2d_0a_1x1", 256, 1), Conv("Conv2d_0b_3x3", 256, 3),
         Conv("Conv2d_1a_3x3", 384, 3, stride=2, padding="VALID")),
        (Pool("MaxPool_1a_3x3", "max", 3, stride=2, padding="VALID"),),
    )),
    ResidualStage("Repeat_1", "block17", 20, BLOCK17_BRANCHES, 0.10),
    Mixed("Mixed_7a", (                                       # 8x8x2080
        (Conv("Conv2d_0a_1x1", 256, 1), Conv("Conv2d_1a_3x3", 384, 3, stride=2, padding="VALID")),
        (Conv("Conv2d_0a_1x1", 256, 1), Conv("Conv2d_1a_3x3", 288, 3, stride=2, padding="VALID")),
        (Conv("Conv2d_0a_1x1", 256, 1), Conv("Conv2d_0b_3x3", 288, 3),
         Conv("Conv2d_1a_3x3", 320, 3, stride=2, padding="VALID")),
        (Pool("MaxPool_1a_3x3", "max", 3, stride=2, padding="VALID"),),
    )),
    ResidualStage("Repeat_2", "block8", 9, BLOCK8_BRANCHES, 0.20),
    ResidualStage("Block8", "", 1, BLOCK8_BRANCHES, 1.0, activation=False),
    Conv("Conv2d_7b_1x1", 1536, 1),                           # 8x8x1536
)

# The 17x17 output of the block17 stage feeds the auxiliary head (slim's end point "PreAuxLogits").
AUX_INPUT_STAGE = "Repeat_1"

# Auxiliary head on PreAuxLogits (17x17x1088 -> 5x5 -> 1x1); slim names the pool "Conv2d_1a_3x3" and
# sizes Conv2d_2a_5x5's kernel to its 5x5 input (at 299).
AUX_HEAD = (
    Pool("Conv2d_1a_3x3", "avg", 5, stride=3, padding="VALID"),
    Conv("Conv2d_1b_1x1", 128, 1),
    Conv("Conv2d_2a_5x5", 768, 5, padding="VALID"),
)


def residual_block(store, x, scope: str, branches, scale: float, activation: Optional[Callable] = backward.relu):
    """One Inception-ResNet block (block35 / block17 / block8) under variable scope `scope`."""
    mixed = tf.concat([run_branch(store, x, branch, f"{scope}/Branch_{i}/", "SAME")
                       for i, branch in enumerate(branches)], axis=3)
    up = layers.conv2d(store, mixed, f"{scope}/Conv2d_1x1", x.shape[-1], 1, batch_norm=False, activation=None)
    net = backward.residual_add(x, scale * up)
    return activation(net) if activation is not None else net


def run_trunk(store, x, trunk, end_points: dict):
    for entry in trunk:
        if isinstance(entry, ResidualStage):
            activation = backward.relu if entry.activation else None
            for scope in entry.block_scopes():
                x = residual_block(store, x, scope, entry.branches, entry.scale, activation)
            if entry.scope == AUX_INPUT_STAGE:
                x = edits.end_point(end_points, "PreAuxLogits", x)
        else:
            x = run_table(store, x, (entry,), end_points, padding="SAME")
    return x


def inception_resnet_v2(store, x, num_classes: int = 1001, aux_logits: bool = True):
    """The TF-slim Inception-ResNet-v2 forward pass in inference mode: x is [N, 299, 299, 3] in [-1, 1].

    Returns (logits [N, num_classes], end_points) with slim's end-point names; dropout is the identity.
    """
    check_input(x, "inception_resnet_v2")
    end_points = backward.EndPoints()
    net = run_trunk(store, x, TRUNK, end_points)
    if aux_logits:  # created after the trunk, as in slim
        aux = run_branch(store, end_points["PreAuxLogits"], AUX_HEAD, "AuxLogits/", padding="SAME")
        end_points["AuxLogits"] = fully_connected(store, aux, "AuxLogits/Logits", num_classes)
    # Logits/AvgPool_1a_8x8 is a VALID average pool over the whole 8x8 grid, i.e. its mean, then flattened.
    net = layers.global_avg_pool(net, keepdims=False)
    end_points["PreLogitsFlatten"] = net
    end_points["Logits"] = logits = fully_connected(store, net, "Logits/Logits", num_classes)
    end_points["Predictions"] = tf.nn.softmax(logits)
    return logits, end_points


build = inception_builder("inception_resnet_v2", inception_resnet_v2, SCOPE)

registry.register_architecture("inception_resnet_v2", build)


# --- Weight records ---------------------------------------------------------------------------------

_PAPER = ("Szegedy, Ioffe, Vanhoucke, Alemi: Inception-v4, Inception-ResNet and the Impact of Residual "
          "Connections on Learning, AAAI 2017 (arXiv:1602.07261)")
_SLIM_ZOO = "Google, TF-slim image classification model zoo (tensorflow/models research/slim)"
_ADV_MODELS = "Google, tensorflow/models research/adv_imagenet_models (Apache-2.0)"

FAMILY = "TF-slim Inception-ResNet-v2 (official, ensemble adversarially trained)"
SPECS = (
    ModelSpec(
        name="inception_resnet_v2", architecture="inception_resnet_v2", source="slim_checkpoint",
        image_size=IMAGE_SIZE, preprocessing="inception", num_classes=1001, checkpoint_scope=SCOPE,
        aux_logits=True, url="http://download.tensorflow.org/models/inception_resnet_v2_2016_08_30.tar.gz",
        archive_files=("inception_resnet_v2_2016_08_30.ckpt",), default_location="inception_resnet_v2",
        licence="Apache-2.0", provenance=f"{_SLIM_ZOO}; TF1 V1 single-file checkpoint, scope {SCOPE}",
        reference_top1=80.4, reference_note="ImageNet validation top-1, TF-slim model zoo table", paper=_PAPER),
    ModelSpec(
        name="ens_adv_inception_resnet_v2", architecture="inception_resnet_v2", source="slim_checkpoint",
        image_size=IMAGE_SIZE, preprocessing="inception", num_classes=1001, checkpoint_scope=SCOPE,
        aux_logits=True, url="http://download.tensorflow.org/models/ens_adv_inception_resnet_v2_2017_08_18.tar.gz",
        archive_files=("ens_adv_inception_resnet_v2.ckpt.data-00000-of-00001",
                       "ens_adv_inception_resnet_v2.ckpt.index"),
        default_location="ens_adv_inception_resnet_v2", licence="Apache-2.0",
        provenance=f"{_ADV_MODELS}: ensemble adversarial training (step L.L. on an ensemble of 3 models); TF1 "
                   f"V2 checkpoint of the TF-slim graph, scope {SCOPE}, the archive also holds a .meta graph; "
                   "the community's renamed copies use scope EnsAdvInceptionResnetV2 (the loader detects it)",
        reference_top1=79.8,
        reference_note="ImageNet validation (the paper's 'test set'), clean top-1 = 100 - error in "
                       "Tramer et al. 2018, Table 4",
        paper=f"{TRAMER_CITATION}; {_PAPER}"),
)

for _spec_record in SPECS:
    registry.register(_spec_record)
