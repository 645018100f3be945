"""VGG-16 and VGG-19 (Simonyan & Zisserman, 2015) as in TF-slim's nets/vgg.py.

Five stages of 3x3 SAME convolutions with biases and ReLU (scopes `convK/convK_i`), each followed by
a 2x2/2 VALID max pool (`poolK`); the fully connected layers are convolutions: fc6 7x7 VALID over the
7x7 grid, fc7 and fc8 1x1, fc8 without activation, then the spatial squeeze. No batch norm; dropout
is the identity in inference. The checkpoints (converted by Google from the authors' Caffe release)
have 1000 classes in the standard order and take 224 inputs as 0..255 RGB minus the RGB channel
means (slim's vgg_preprocessing; NO flip to BGR, unlike Keras's "caffe" mode).
"""

from __future__ import annotations

import functools

import tensorflow as tf

from tfattack import backward, edits
from tfattack.models import layers, registry
from tfattack.models.inception_v3 import check_input
from tfattack.models.registry import ModelSpec

IMAGE_SIZE = 224
STAGE_FILTERS = (64, 128, 256, 512, 512)
FC_UNITS = 4096

# Convolutions per stage (the two published depths count them plus the three fc layers).
CONVS_PER_STAGE = {
    "vgg_16": (2, 2, 3, 3, 3),
    "vgg_19": (2, 2, 4, 4, 4),
}


def conv_relu(store, x, name: str, filters: int, kernel: int, padding: str = "SAME", activation=backward.relu):
    """slim.conv2d under the VGG arg scope: weights and biases, no normalizer."""
    return layers.conv2d(store, x, name, filters, kernel, padding=padding, batch_norm=False,
                         activation=activation)


def vgg(store, x, convs_per_stage, scope: str, num_classes: int = 1000):
    """The TF-slim VGG forward pass: x is [N, 224, 224, 3], 0..255 RGB minus the channel means.

    Returns (logits [N, num_classes], end_points) with slim's end-point names, which carry the network
    scope as slim's do (e.g. "vgg_16/conv5/conv5_3", "vgg_16/fc8").
    """
    check_input(x, scope, IMAGE_SIZE)
    end_points = backward.EndPoints()
    net = x
    for stage, (count, filters) in enumerate(zip(convs_per_stage, STAGE_FILTERS), start=1):
        for index in range(1, count + 1):
            name = f"conv{stage}/conv{stage}_{index}"
            net = conv_relu(store, net, name, filters, 3)
            net = edits.end_point(end_points, f"{scope}/{name}", net)
        net = layers.max_pool(net, 2, 2, "VALID")
        net = edits.end_point(end_points, f"{scope}/pool{stage}", net)
    net = conv_relu(store, net, "fc6", FC_UNITS, 7, padding="VALID")
    net = edits.end_point(end_points, f"{scope}/fc6", net)
    net = conv_relu(store, net, "fc7", FC_UNITS, 1)
    net = edits.end_point(end_points, f"{scope}/fc7", net)
    net = conv_relu(store, net, "fc8", num_classes, 1, activation=None)
    logits = tf.squeeze(net, axis=[1, 2])
    end_points[f"{scope}/fc8"] = logits  # slim records the squeezed logits under fc8
    return logits, end_points


def build(spec: ModelSpec, seed: int = 0, *, convs_per_stage) -> layers.SlimNetwork:
    """The VGG network of a registry spec (random weights until restored); `convs_per_stage` is bound
    per depth at registration, and the official scope is the architecture's name."""
    if spec.image_size != IMAGE_SIZE:
        raise ValueError(f"model {spec.name!r}: {spec.architecture} is defined for {IMAGE_SIZE} inputs "
                         f"(fc6 is a 7x7 VALID convolution), the spec says {spec.image_size}")
    forward = functools.partial(vgg, convs_per_stage=convs_per_stage, scope=spec.architecture,
                                num_classes=spec.num_classes)
    return layers.SlimNetwork(forward, spec.architecture, spec.image_size, seed=seed)


for _architecture, _convs in CONVS_PER_STAGE.items():
    registry.register_architecture(_architecture, functools.partial(build, convs_per_stage=_convs))


# --- Weight records ---------------------------------------------------------------------------------

_PAPER = ("Simonyan, Zisserman: Very Deep Convolutional Networks for Large-Scale Image Recognition, "
          "ICLR 2015 (arXiv:1409.1556)")


def _spec(depth: int, top1: float) -> ModelSpec:
    name = f"vgg_{depth}"
    return ModelSpec(
        name=name, architecture=name, source="slim_checkpoint", image_size=IMAGE_SIZE,
        preprocessing="vgg_rgb_mean", num_classes=1000, checkpoint_scope=name, aux_logits=False,
        url=f"http://download.tensorflow.org/models/{name}_2016_08_28.tar.gz",
        archive_files=(f"{name}.ckpt",), default_location=name, licence="Apache-2.0",
        provenance="Google, TF-slim image classification model zoo (tensorflow/models research/slim): the "
                   "Oxford VGG authors' Caffe weights converted to a TF1 checkpoint, scope "
                   f"{name}, 1000 classes; the original weights' terms are at "
                   "http://www.robots.ox.ac.uk/~vgg/research/very_deep/",
        reference_top1=top1, reference_note="ImageNet validation top-1, TF-slim model zoo table",
        paper=_PAPER)


FAMILY = "TF-slim VGG"
SPECS = (_spec(16, 71.5), _spec(19, 71.1))

for _spec_record in SPECS:
    registry.register(_spec_record)
