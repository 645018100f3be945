"""ResNet-v2 50/101/152 (He et al., 2016, pre-activation units) as in TF-slim's nets/resnet_v2.py.

The net is a table of blocks: each block is `num_units` bottleneck units (scopes
`<block>/unit_<i>/bottleneck_v2`), all of depth `4 * base_depth`, the block's stride sitting in its
LAST unit (v2's convention). A unit is pre-activation: BN + ReLU ("preact") first, then 1x1, 3x3
(explicitly padded when strided) and 1x1 convolutions; the shortcut is the raw input (subsampled by
the stride) when the depth does not change, else a 1x1 projection of the pre-activated input.
The root is a 7x7/2 convolution with biases (no BN: the first unit normalises) and a 3x3/2 SAME max
pool; the trunk ends in a BN + ReLU ("postnorm"), a global mean and 1x1 logits with biases.

slim's resnet arg scope: batch norm with epsilon 1e-5 and a learned scale (gamma).

The net is fully convolutional, so it runs at any input size; the official checkpoints are evaluated
at 299 with Inception preprocessing ([-1, 1]), as the TF-slim model zoo says.
"""

from __future__ import annotations

import dataclasses
import functools

import tensorflow as tf

from tfattack import backward, edits
from tfattack.models import layers, registry
from tfattack.models.registry import ModelSpec

BN_EPSILON = 1e-5
IMAGE_SIZE = 299
ROOT_DEPTH = 64


@dataclasses.dataclass(frozen=True)
class Block:
    """`num_units` bottleneck units of depth 4 * base_depth; the last unit has stride `stride`."""

    scope: str
    base_depth: int
    num_units: int
    stride: int

    def unit_strides(self):
        return [1] * (self.num_units - 1) + [self.stride]


def blocks_of_depth(units_per_block):
    """The four blocks of slim's resnet_v2_<depth>, given the unit count of each block."""
    base_depths = (64, 128, 256, 512)
    strides = (2, 2, 2, 1)
    return tuple(Block(f"block{i + 1}", base, units, stride)
                 for i, (base, units, stride) in enumerate(zip(base_depths, units_per_block, strides)))


# Units per block of the published depths (3 convolutions per unit + root + logits = depth).
BLOCKS = {
    "resnet_v2_50": blocks_of_depth((3, 4, 6, 3)),
    "resnet_v2_101": blocks_of_depth((3, 4, 23, 3)),
    "resnet_v2_152": blocks_of_depth((3, 8, 36, 3)),
}


def _reserve_gamma(store, bn_name: str, channels: int):
    # With a learned scale, slim builds batch norm on the Keras BN layer, which creates gamma BEFORE
    # beta; layers.batch_norm asks for beta first, so gamma is asked for here first to keep the
    # official creation order (store.get returns the same variable when asked again).
    store.get(f"{bn_name}/gamma", [channels], "ones")


def batch_norm_relu(store, x, name: str):
    _reserve_gamma(store, name, x.shape[-1])
    return layers.batch_norm(store, x, name, scale=True, epsilon=BN_EPSILON, activation=backward.relu)


def conv_bn_relu(store, x, name: str, filters: int, kernel: int, stride: int = 1):
    """slim.conv2d under the resnet arg scope (BN with gamma, ReLU); strided ones padded explicitly."""
    store.get(f"{name}/weights", [kernel, kernel, x.shape[-1], filters], "he")
    _reserve_gamma(store, f"{name}/BatchNorm", filters)
    return layers.conv2d_same(store, x, name, filters, kernel, stride, bn_scale=True, bn_epsilon=BN_EPSILON)


def conv_with_biases(store, x, name: str, filters: int, kernel: int, stride: int = 1):
    """slim.conv2d with normalizer_fn=None, activation_fn=None: weights and biases only."""
    return layers.conv2d_same(store, x, name, filters, kernel, stride, batch_norm=False, activation=None)


def bottleneck(store, x, scope: str, depth: int, depth_bottleneck: int, stride: int, end_points: dict):
    """slim's bottleneck_v2 unit; variables in its creation order: preact, shortcut, conv1..conv3.

    A unit whose depth changes feeds its pre-activation to both a 1x1 shortcut convolution and the branch; the
    others keep the raw input as the shortcut and their pre-activation is the branch's first step (what LinBP
    linearises there)."""
    projected = depth != x.shape[-1]

    def branch(inputs):
        residual = conv_bn_relu(store, inputs, f"{scope}/conv1", depth_bottleneck, 1)
        residual = edits.end_point(end_points, f"{scope}/conv1", residual)
        residual = conv_bn_relu(store, residual, f"{scope}/conv2", depth_bottleneck, 3, stride)
        residual = edits.end_point(end_points, f"{scope}/conv2", residual)
        residual = conv_with_biases(store, residual, f"{scope}/conv3", depth, 1)
        residual = edits.end_point(end_points, f"{scope}/conv3", residual)
        return residual

    if projected:
        preact = batch_norm_relu(store, x, f"{scope}/preact")

        def shortcut(inputs):
            value = conv_with_biases(store, inputs, f"{scope}/shortcut", depth, 1, stride)
            return edits.end_point(end_points, f"{scope}/shortcut", value)

        output = backward.residual_unit(preact, shortcut, branch, projected=True)
    else:
        def subsample(inputs):  # slim's 1x1 max pool of stride `stride`: every stride-th pixel
            return inputs if stride == 1 else inputs[:, ::stride, ::stride, :]

        def preact_branch(inputs):
            return branch(batch_norm_relu(store, inputs, f"{scope}/preact"))

        output = backward.residual_unit(x, subsample, preact_branch)
    return edits.end_point(end_points, scope, output)


def resnet_v2(store, x, blocks, scope: str, num_classes: int = 1001):
    """The TF-slim ResNet-v2 forward pass in inference mode: x is [N, H, W, 3] in [-1, 1].

    Returns (logits [N, num_classes], end_points) with slim's end-point names, which carry the
    network scope as slim's do (e.g. "resnet_v2_50/block4", "resnet_v2_50/logits").
    """
    x = tf.convert_to_tensor(x)
    if x.shape.rank != 4 or x.shape[-1] != 3:
        raise ValueError(f"{scope} takes [N, H, W, 3] images, got shape {x.shape}")
    points = backward.EndPoints(prefix=f"{scope}/")  # slim's end points relative to the network scope (marked as reached)
    net = conv_with_biases(store, x, "conv1", ROOT_DEPTH, 7, 2)
    net = edits.end_point(points, "conv1", net)
    net = layers.max_pool(net, 3, 2, "SAME")  # pool1: the resnet arg scope makes max pools SAME
    for block in blocks:
        depth = 4 * block.base_depth
        for index, stride in enumerate(block.unit_strides()):
            net = bottleneck(store, net, f"{block.scope}/unit_{index + 1}/bottleneck_v2", depth,
                             block.base_depth, stride, points)
        net = edits.end_point(points, block.scope, net)
    net = batch_norm_relu(store, net, "postnorm")
    net = layers.global_avg_pool(net)  # pool5
    logits = conv_with_biases(store, net, "logits", num_classes, 1)
    points["logits"] = logits
    logits = tf.squeeze(logits, axis=[1, 2])
    end_points = {f"{scope}/{name}": value for name, value in points.items()}
    end_points["predictions"] = tf.nn.softmax(logits)
    return logits, end_points


def build(spec: ModelSpec, seed: int = 0, *, blocks) -> layers.SlimNetwork:
    """The ResNet-v2 network of a registry spec (random weights until restored); `blocks` is bound
    per depth at registration, and the official scope is the architecture's name."""
    forward = functools.partial(resnet_v2, blocks=blocks, scope=spec.architecture, num_classes=spec.num_classes)
    return layers.SlimNetwork(forward, spec.architecture, spec.image_size, seed=seed)


for _architecture, _blocks in BLOCKS.items():
    registry.register_architecture(_architecture, functools.partial(build, blocks=_blocks))


# --- Weight records ---------------------------------------------------------------------------------

_PAPER = ("He, Zhang, Ren, Sun: Identity Mappings in Deep Residual Networks, ECCV 2016 (arXiv:1603.05027)")


def _spec(depth: int, top1: float) -> ModelSpec:
    name = f"resnet_v2_{depth}"
    return ModelSpec(
        name=name, architecture=name, source="slim_checkpoint", image_size=IMAGE_SIZE,
        preprocessing="inception", num_classes=1001, checkpoint_scope=name, aux_logits=False,
        url=f"http://download.tensorflow.org/models/{name}_2017_04_14.tar.gz",
        archive_files=(f"{name}.ckpt",), default_location=name, licence="Apache-2.0",
        provenance="Google, TF-slim image classification model zoo (tensorflow/models research/slim), trained "
                   f"with TF-slim; TF1 checkpoint, scope {name}; the zoo evaluates it with Inception "
                   "preprocessing at 299",
        reference_top1=top1, reference_note="ImageNet validation top-1 at 299, TF-slim model zoo table",
        paper=_PAPER)


FAMILY = "TF-slim ResNet-v2"
SPECS = (_spec(50, 75.6), _spec(101, 77.0), _spec(152, 77.8))

for _spec_record in SPECS:
    registry.register(_spec_record)
