"""Inception-v4 (Szegedy et al., 2017) as in TF-slim's research/slim/nets/inception_v4.py.

tf_slim does not ship this net, so the tables below are transcribed from the official definition's
facts (block structures, branch order, kernels, strides, padding) in the block vocabulary of
`tfattack.models.inception_v3`. Unlike v3, the whole trunk runs with slim's SAME default and the
heads end in fully connected layers (`Logits/Logits`, `AuxLogits/Aux_logits`).
"""

from __future__ import annotations

import tensorflow as tf

from tfattack import backward, edits
from tfattack.models import layers, registry
from tfattack.models.inception_v3 import (IMAGE_SIZE, Conv, Mixed, Pool, Split, check_input,
                                          inception_builder, run_branch, run_table)
from tfattack.models.registry import ModelSpec

SCOPE = "InceptionV4"

STEM = (
    Conv("Conv2d_1a_3x3", 32, 3, stride=2, padding="VALID"),
    Conv("Conv2d_2a_3x3", 32, 3, padding="VALID"),
    Conv("Conv2d_2b_3x3", 64, 3),
    Mixed("Mixed_3a", (
        (Pool("MaxPool_0a_3x3", "max", 3, stride=2, padding="VALID"),),
        (Conv("Conv2d_0a_3x3", 96, 3, stride=2, padding="VALID"),),
    )),
    Mixed("Mixed_4a", (
        (Conv("Conv2d_0a_1x1", 64, 1), Conv("Conv2d_1a_3x3", 96, 3, padding="VALID")),
        (Conv("Conv2d_0a_1x1", 64, 1), Conv("Conv2d_0b_1x7", 64, (1, 7)), Conv("Conv2d_0c_7x1", 64, (7, 1)),
         Conv("Conv2d_1a_3x3", 96, 3, padding="VALID")),
    )),
    Mixed("Mixed_5a", (
        (Conv("Conv2d_1a_3x3", 192, 3, stride=2, padding="VALID"),),
        (Pool("MaxPool_1a_3x3", "max", 3, stride=2, padding="VALID"),),
    )),
)


def _inception_a(name):  # 35x35x384
    return Mixed(name, (
        (Conv("Conv2d_0a_1x1", 96, 1),),
        (Conv("Conv2d_0a_1x1", 64, 1), Conv("Conv2d_0b_3x3", 96, 3)),
        (Conv("Conv2d_0a_1x1", 64, 1), Conv("Conv2d_0b_3x3", 96, 3), Conv("Conv2d_0c_3x3", 96, 3)),
        (Pool("AvgPool_0a_3x3", "avg", 3), Conv("Conv2d_0b_1x1", 96, 1)),
    ))


REDUCTION_A = Mixed("Mixed_6a", (  # 35x35x384 -> 17x17x1024
    (Conv("Conv2d_1a_3x3", 384, 3, stride=2, padding="VALID"),),
    (Conv("Conv2d_0a_1x1", 192, 1), Conv("Conv2d_0b_3x3", 224, 3),
     Conv("Conv2d_1a_3x3", 256, 3, stride=2, padding="VALID")),
    (Pool("MaxPool_1a_3x3", "max", 3, stride=2, padding="VALID"),),
))


def _inception_b(name):  # 17x17x1024
    return Mixed(name, (
        (Conv("Conv2d_0a_1x1", 384, 1),),
        (Conv("Conv2d_0a_1x1", 192, 1), Conv("Conv2d_0b_1x7", 224, (1, 7)), Conv("Conv2d_0c_7x1", 256, (7, 1))),
        (Conv("Conv2d_0a_1x1", 192, 1), Conv("Conv2d_0b_7x1", 192, (7, 1)), Conv("Conv2d_0c_1x7", 224, (1, 7)),
         Conv("Conv2d_0d_7x1", 224, (7, 1)), Conv("Conv2d_0e_1x7", 256, (1, 7))),
        (Pool("AvgPool_0a_3x3", "avg", 3), Conv("Conv2d_0b_1x1", 128, 1)),
    ))


REDUCTION_B = Mixed("Mixed_7a", (  # 17x17x1024 -> 8x8x1536
    (Conv("Conv2d_0a_1x1", 192, 1), Conv("Conv2d_1a_3x3", 192, 3, stride=2, padding="VALID")),
    (Conv("Conv2d_0a_1x1", 256, 1), Conv("Conv2d_0b_1x7", 256, (1, 7)), Conv("Conv2d_0c_7x1", 320, (7, 1)),
     Conv("Conv2d_1a_3x3", 320, 3, stride=2, padding="VALID")),
    (Pool("MaxPool_1a_3x3", "max", 3, stride=2, padding="VALID"),),
))


def _inception_c(name):  # 8x8x1536
    return Mixed(name, (
        (Conv("Conv2d_0a_1x1", 256, 1),),
        (Conv("Conv2d_0a_1x1", 384, 1),
         Split((Conv("Conv2d_0b_1x3", 256, (1, 3)), Conv("Conv2d_0c_3x1", 256, (3, 1))))),
        (Conv("Conv2d_0a_1x1", 384, 1), Conv("Conv2d_0b_3x1", 448, (3, 1)), Conv("Conv2d_0c_1x3", 512, (1, 3)),
         Split((Conv("Conv2d_0d_1x3", 256, (1, 3)), Conv("Conv2d_0e_3x1", 256, (3, 1))))),
        (Pool("AvgPool_0a_3x3", "avg", 3), Conv("Conv2d_0b_1x1", 256, 1)),
    ))


TRUNK = (
    STEM
    + tuple(_inception_a(f"Mixed_5{letter}") for letter in "bcde")
    + (REDUCTION_A,)
    + tuple(_inception_b(f"Mixed_6{letter}") for letter in "bcdefgh")
    + (REDUCTION_B,)
    + tuple(_inception_c(f"Mixed_7{letter}") for letter in "bcd")
)

# Auxiliary head on Mixed_6h; slim sizes Conv2d_2a's kernel to its 5x5 input (at 299).
AUX_HEAD = (
    Pool("AvgPool_1a_5x5", "avg", 5, stride=3, padding="VALID"),
    Conv("Conv2d_1b_1x1", 128, 1),
    Conv("Conv2d_2a", 768, 5, padding="VALID"),
)


def fully_connected(store, x, name: str, units: int):
    """slim.fully_connected without activation on a flattened input: weights [in, units] and biases."""
    x = tf.reshape(x, [-1, x.shape[1] * x.shape[2] * x.shape[3]]) if x.shape.rank == 4 else x
    weights = store.get(f"{name}/weights", [x.shape[-1], units], "he")
    biases = store.get(f"{name}/biases", [units], "zeros")
    return edits.layer_output(tf.nn.bias_add(tf.matmul(x, weights), biases))


def inception_v4(store, x, num_classes: int = 1001, aux_logits: bool = True):
    """The TF-slim Inception-v4 forward pass in inference mode: x is [N, 299, 299, 3] in [-1, 1].

    Returns (logits [N, num_classes], end_points) with slim's end-point names; dropout is the identity.
    """
    check_input(x, "inception_v4")
    end_points = backward.EndPoints()
    net = run_table(store, x, TRUNK, end_points, padding="SAME")
    if aux_logits:
        aux = run_branch(store, end_points["Mixed_6h"], AUX_HEAD, "AuxLogits/", padding="SAME")
        end_points["AuxLogits"] = fully_connected(store, aux, "AuxLogits/Aux_logits", num_classes)
    net = layers.avg_pool(net, 8, 1, "VALID")  # Logits/AvgPool_1a over the whole 8x8 grid
    end_points["global_pool"] = net
    net = tf.reshape(net, [-1, net.shape[-1]])
    end_points["PreLogitsFlatten"] = net
    logits = fully_connected(store, net, "Logits/Logits", num_classes)
    end_points["Logits"] = logits
    end_points["Predictions"] = tf.nn.softmax(logits)
    return logits, end_points


build = inception_builder("inception_v4", inception_v4, SCOPE)

registry.register_architecture("inception_v4", build)

FAMILY = "TF-slim Inception-v4"
SPECS = (
    ModelSpec(
        name="inception_v4", architecture="inception_v4", source="slim_checkpoint", image_size=IMAGE_SIZE,
        preprocessing="inception", num_classes=1001, checkpoint_scope=SCOPE, aux_logits=True,
        url="http://download.tensorflow.org/models/inception_v4_2016_09_09.tar.gz",
        archive_files=("inception_v4.ckpt",), default_location="inception_v4", licence="Apache-2.0",
        provenance="Google, TF-slim image classification model zoo (tensorflow/models research/slim); "
                   "TF1 V1 single-file checkpoint, scope InceptionV4",
        reference_top1=80.2, reference_note="ImageNet validation top-1, TF-slim model zoo table",
        paper="Szegedy, Ioffe, Vanhoucke, Alemi: Inception-v4, Inception-ResNet and the Impact of Residual "
              "Connections on Learning, AAAI 2017 (arXiv:1602.07261)"),
)

for _spec_record in SPECS:
    registry.register(_spec_record)
