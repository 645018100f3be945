"""torchvision's Inception-v3 (`Inception3`) in TF2, and timm's `InceptionV3` built on it, reading their weight
files without torch.

The network is torchvision's `Inception3` in eval mode at 299 px. Every convolution is a `BasicConv2d`: a
convolution without bias, batch norm with epsilon 0.001, ReLU (keys `<name>.conv.weight`, `<name>.bn.*`). The stem
is Conv2d_1a_3x3 (3x3/2), Conv2d_2a_3x3, Conv2d_2b_3x3 (padding 1), a 3x3/2 max pool, Conv2d_3b_1x1,
Conv2d_4a_3x3 and a 3x3/2 max pool; then Mixed_5b..5d (InceptionA), Mixed_6a (InceptionB), Mixed_6b..6e
(InceptionC), Mixed_7a (InceptionD), Mixed_7b, 7c (InceptionE); global average pooling, dropout (the identity in
eval mode) and the linear `fc`. Each block concatenates its branches along the channels in torchvision's order.

Why this is not our TF-slim port (tfattack.models.inception_v3), though the graph is Google's Inception-v3 too:
  - the average pools inside the blocks (3x3/1, padding 1) are PyTorch's `avg_pool2d` with its default
    count_include_pad=True: a border window's zeros count, so it is divided by 9 everywhere; TF-slim's SAME
    average pool divides by the real inputs only. Every border value of every block's pooled branch differs;
  - batch norm has a learned scale (gamma) here, none in slim's checkpoints;
  - torchvision's IMAGENET1K_V1 weights were trained on [-1, 1] inputs but torchvision feeds every model
    ImageNet mean/std-normalised ones: with those weights `inception_v3` is built with transform_input=True and
    re-maps its input per channel to (pixel - 0.5) / 0.5 inside forward. The `torchvision_inception_v3`
    architecture does the same (preprocessing "torchvision"); timm's InceptionV3 has no such step and its
    weights declare mean = std = 0.5 (architecture `timm_inception_v3`, preprocessing "inception").
(The convolutions' explicit symmetric padding equals slim's SAME at stride 1; its stride-2 ones are VALID in
both.) timm's ports of TF checkpoints (tf_adv_in1k: Google's adv_inception_v3) pool as PyTorch does, not as the
TF graph they came from: `timm_inception_v3` reproduces timm's model, border values and all; our slim port runs
Google's own adv_inception_v3 checkpoint as TF did.

The auxiliary classifier: torchvision's file holds `AuxLogits.*` (its weights were trained with it), but eval
mode never runs it. `torchvision_inception_v3` creates its variables, in their place after Mixed_6e, without
computing it: the file's every key and shape is then checked and loaded like any other (a file of another class
count is refused by the aux head's shape too), and the forward is torchvision's eval forward. timm's
InceptionV3 has no aux head unless asked for, and its ports of TF checkpoints have none in their files.

End points carry the reference's module names: `Conv2d_1a_3x3` .. `Conv2d_4a_3x3`, the stem's max pools
(torchvision `maxpool1`, `maxpool2`; timm `Pool1`, `Pool2`), `Mixed_5b` .. `Mixed_7c`, the global pool
(torchvision `avgpool`, timm `global_pool`, flattened).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Tuple, Union

import tensorflow as tf

from tfattack import backward, edits
from tfattack.models import features, layers, registry, torch_layers
from tfattack.models.inception_v3 import _KURAKIN, _PAPER
from tfattack.models.registry import ModelSpec
from tfattack.models.torch_layers import TORCHVISION_URL, timm_record

BN_EPSILON = 0.001
IMAGE_SIZE = 299
# torchvision's ImageNet normalisation, which transform_input undoes before mapping to [-1, 1].
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

Pair = Union[int, Tuple[int, int]]


@dataclasses.dataclass(frozen=True)
class Variant:
    """`transform_input`: re-map ImageNet-normalised input to [-1, 1] first; `aux_head`: the file holds the
    auxiliary classifier's variables; the reference's names of the stem's two max pools and of the global pool."""

    transform_input: bool
    aux_head: bool
    stem_pools: Tuple[str, str]
    global_pool: str


VARIANTS = {
    # torchvision.models.inception_v3(weights=Inception_V3_Weights.IMAGENET1K_V1)
    "torchvision_inception_v3": Variant(True, True, ("maxpool1", "maxpool2"), "avgpool"),
    # timm.create_model("inception_v3.<tag>") for its tags without aux logits (tf_in1k, tf_adv_in1k, gluon_in1k)
    "timm_inception_v3": Variant(False, False, ("Pool1", "Pool2"), "global_pool"),
}


def _pair(value: Pair) -> Tuple[int, int]:
    return (value, value) if isinstance(value, int) else tuple(value)


def basic_conv(store, x, name: str, filters: int, kernel: Pair, stride: int = 1, padding: Pair = 0):
    """BasicConv2d: convolution (no bias, symmetric zero padding), batch norm (eps 0.001), ReLU."""
    (k_h, k_w), (p_h, p_w) = _pair(kernel), _pair(padding)
    weights = store.get(f"{name}.conv.weight", [k_h, k_w, x.shape[-1], filters], "he")
    if p_h or p_w:
        x = tf.pad(x, [[0, 0], [p_h, p_h], [p_w, p_w], [0, 0]])
    multiplier, offset = torch_layers.batch_norm_scale_offset(store, f"{name}.bn", filters, BN_EPSILON)
    y = tf.nn.bias_add(tf.nn.conv2d(x, layers.fold_into_kernel(weights, multiplier), stride, "VALID"), offset)
    return backward.relu(edits.layer_output(y))


def avg_pool_3x3_counting_padding(x):
    """F.avg_pool2d(x, 3, stride=1, padding=1) with count_include_pad=True: every window is divided by 9."""
    return tf.nn.avg_pool2d(tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]]), 3, 1, "VALID")


def max_pool_3x3_stride_2(x):
    return layers.max_pool(x, 3, 2, "VALID")


def inception_a(store, x, name: str, pool_features: int):
    """1x1 | 1x1 -> 5x5 | 1x1 -> 3x3 -> 3x3 | 3x3 average pool -> 1x1; 224 + pool_features channels."""
    conv = functools.partial(basic_conv, store)
    branch1x1 = conv(x, f"{name}.branch1x1", 64, 1)
    branch5x5 = conv(conv(x, f"{name}.branch5x5_1", 48, 1), f"{name}.branch5x5_2", 64, 5, padding=2)
    double = conv(x, f"{name}.branch3x3dbl_1", 64, 1)
    double = conv(double, f"{name}.branch3x3dbl_2", 96, 3, padding=1)
    double = conv(double, f"{name}.branch3x3dbl_3", 96, 3, padding=1)
    pooled = conv(avg_pool_3x3_counting_padding(x), f"{name}.branch_pool", pool_features, 1)
    return tf.concat([branch1x1, branch5x5, double, pooled], axis=-1)


def inception_b(store, x, name: str):
    """35 -> 17 px: 3x3/2 | 1x1 -> 3x3 -> 3x3/2 | 3x3/2 max pool."""
    conv = functools.partial(basic_conv, store)
    branch3x3 = conv(x, f"{name}.branch3x3", 384, 3, stride=2)
    double = conv(x, f"{name}.branch3x3dbl_1", 64, 1)
    double = conv(double, f"{name}.branch3x3dbl_2", 96, 3, padding=1)
    double = conv(double, f"{name}.branch3x3dbl_3", 96, 3, stride=2)
    return tf.concat([branch3x3, double, max_pool_3x3_stride_2(x)], axis=-1)


def inception_c(store, x, name: str, channels_7x7: int):
    """Factorised 7x7s: 1x1 | 1x1 -> 1x7 -> 7x1 | 1x1 -> 7x1 -> 1x7 -> 7x1 -> 1x7 | average pool -> 1x1."""
    conv = functools.partial(basic_conv, store)
    c7 = channels_7x7
    branch1x1 = conv(x, f"{name}.branch1x1", 192, 1)
    branch7x7 = conv(x, f"{name}.branch7x7_1", c7, 1)
    branch7x7 = conv(branch7x7, f"{name}.branch7x7_2", c7, (1, 7), padding=(0, 3))
    branch7x7 = conv(branch7x7, f"{name}.branch7x7_3", 192, (7, 1), padding=(3, 0))
    double = conv(x, f"{name}.branch7x7dbl_1", c7, 1)
    for index, (filters, kernel, padding) in enumerate([(c7, (7, 1), (3, 0)), (c7, (1, 7), (0, 3)),
                                                         (c7, (7, 1), (3, 0)), (192, (1, 7), (0, 3))], start=2):
        double = conv(double, f"{name}.branch7x7dbl_{index}", filters, kernel, padding=padding)
    pooled = conv(avg_pool_3x3_counting_padding(x), f"{name}.branch_pool", 192, 1)
    return tf.concat([branch1x1, branch7x7, double, pooled], axis=-1)


def inception_d(store, x, name: str):
    """17 -> 8 px: 1x1 -> 3x3/2 | 1x1 -> 1x7 -> 7x1 -> 3x3/2 | 3x3/2 max pool."""
    conv = functools.partial(basic_conv, store)
    branch3x3 = conv(conv(x, f"{name}.branch3x3_1", 192, 1), f"{name}.branch3x3_2", 320, 3, stride=2)
    branch7x7x3 = conv(x, f"{name}.branch7x7x3_1", 192, 1)
    branch7x7x3 = conv(branch7x7x3, f"{name}.branch7x7x3_2", 192, (1, 7), padding=(0, 3))
    branch7x7x3 = conv(branch7x7x3, f"{name}.branch7x7x3_3", 192, (7, 1), padding=(3, 0))
    branch7x7x3 = conv(branch7x7x3, f"{name}.branch7x7x3_4", 192, 3, stride=2)
    return tf.concat([branch3x3, branch7x7x3, max_pool_3x3_stride_2(x)], axis=-1)


def _split_1x3_3x1(store, x, name: str, first: str, second: str):
    """A 1x3 and a 3x1 convolution side by side on one input, concatenated (384 + 384 channels)."""
    return tf.concat([basic_conv(store, x, f"{name}.{first}", 384, (1, 3), padding=(0, 1)),
                      basic_conv(store, x, f"{name}.{second}", 384, (3, 1), padding=(1, 0))], axis=-1)


def inception_e(store, x, name: str):
    """8 px, 2048 channels: 1x1 | 1x1 -> (1x3, 3x1) | 1x1 -> 3x3 -> (1x3, 3x1) | average pool -> 1x1."""
    conv = functools.partial(basic_conv, store)
    branch1x1 = conv(x, f"{name}.branch1x1", 320, 1)
    branch3x3 = _split_1x3_3x1(store, conv(x, f"{name}.branch3x3_1", 384, 1), name, "branch3x3_2a", "branch3x3_2b")
    double = conv(conv(x, f"{name}.branch3x3dbl_1", 448, 1), f"{name}.branch3x3dbl_2", 384, 3, padding=1)
    double = _split_1x3_3x1(store, double, name, "branch3x3dbl_3a", "branch3x3dbl_3b")
    pooled = conv(avg_pool_3x3_counting_padding(x), f"{name}.branch_pool", 192, 1)
    return tf.concat([branch1x1, branch3x3, double, pooled], axis=-1)


# (module name, block, its extra argument: InceptionA's pool_features, InceptionC's channels_7x7)
MIXED = (
    ("Mixed_5b", inception_a, 32), ("Mixed_5c", inception_a, 64), ("Mixed_5d", inception_a, 64),
    ("Mixed_6a", inception_b, None),
    ("Mixed_6b", inception_c, 128), ("Mixed_6c", inception_c, 160), ("Mixed_6d", inception_c, 160),
    ("Mixed_6e", inception_c, 192),
    ("Mixed_7a", inception_d, None), ("Mixed_7b", inception_e, None), ("Mixed_7c", inception_e, None),
)
AUX_INPUT_CHANNELS = 768  # Mixed_6e's


def declare_aux_head(store, num_classes: int):
    """The variables of torchvision's InceptionAux (1x1 conv to 128, 5x5 conv to 768, fc), which eval mode does
    not run: created so that the file's keys and shapes are checked and loaded, never read by the forward."""
    for name, channels_in, filters, kernel in (("AuxLogits.conv0", AUX_INPUT_CHANNELS, 128, 1),
                                               ("AuxLogits.conv1", 128, 768, 5)):
        store.get(f"{name}.conv.weight", [kernel, kernel, channels_in, filters], "he")
        for suffix, init in (("weight", "ones"), ("bias", "zeros"), ("running_mean", "zeros"),
                             ("running_var", "ones")):
            store.get(f"{name}.bn.{suffix}", [filters], init)
    store.get("AuxLogits.fc.weight", [768, num_classes], "he")
    store.get("AuxLogits.fc.bias", [num_classes], "zeros")


def transform_input(x):
    """torchvision's transform_input: ImageNet mean/std-normalised pixels to (pixel - 0.5) / 0.5 per channel."""
    std = tf.constant(IMAGENET_STD, x.dtype)
    mean = tf.constant(IMAGENET_MEAN, x.dtype)
    return x * (std / 0.5) + (mean - 0.5) / 0.5


def torchvision_inception_v3(store, x, variant: Variant, num_classes: int = 1000):
    """The forward pass on [N, 299, 299, 3] preprocessed RGB; returns (logits, end points)."""
    end_points = backward.EndPoints()
    net = transform_input(x) if variant.transform_input else x
    for name, filters, kernel, stride, padding in (("Conv2d_1a_3x3", 32, 3, 2, 0), ("Conv2d_2a_3x3", 32, 3, 1, 0),
                                                    ("Conv2d_2b_3x3", 64, 3, 1, 1)):
        net = edits.end_point(end_points, name, basic_conv(store, net, name, filters, kernel, stride, padding))
    net = edits.end_point(end_points, variant.stem_pools[0], max_pool_3x3_stride_2(net))
    for name, filters, kernel in (("Conv2d_3b_1x1", 80, 1), ("Conv2d_4a_3x3", 192, 3)):
        net = edits.end_point(end_points, name, basic_conv(store, net, name, filters, kernel))
    net = edits.end_point(end_points, variant.stem_pools[1], max_pool_3x3_stride_2(net))
    for name, block, argument in MIXED:
        net = block(store, net, name) if argument is None else block(store, net, name, argument)
        net = edits.end_point(end_points, name, net)
        # The store itself hands out its variables without an op; a casting view (bfloat16, float16) would cast
        # them for nothing, and they exist from the build (which runs on the store itself).
        if name == "Mixed_6e" and variant.aux_head and isinstance(store, layers.VariableStore):
            declare_aux_head(store, num_classes)
    net = edits.end_point(end_points, variant.global_pool, layers.global_avg_pool(net, keepdims=False))
    logits = torch_layers.linear(store, net, "fc", num_classes)
    end_points["Logits"] = logits
    return logits, end_points


class TorchvisionInceptionV3(torch_layers.TorchStateDictNetwork):
    """torchvision's Inception3 (or timm's InceptionV3) whose variables are named by its state-dict keys."""

    family = "Inception-v3 variant"

    def __init__(self, architecture: str, num_classes: int = 1000, seed: int = 0):
        forward = functools.partial(torchvision_inception_v3, variant=VARIANTS[architecture], num_classes=num_classes)
        super().__init__(forward, architecture, IMAGE_SIZE, seed=seed)


build = torch_layers.fixed_size_builder(TorchvisionInceptionV3, IMAGE_SIZE)

for _architecture in VARIANTS:
    registry.register_architecture(_architecture, build)
    # The slim port's: the first 35 px block, the first and last 17 px blocks.
    features.register_aliases(_architecture, {"early": "Mixed_5b", "mid": "Mixed_6b", "late": "Mixed_6e"})


# --- Weight records ---------------------------------------------------------------------------------

_TORCHVISION_FILE = "inception_v3_google-0cc3c7bd.pth"

FAMILY = "torchvision and timm Inception-v3 (PyTorch pooling)"
SPECS = (
    ModelSpec(
        name="tv_inception_v3", architecture="torchvision_inception_v3", source="torch_pickle",
        image_size=IMAGE_SIZE, preprocessing="torchvision", num_classes=1000, url=TORCHVISION_URL + _TORCHVISION_FILE,
        sha256=_TORCHVISION_FILE.rsplit("-", 1)[1].split(".")[0], default_location=f"torchvision/{_TORCHVISION_FILE}",
        licence="BSD-3-Clause",
        provenance="torchvision's ImageNet weights (Inception_V3_Weights.IMAGENET1K_V1, ported from Google's TF "
                   "model; transform_input=True), BSD-3-Clause; file from download.pytorch.org (torch.save)",
        reference_top1=77.294,
        reference_note="ImageNet-1k validation top-1 as published in torchvision's model table "
                       "(Inception_V3_Weights.IMAGENET1K_V1; resize 342, crop 299)",
        paper=_PAPER),
    # timm's port of Google's adversarially trained Inception-v3 (adv_inception_v3, Kurakin et al.): 1000 classes
    # (the TF checkpoint's background class dropped), no aux head, [-1, 1] inputs.
    timm_record("timm_inception_v3_tf_adv_in1k", "timm_inception_v3", "timm/inception_v3.tf_adv_in1k", 77.598,
                image_size=IMAGE_SIZE, preprocessing="inception", licence="apache-2.0",
                crop="299 px, crop 0.875, bicubic", paper=f"{_KURAKIN}; {_PAPER}"),
)

for _spec_record in SPECS:
    registry.register(_spec_record)
