"""Facebook's feature-denoising ResNets (Xie et al., CVPR 2019; the CAAD 2018 winner), reading their tensorpack
`.npz` files without tensorpack.

The networks are the release's `ResNet`, `ResNetDenoise` and `ResNeXtDenoiseAll` (facebookresearch/
ImageNet-Adversarial-Training), adversarially trained against targeted PGD at eps 16:
  - a ResNet-v1 trunk: `conv0` 7x7/2 + batch norm + ReLU, a 3x3/2 max pool, four groups of bottleneck blocks
    (`groupG/blockB`: `conv1` 1x1, `conv2` 3x3 with the block's stride (on the 3x3, as in "ImageNet in 1 hour"),
    `conv3` 1x1, each with batch norm, ReLU after the first two; a `convshortcut` 1x1 + batch norm where the width
    changes; ReLU after the sum), global average pooling and the `linear` classifier;
  - denoising blocks y = x + BN(conv1x1(nonlocal(x))): `ResNetDenoise` adds one after each group
    (`groupG_denoise`, Gaussian non-local means with 1x1 embeddings theta/phi to half the width:
    softmax(theta(x)^T phi(x) / sqrt(C/2)) applied to x); `ResNeXtDenoiseAll` is a ResNeXt-101 32x8d with one
    after every block (`groupG/blockB/non_local`, the dot-product version without embeddings: x x^T x / HW).
All convolutions use TensorFlow's SAME padding (the training graph was TF), with no biases; batch norm eps 1e-5.
Input: 224 px BGR, pixel * 2/255 - 1. Variables carry the npz's names (`group1/block3/conv2/W`,
`group0_denoise/embedding_theta/W`, `conv0/bn/mean/EMA`), in TF layout already.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Mapping, Tuple

import numpy as np
import tensorflow as tf

from tfattack import backward, edits
from tfattack.models import features, layers, loading, registry, torch_layers
from tfattack.models.registry import ModelSpec
from tfattack.names import first_few

BN_EPSILON = 1e-5
IMAGE_SIZE = 224
GROUP_WIDTHS = (64, 128, 256, 512)
# Keys a training run's npz may hold next to the model's variables.
NON_MODEL_KEYS = ("global_step", "learning_rate")


@dataclasses.dataclass(frozen=True)
class Variant:
    """Blocks per group; the 3x3 convolution's groups and per-group width at the first group (the release's
    `group` and `res2_bottleneck`: ResNet is 1 x 64, ResNeXt 32x8d is 32 x 8); where denoising blocks go
    ("" none, "group" after each group, "block" after every block)."""

    blocks: Tuple[int, int, int, int]
    groups: int = 1
    group_width: int = 64
    denoise: str = ""

    @property
    def width_factor(self) -> int:
        return self.group_width * self.groups // 64


VARIANTS = {
    "fd_resnet152": Variant((3, 8, 36, 3)),
    "fd_resnet152_denoise": Variant((3, 8, 36, 3), denoise="group"),
    "fd_resnext101_denoise_all": Variant((3, 4, 23, 3), groups=32, group_width=8, denoise="block"),
}


class TensorpackNpzError(ValueError):
    """A file that is not the tensorpack npz of this network (unreadable, or keys and shapes that do not fit)."""


def same_padding(x, kernel: int, stride: int):
    """TensorFlow's SAME padding made explicit (more after than before when the total is odd)."""
    pads = []
    for size in (x.shape[1], x.shape[2]):
        total = max((-(-size // stride) - 1) * stride + kernel - size, 0)
        pads.append([total // 2, total - total // 2])
    return tf.pad(x, [[0, 0], pads[0], pads[1], [0, 0]])


def batch_norm_scale_offset(store, name: str, channels: int):
    """tensorpack's BatchNorm in inference (gamma, beta and the EMA statistics) as (multiplier, offset)."""
    gamma = store.get(f"{name}/bn/gamma", [channels], "ones")
    beta = store.get(f"{name}/bn/beta", [channels], "zeros")
    mean = store.get(f"{name}/bn/mean/EMA", [channels], "zeros")
    variance = store.get(f"{name}/bn/variance/EMA", [channels], "ones")
    return layers.batch_norm_multiplier_offset(gamma, beta, mean, variance, BN_EPSILON)


def conv(store, x, name: str, filters: int, kernel: int, stride: int = 1, groups: int = 1, *, bn: bool = True):
    """tensorpack Conv2D (SAME, no bias; `split` groups) followed by its batch norm, folded into it."""
    weights = store.get(f"{name}/W", [kernel, kernel, x.shape[-1] // groups, filters], "he")
    offset = None
    if bn:
        multiplier, offset = batch_norm_scale_offset(store, name, filters)
        weights = layers.fold_into_kernel(weights, multiplier)
    if groups == 1:
        y = tf.nn.conv2d(x, weights, stride, "SAME")
    else:
        y = torch_layers.grouped_conv2d(same_padding(x, kernel, stride), weights, stride, groups)
    return edits.layer_output(y if offset is None else tf.nn.bias_add(y, offset))


def non_local(store, x, name: str, embed: bool, softmax: bool):
    """The denoising operation on x [N, H, W, C]: each position becomes a weighted mean of all positions' features.
    Gaussian (softmax) weights on embedded features, or the dot-product weights x_i . x_j / HW."""
    height, width, channels = x.shape[1], x.shape[2], x.shape[3]
    positions = height * width
    values = tf.reshape(x, [-1, positions, channels])
    if embed:
        theta = tf.reshape(conv(store, x, f"{name}/embedding_theta", channels // 2, 1, bn=False),
                           [-1, positions, channels // 2])
        phi = tf.reshape(conv(store, x, f"{name}/embedding_phi", channels // 2, 1, bn=False),
                         [-1, positions, channels // 2])
    else:
        theta = phi = values
    if softmax:
        scale = tf.math.rsqrt(tf.cast(theta.shape[-1], x.dtype))
        weights = tf.nn.softmax(tf.matmul(theta, phi, transpose_b=True) * scale, axis=-1)   # [N, HW, HW]
        mixed = tf.matmul(weights, values)
    elif channels > positions:  # the cheaper association of (theta phi^T) values
        mixed = tf.matmul(tf.matmul(theta, phi, transpose_b=True), values) / tf.cast(positions, x.dtype)
    else:
        mixed = tf.matmul(theta, tf.matmul(phi, values, transpose_a=True)) / tf.cast(positions, x.dtype)
    return tf.reshape(mixed, [-1, height, width, channels])


def denoising_block(store, x, name: str, embed: bool, softmax: bool):
    """x + BN(conv1x1(non_local(x))), the residual form that lets the block start as the identity."""
    return backward.residual_add(x, conv(store, non_local(store, x, name, embed, softmax), f"{name}/conv",
                                         x.shape[-1], 1))


def bottleneck(store, x, name: str, variant: Variant, planes: int, stride: int):
    width = planes * variant.width_factor
    out_channels = planes * 4
    projected = x.shape[-1] != out_channels

    def branch(inputs):
        y = backward.relu(conv(store, inputs, f"{name}/conv1", width, 1))
        y = backward.relu(conv(store, y, f"{name}/conv2", width, 3, stride, variant.groups))
        return conv(store, y, f"{name}/conv3", out_channels, 1)

    def shortcut(inputs):
        return conv(store, inputs, f"{name}/convshortcut", out_channels, 1, stride) if projected else inputs

    return backward.relu(backward.residual_unit(x, shortcut, branch, projected=projected))


def feature_denoising_resnet(store, x, variant: Variant, num_classes: int = 1000):
    """The forward pass on [N, 224, 224, 3] BGR in [-1, 1]; returns (logits, end points)."""
    end_points = backward.EndPoints()
    net = edits.end_point(end_points, "conv0", backward.relu(conv(store, x, "conv0", 64, 7, 2)))
    net = edits.end_point(end_points, "pool0", backward.max_pool(net, 3, 2, "SAME"))
    for group, (blocks, planes) in enumerate(zip(variant.blocks, GROUP_WIDTHS)):
        for index in range(blocks):
            name = f"group{group}/block{index}"
            net = bottleneck(store, net, name, variant, planes, 2 if group > 0 and index == 0 else 1)
            if variant.denoise == "block":
                net = denoising_block(store, net, f"{name}/non_local", embed=False, softmax=False)
            net = edits.end_point(end_points, name, net)
        if variant.denoise == "group":
            net = denoising_block(store, net, f"group{group}_denoise", embed=True, softmax=True)
        net = edits.end_point(end_points, f"group{group}", net)
    net = edits.end_point(end_points, "gap", layers.global_avg_pool(net, keepdims=False))
    weights = store.get("linear/W", [net.shape[-1], num_classes], "he")
    logits = edits.layer_output(tf.matmul(net, weights) + store.get("linear/b", [num_classes], "zeros"))
    end_points["Logits"] = logits
    return logits, end_points


class FeatureDenoisingNetwork(layers.SlimNetwork):
    """A feature-denoising ResNet whose variables carry the tensorpack npz names."""

    def __init__(self, architecture: str, num_classes: int = 1000, seed: int = 0):
        forward = functools.partial(feature_denoising_resnet, variant=VARIANTS[architecture], num_classes=num_classes)
        super().__init__(forward, architecture, IMAGE_SIZE, seed=seed)

    def load_state_dict(self, arrays: Mapping[str, np.ndarray], source: str, model_name: str) -> int:
        """Assigns every variable from the npz's arrays; every key and shape is checked first."""
        present = {key[:-2] if key.endswith(":0") else key: value for key, value in arrays.items()}
        present = {k: v for k, v in present.items() if k not in NON_MODEL_KEYS and not k.endswith("/Momentum")}
        expected = self.store.by_name
        missing = [k for k in expected if k not in present]
        unexpected = [k for k in present if k not in expected]
        if missing or unexpected:
            parts = ([f"lacks {len(missing)} key(s): {first_few(missing, 5)}"] if missing else []) + \
                    ([f"has {len(unexpected)} unexpected key(s): {first_few(unexpected, 5)}"]
                     if unexpected else [])
            raise TensorpackNpzError(f"{source} does not fit model {model_name!r} ({self.scope}): {'; '.join(parts)} "
                                     f"(the npz of another feature-denoising network?)")
        wrong = [f"{k} {tuple(present[k].shape)} != {tuple(var.shape)}" for k, var in expected.items()
                 if tuple(present[k].shape) != tuple(var.shape)]
        if wrong:
            raise TensorpackNpzError(f"{source} has mis-shaped tensor(s) for model {model_name!r}: "
                                     f"{first_few(wrong, 3)}")
        for name, var in expected.items():
            var.assign(np.asarray(present[name], np.float32))
        return len(expected)


def read_npz(path: str) -> dict:
    """name -> array of a NumPy .npz file (no pickled objects)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no tensorpack npz file at {path}")
    try:
        with np.load(path, allow_pickle=False) as arrays:
            return {name: arrays[name] for name in arrays.files}
    except (ValueError, OSError, EOFError) as err:  # not a zip, a truncated zip, or a pickled object
        raise TensorpackNpzError(f"{path} is not a readable .npz file ({err})") from None


def load_tensorpack_npz(spec: ModelSpec, path: str):
    """Loader of source "tensorpack_npz": the feature-denoising release's weight files."""
    return torch_layers.load_state_dict_file(spec, path, read_npz, TensorpackNpzError, ".npz")


loading.register_loader("tensorpack_npz", load_tensorpack_npz)

build = torch_layers.fixed_size_builder(FeatureDenoisingNetwork, IMAGE_SIZE)

for _architecture in VARIANTS:
    registry.register_architecture(_architecture, build)
    features.register_aliases(_architecture, {"early": "group0", "mid": "group1", "late": "group2"})


# --- Weight records ---------------------------------------------------------------------------------

FAMILY = "Feature denoising (Facebook, adversarially trained, CC BY-NC)"
_RELEASES = "https://github.com/facebookresearch/ImageNet-Adversarial-Training/releases/download/"
_PAPER = ("Xie, Wu, van der Maaten, Yuille, He: Feature Denoising for Improving Adversarial Robustness, CVPR 2019 "
          "(arXiv:1812.03411)")

# name -> (release file, the release's --arch flag, clean top-1 = 100 - the model zoo's clean error)
_FILES = {
    "fd_resnet152": ("v0/R152.npz", "ResNet -d 152", 62.3),
    "fd_resnet152_denoise": ("v0.1/R152-Denoise.npz", "ResNetDenoise -d 152", 65.3),
    "fd_resnext101_denoise_all": ("v0.2/X101-DenoiseAll.npz", "ResNeXtDenoiseAll -d 101", 68.4),
}

SPECS = tuple(
    ModelSpec(
        name=name, architecture=name, source="tensorpack_npz", image_size=IMAGE_SIZE,
        preprocessing="bgr_inception", num_classes=1000, url=_RELEASES + release,
        default_location=f"feature_denoising/{release.split('/')[1]}", licence="CC-BY-NC-4.0",
        provenance=f"facebookresearch/ImageNet-Adversarial-Training release {release} (`--arch {arch}`), "
                   f"tensorpack npz; adversarially trained against targeted PGD at eps 16/255; CC BY-NC 4.0 "
                   f"(non-commercial use only)",
        reference_top1=top1,
        reference_note="ImageNet validation, 100 - the clean error rate in the release's model zoo table",
        paper=_PAPER)
    for name, (release, arch, top1) in _FILES.items())

for _spec_record in SPECS:
    registry.register(_spec_record)
