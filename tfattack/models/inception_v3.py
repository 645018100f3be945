"""Inception-v3 (Szegedy et al., 2016) as in TF-slim, with its official checkpoints.

The net is written as tables of blocks in slim's own names. Each entry of a table is a layer or a
mixed block; a mixed block is a list of branches, branch i is the variable scope `Branch_i` and the
branches are concatenated in that order (the order is the checkpoint's contract, not a choice).
Every convolution is slim's conv2d + inference batch norm (no gamma, eps 0.001) + ReLU.

The block vocabulary (`Conv`, `Pool`, `Split`, `Mixed`, `run_table`) is shared with Inception-v4.

The weight records below cover Google's ImageNet checkpoint and the three adversarially trained
copies (Kurakin et al., 2017; Tramer et al., 2018): same graph, same variable names, only the
top-level scope may differ in renamed copies (the loader detects it).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Optional, Tuple, Union

import tensorflow as tf

from tfattack import backward, edits
from tfattack.models import layers, registry
from tfattack.models.registry import ModelSpec

SCOPE = "InceptionV3"
IMAGE_SIZE = 299
# slim's inception arg scope: batch norm with epsilon 0.001 and no learned scale (gamma).
BN_EPSILON = 0.001

Kernel = Union[int, Tuple[int, int]]


# --- Block vocabulary (also used by tfattack.models.inception_v4) ---------------------------------

@dataclasses.dataclass(frozen=True)
class Conv:
    """slim.conv2d + batch norm + ReLU. `padding=None` takes the enclosing table's default."""

    name: str
    filters: int
    kernel: Kernel
    stride: int = 1
    padding: Optional[str] = None


@dataclasses.dataclass(frozen=True)
class Pool:
    """slim.max_pool2d / avg_pool2d (`kind` "max" or "avg"); TF's SAME average excludes the padding."""

    name: str
    kind: str
    kernel: int
    stride: int = 1
    padding: Optional[str] = None


@dataclasses.dataclass(frozen=True)
class Split:
    """Convolutions applied side by side to one input and concatenated (v3's 1x3 / 3x1 pairs)."""

    convs: Tuple[Conv, ...]


@dataclasses.dataclass(frozen=True)
class Mixed:
    """A mixed block: `branches[i]` is the layer sequence of scope `<name>/Branch_i`."""

    name: str
    branches: Tuple[tuple, ...]


def _run_layer(store, x, layer, scope: str, padding: str):
    if isinstance(layer, Conv):
        return layers.conv2d(store, x, scope + layer.name, layer.filters, layer.kernel, layer.stride,
                             padding=layer.padding or padding, bn_epsilon=BN_EPSILON)
    if isinstance(layer, Pool):
        pool = {"max": layers.max_pool, "avg": layers.avg_pool}[layer.kind]
        return pool(x, layer.kernel, layer.stride, layer.padding or padding)
    if isinstance(layer, Split):
        return tf.concat([_run_layer(store, x, conv, scope, padding) for conv in layer.convs], axis=3)
    raise TypeError(f"not a layer of an Inception table: {layer!r}")


def run_branch(store, x, branch, scope: str, padding: str):
    """Runs a sequence of layers whose variables live under `scope` (ending in '/')."""
    for layer in branch:
        x = _run_layer(store, x, layer, scope, padding)
    return x


def run_table(store, x, table, end_points: dict, padding: str):
    """Runs the entries of `table` in order; each Conv/Pool/Mixed output becomes an end point.

    Variables are created in table order (branch 0 first), which is slim's creation order.
    """
    for entry in table:
        if isinstance(entry, Mixed):
            x = tf.concat([run_branch(store, x, branch, f"{entry.name}/Branch_{i}/", padding)
                           for i, branch in enumerate(entry.branches)], axis=3)
        else:
            x = _run_layer(store, x, entry, "", padding)
        x = edits.end_point(end_points, entry.name, x)
    return x


def check_input(x, model: str, size: int = IMAGE_SIZE):
    """The heads' kernels (and their variable names) are fixed by the 299 input; refuse other sizes."""
    height, width = x.shape[1], x.shape[2]
    if (height is not None and height != size) or (width is not None and width != size):
        raise ValueError(f"{model} takes {size}x{size} inputs, got {height}x{width} "
                         f"(tfattack.models.load(...) resizes for you)")


# --- Inception-v3 ----------------------------------------------------------------------------------

# The stem runs with slim's VALID default (only Conv2d_2b_3x3 pads).
STEM = (
    Conv("Conv2d_1a_3x3", 32, 3, stride=2),
    Conv("Conv2d_2a_3x3", 32, 3),
    Conv("Conv2d_2b_3x3", 64, 3, padding="SAME"),
    Pool("MaxPool_3a_3x3", "max", 3, stride=2),
    Conv("Conv2d_3b_1x1", 80, 1),
    Conv("Conv2d_4a_3x3", 192, 3),
    Pool("MaxPool_5a_3x3", "max", 3, stride=2),
)


def _block_35x35(name, pool_filters, branch_1_names=("Conv2d_0a_1x1", "Conv2d_0b_5x5")):
    # Mixed_5c's 5x5 branch carries other names in the official graph (kept: they are the contract).
    return Mixed(name, (
        (Conv("Conv2d_0a_1x1", 64, 1),),
        (Conv(branch_1_names[0], 48, 1), Conv(branch_1_names[1], 64, 5)),
        (Conv("Conv2d_0a_1x1", 64, 1), Conv("Conv2d_0b_3x3", 96, 3), Conv("Conv2d_0c_3x3", 96, 3)),
        (Pool("AvgPool_0a_3x3", "avg", 3), Conv("Conv2d_0b_1x1", pool_filters, 1)),
    ))


def _block_17x17(name, width):
    return Mixed(name, (
        (Conv("Conv2d_0a_1x1", 192, 1),),
        (Conv("Conv2d_0a_1x1", width, 1), Conv("Conv2d_0b_1x7", width, (1, 7)),
         Conv("Conv2d_0c_7x1", 192, (7, 1))),
        (Conv("Conv2d_0a_1x1", width, 1), Conv("Conv2d_0b_7x1", width, (7, 1)),
         Conv("Conv2d_0c_1x7", width, (1, 7)), Conv("Conv2d_0d_7x1", width, (7, 1)),
         Conv("Conv2d_0e_1x7", 192, (1, 7))),
        (Pool("AvgPool_0a_3x3", "avg", 3), Conv("Conv2d_0b_1x1", 192, 1)),
    ))


def _block_8x8(name, branch_1_3x1_name):
    return Mixed(name, (
        (Conv("Conv2d_0a_1x1", 320, 1),),
        (Conv("Conv2d_0a_1x1", 384, 1),
         Split((Conv("Conv2d_0b_1x3", 384, (1, 3)), Conv(branch_1_3x1_name, 384, (3, 1))))),
        (Conv("Conv2d_0a_1x1", 448, 1), Conv("Conv2d_0b_3x3", 384, 3),
         Split((Conv("Conv2d_0c_1x3", 384, (1, 3)), Conv("Conv2d_0d_3x1", 384, (3, 1))))),
        (Pool("AvgPool_0a_3x3", "avg", 3), Conv("Conv2d_0b_1x1", 192, 1)),
    ))


# Mixed blocks run with slim's SAME default; the grid reductions pad VALID explicitly.
MIXED = (
    _block_35x35("Mixed_5b", 32),
    _block_35x35("Mixed_5c", 64, branch_1_names=("Conv2d_0b_1x1", "Conv_1_0c_5x5")),
    _block_35x35("Mixed_5d", 64),
    Mixed("Mixed_6a", (  # the official names say "1x1" for these 3x3 convolutions; kept as in the checkpoint
        (Conv("Conv2d_1a_1x1", 384, 3, stride=2, padding="VALID"),),
        (Conv("Conv2d_0a_1x1", 64, 1), Conv("Conv2d_0b_3x3", 96, 3),
         Conv("Conv2d_1a_1x1", 96, 3, stride=2, padding="VALID")),
        (Pool("MaxPool_1a_3x3", "max", 3, stride=2, padding="VALID"),),
    )),
    _block_17x17("Mixed_6b", 128),
    _block_17x17("Mixed_6c", 160),
    _block_17x17("Mixed_6d", 160),
    _block_17x17("Mixed_6e", 192),
    Mixed("Mixed_7a", (
        (Conv("Conv2d_0a_1x1", 192, 1), Conv("Conv2d_1a_3x3", 320, 3, stride=2, padding="VALID")),
        (Conv("Conv2d_0a_1x1", 192, 1), Conv("Conv2d_0b_1x7", 192, (1, 7)),
         Conv("Conv2d_0c_7x1", 192, (7, 1)), Conv("Conv2d_1a_3x3", 192, 3, stride=2, padding="VALID")),
        (Pool("MaxPool_1a_3x3", "max", 3, stride=2, padding="VALID"),),
    )),
    _block_8x8("Mixed_7b", "Conv2d_0b_3x1"),
    _block_8x8("Mixed_7c", "Conv2d_0c_3x1"),
)

# Auxiliary head on Mixed_6e (17x17x768 -> 5x5 -> 1x1).
AUX_HEAD = (
    Pool("AvgPool_1a_5x5", "avg", 5, stride=3, padding="VALID"),
    Conv("Conv2d_1b_1x1", 128, 1),
    Conv("Conv2d_2a_5x5", 768, 5, padding="VALID"),
)


def classifier_conv(store, x, name: str, num_classes: int):
    """A 1x1 convolution with biases and no activation, squeezed to [N, classes] (slim's logit layers)."""
    y = layers.conv2d(store, x, name, num_classes, 1, batch_norm=False, activation=None)
    return tf.squeeze(y, axis=[1, 2], name="SpatialSqueeze")


def inception_v3(store, x, num_classes: int = 1001, aux_logits: bool = True):
    """The TF-slim Inception-v3 forward pass in inference mode: x is [N, 299, 299, 3] in [-1, 1].

    Returns (logits [N, num_classes], end_points) with slim's end-point names; dropout is the identity.
    """
    check_input(x, "inception_v3")
    end_points = backward.EndPoints()
    net = run_table(store, x, STEM, end_points, padding="VALID")
    net = run_table(store, net, MIXED, end_points, padding="SAME")
    if aux_logits:
        aux = run_branch(store, end_points["Mixed_6e"], AUX_HEAD, "AuxLogits/", padding="SAME")
        end_points["AuxLogits"] = classifier_conv(store, aux, "AuxLogits/Conv2d_2b_1x1", num_classes)
    net = layers.avg_pool(net, 8, 1, "VALID")  # Logits/AvgPool_1a_8x8
    end_points["PreLogits"] = net
    logits = classifier_conv(store, net, "Logits/Conv2d_1c_1x1", num_classes)
    end_points["Logits"] = logits
    end_points["Predictions"] = tf.nn.softmax(logits)
    return logits, end_points


def inception_builder(architecture: str, forward, scope: str):
    """`build(spec, seed=0)` for a 299-input Inception forward function with an optional aux head."""

    def build(spec: ModelSpec, seed: int = 0) -> layers.SlimNetwork:
        if spec.image_size != IMAGE_SIZE:
            raise ValueError(f"model {spec.name!r}: {architecture} is defined for {IMAGE_SIZE} inputs, "
                             f"the spec says {spec.image_size}")
        bound = functools.partial(forward, num_classes=spec.num_classes, aux_logits=spec.aux_logits)
        return layers.SlimNetwork(bound, scope, spec.image_size, seed=seed)

    build.__doc__ = f"The {architecture} network of a registry spec (random weights until restored)."
    return build


build = inception_builder("inception_v3", inception_v3, SCOPE)

registry.register_architecture("inception_v3", build)


# --- Weight records ---------------------------------------------------------------------------------

_PAPER = ("Szegedy, Vanhoucke, Ioffe, Shlens, Wojna: Rethinking the Inception Architecture for Computer "
          "Vision, CVPR 2016 (arXiv:1512.00567)")
_KURAKIN = ("Kurakin, Goodfellow, Bengio: Adversarial Machine Learning at Scale, ICLR 2017 "
            "(arXiv:1611.01236)")
_TRAMER = ("Tramer, Kurakin, Papernot, Goodfellow, Boneh, McDaniel: Ensemble Adversarial Training: "
           "Attacks and Defenses, ICLR 2018 (arXiv:1705.07204)")
_ADV_PROVENANCE = ("Google, tensorflow/models research/adv_imagenet_models (Apache-2.0); TF1 V2 checkpoint "
                   "of the TF-slim Inception-v3 graph, scope InceptionV3; the archive also holds a .meta graph")
_TRAMER_NOTE = "ImageNet validation (the paper's 'test set'), clean top-1 = 100 - error in Tramer et al. 2018, Table 4"


def _spec(name, url, archive_files, **fields) -> ModelSpec:
    return ModelSpec(
        name=name, architecture="inception_v3", source="slim_checkpoint", image_size=IMAGE_SIZE,
        preprocessing="inception", num_classes=1001, checkpoint_scope=SCOPE, aux_logits=True, url=url,
        archive_files=tuple(archive_files), default_location=name, licence="Apache-2.0", **fields)


def _adversarial_spec(name, top1, paper) -> ModelSpec:
    prefix = f"{name}.ckpt"
    return _spec(name, f"http://download.tensorflow.org/models/{name}_2017_08_18.tar.gz",
                 (f"{prefix}.data-00000-of-00001", f"{prefix}.index"),
                 provenance=_ADV_PROVENANCE, reference_top1=top1, reference_note=_TRAMER_NOTE, paper=paper)


FAMILY = "TF-slim Inception-v3 (official, adversarially trained)"
SPECS = (
    _spec("inception_v3", "http://download.tensorflow.org/models/inception_v3_2016_08_28.tar.gz",
          ("inception_v3.ckpt",),
          provenance="Google, TF-slim image classification model zoo (tensorflow/models research/slim); "
                     "TF1 V1 single-file checkpoint, scope InceptionV3",
          reference_top1=78.0, reference_note="ImageNet validation top-1, TF-slim model zoo table",
          paper=_PAPER),
    _adversarial_spec("adv_inception_v3", 78.0, f"{_KURAKIN}; {_PAPER}"),
    _adversarial_spec("ens3_adv_inception_v3", 76.4, f"{_TRAMER}; {_PAPER}"),
    _adversarial_spec("ens4_adv_inception_v3", 75.8, f"{_TRAMER}; {_PAPER}"),
)

for _spec_record in SPECS:
    registry.register(_spec_record)
